"""The training loop behind ``speechpeft finetune`` and ``pretrain``: plain, explicit, seeded and resumable.

One update = ``grad_accum`` micro-batches -> gradient clipping -> AdamW step -> the adapters'
post-step hook (S2-LoRA's proximal L1) -> scheduler step. What is trained is a ``Tuning``, what
is minimised an ``Objective``. Dev is measured every ``eval_every`` updates (and at update 0);
for a supervised objective, the best adapter so far is kept in ``<run>/adapter``.
"""

from __future__ import annotations

import contextlib
import math
import platform
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import Utterance, bucketed_batches, read_manifest
from ..errors import SpeechPeftError
from ..eval.normalise import has_opencc
from ..eval.report import write_curves, write_rank_heatmap, write_report
from ..fs import atomic_write_text, remove_leftovers
from ..models import load_host
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .objective import Objective, Supervised, decode_and_score
from .recipe import Recipe, recipe_to_yaml
from .runlog import MetricsLog, check_audio_headers
from .tuning import AdapterTuning, Tuning


@dataclass
class Run:
    """Everything one training run holds while it goes."""

    recipe: Recipe
    dir: Path
    host: Any  # an ASRHost for finetune; the pretraining host for pretrain
    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]
    log: MetricsLog
    base_parameters: int  # the full model's, counted before a short window slices the position table
    tuning: Tuning
    objective: Objective
    progress: bool = True
    counters: dict[str, Any] = field(default_factory=dict)


def finetune(
    recipe: Recipe,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    tuning: Tuning | None = None,
    test: bool = True,
) -> dict[str, Any]:
    """Train the recipe's adapter, keep the best on dev, and report test error before and after.

    Writes ``<output_dir>/<name>/``: ``adapter/``, ``metrics.jsonl``, ``curves.png``,
    ``report.md``, ``recipe.yaml`` and ``checkpoint.pt`` (and ``ranks.png`` for kinds that
    allocate ranks, such as S2-LoRA). Returns the report's facts. ``tuning`` replaces the recipe's
    adapter by another strategy (see ``train.tuning``); ``test=False`` never touches the test
    split, for choosing settings on dev.

    Raises:
        SpeechPeftError: bad data (file:line), an existing run without --resume/--overwrite,
            a model that cannot be loaded, or a checkpoint that does not fit.
    """
    started = time.time()
    run_dir = Path(recipe.output_dir) / recipe.name
    fresh = not run_dir.exists()
    try:
        return _finetune(recipe, resume, overwrite, progress, tuning, test, started)
    except BaseException:
        if fresh and not (run_dir / CHECKPOINT).exists():  # failed before any progress worth keeping
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _finetune(recipe: Recipe, resume: bool, overwrite: bool, progress: bool, tuning: Tuning | None, test: bool,
              started: float) -> dict[str, Any]:  # fmt: skip
    run = _prepare(recipe, resume, overwrite, progress, tuning)
    zero = run.log.first("zero_shot")
    if zero is None and test:
        zero = _evaluate(run, run.test, f"zero-shot test ({run.host.window_seconds:g} s window)")
        run.log.append({"event": "zero_shot", **zero})
    run.host.set_window(recipe.model.window_seconds)
    run.tuning.attach(run.host.model)
    trainable = run.tuning.summary(run.host.model)["trainable"]  # before a pruned best copy is loaded
    if run.log.first("setup") is None:
        run.log.append({"event": "setup", "tuning": run.tuning.label, "trainable": trainable})
    train_loop(run, resume)
    run.tuning.load(run.host.model, run.dir / "adapter")
    adapted = None
    if test:
        adapted = _evaluate(run, run.test, "adapted test")
        run.log.append({"event": "test", "step": run.counters["best_step"], **adapted})
    return _finish(run, zero, adapted, trainable, time.time() - started)


def _prepare(recipe: Recipe, resume: bool, overwrite: bool, progress: bool, tuning: Tuning | None) -> Run:
    run_dir = Path(recipe.output_dir) / recipe.name
    started = any((run_dir / f).exists() for f in (CHECKPOINT, "adapter", "report.md"))
    if started and not (resume or overwrite):
        raise SpeechPeftError(f"'{run_dir}' already holds a run; pass --resume to continue it or --overwrite")
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise SpeechPeftError(f"cannot resume: no checkpoint at '{run_dir / CHECKPOINT}'")
    if not recipe.data.test:
        raise SpeechPeftError("data.test is required: finetune reports test error before and after")
    splits = {key: read_manifest(getattr(recipe.data, key)) for key in ("train", "dev", "test")}
    for utts in splits.values():
        check_audio_headers(utts, max_seconds=recipe.model.window_seconds)
    if recipe.train.dev_max_utterances:
        splits["dev"] = splits["dev"][: recipe.train.dev_max_utterances]
    _seed(recipe.train.seed)
    device = None if recipe.model.device == "auto" else recipe.model.device
    host = load_host(recipe.model.name, device=device)
    if recipe.model.window_seconds > host.max_window_seconds:
        raise SpeechPeftError(
            f"model.window_seconds={recipe.model.window_seconds:g} exceeds the model's {host.max_window_seconds:g} s"
        )
    _check_durations(splits, recipe.model.window_seconds, host.min_seconds)
    host.prepare_training([u.text for u in splits["train"]])  # e.g. a CTC vocabulary from the transcripts
    if tuning is None:  # the recipe's adapter, with what the host made new for this run (a CTC head)
        tuning = AdapterTuning(
            recipe.adapter.config(), host.new_modules, host.save_companions, recipe.train.new_module_lr_scale
        )
    for u in splits["train"]:  # a transcript the model cannot learn fails now, not at update 200
        try:
            host.check_text(u.text, recipe.eval.language or u.language)
        except SpeechPeftError as e:
            raise SpeechPeftError(f"{u.where}: {e}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(run_dir, [CHECKPOINT, "adapter", "metrics.jsonl", "recipe.yaml", "report.md", "curves.png"])
    if overwrite and not resume:
        for name in (CHECKPOINT, "report.md", "curves.png", "ranks.png"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    log = MetricsLog(run_dir / "metrics.jsonl", fresh=not resume)
    atomic_write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    base = sum(p.numel() for p in host.model.parameters())
    objective = Supervised(recipe.eval.metric)
    return Run(recipe, run_dir, host, splits["train"], splits["dev"], splits["test"], log, base, tuning, objective,
               progress)  # fmt: skip


def _check_durations(splits: dict[str, list[Utterance]], window: float, shortest: float) -> None:
    for utts in splits.values():
        longest = max(utts, key=lambda u: u.duration)
        if longest.duration > window:
            raise SpeechPeftError(
                f"{longest.where}: {longest.duration:g} s is longer than model.window_seconds={window:g}"
            )
        short = min(utts, key=lambda u: u.duration)
        if short.duration < shortest:
            raise SpeechPeftError(
                f"{short.where}: {short.duration:g} s is shorter than the {shortest:g} s the model's input layer needs"
            )


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(recipe: Recipe):
    warmup, total = recipe.train.warmup_steps, recipe.train.max_steps

    def factor(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _autocast(run: Run):
    precision = run.recipe.train.precision
    if precision == "auto":
        precision = "bf16" if run.host.device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(run.host.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_loop(run: Run, resume: bool) -> None:
    """Run (or resume) the updates of ``run``: checkpoints, dev evaluations, the metrics log."""
    cfg = run.recipe.train
    model = run.host.model
    groups = run.tuning.param_groups(model, cfg.lr)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    factor = _schedule(run.recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # scales every group alike
    run.counters = {"step": 0, "epoch": 0, "batch": 0, "best": math.inf, "best_step": 0, "train_seconds": 0.0}
    if resume:
        tensors, run.counters = load_checkpoint(run.dir / CHECKPOINT, optimizer, scheduler)
        run.tuning.load_state(model, tensors, str(run.dir / CHECKPOINT))
        run.log.truncate_after(run.counters["step"])
    else:
        _dev_eval(run)  # update 0: the unadapted model in the training window
    bar = tqdm(total=cfg.max_steps, initial=run.counters["step"], desc="train", unit="update", disable=not run.progress)
    while run.counters["step"] < cfg.max_steps:
        tick = time.time()
        loss, figures = _update(run, optimizer, params)
        lr = cfg.lr * factor(run.counters["step"])  # this update's lr, before any group's multiplier
        run.tuning.after_step(model, lr, run.counters["step"] + 1, cfg.max_steps)
        scheduler.step()
        run.counters["step"] += 1
        run.counters["train_seconds"] += time.time() - tick
        step = run.counters["step"]
        seconds = run.counters["train_seconds"]
        run.log.append({"event": "train", "step": step, "loss": loss, "lr": lr, "seconds": seconds, **figures})
        bar.set_postfix(loss=f"{loss:.3f}", best=f"{run.counters['best']:.3f}")
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            _dev_eval(run)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint(run.dir / CHECKPOINT, run.tuning.state(model), optimizer, scheduler, run.counters)
    bar.close()


def _update(run: Run, optimizer, params) -> tuple[float, dict[str, float]]:
    cfg = run.recipe.train
    model = run.host.model
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total, figures = 0.0, {}
    for _ in range(cfg.grad_accum):
        utts = [run.train[i] for i in _next_batch(run)]
        with _autocast(run):
            loss, more = run.objective.loss(run, utts, run.counters["step"])
            loss = run.tuning.loss(model, loss) / cfg.grad_accum
        loss.backward()
        total += loss.item()
        for key, value in more.items():  # the micro-batches' mean
            figures[key] = figures.get(key, 0.0) + value / cfg.grad_accum
    run.tuning.before_step(model, run.counters["step"] + 1)  # e.g. Master-ASR's T, every 5th update only
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    model.eval()
    return total, figures


def _next_batch(run: Run) -> list[int]:
    """The next batch of the seeded epoch order; (epoch, batch) are checkpointed counters."""
    c, cfg = run.counters, run.recipe.train
    batches = bucketed_batches(run.train, cfg.batch_size, cfg.seed, c["epoch"])
    if c["batch"] >= len(batches):
        c["epoch"], c["batch"] = c["epoch"] + 1, 0
        batches = bucketed_batches(run.train, cfg.batch_size, cfg.seed, c["epoch"])
    c["batch"] += 1
    return batches[c["batch"] - 1]


def _evaluate(run: Run, utts: list[Utterance], desc: str) -> dict[str, Any]:
    return decode_and_score(run, utts, desc)


def _dev_eval(run: Run) -> None:
    step = run.counters["step"]
    result = run.objective.evaluate(run, run.dev, f"dev @ {step}")
    score = result[run.objective.score]
    sparsity = run.tuning.summary(run.host.model).get("sparsity") if step else None
    refused = run.tuning.not_selectable(run.host.model)  # e.g. not yet as sparse as the recipe asks
    if refused and step == run.recipe.train.max_steps and math.isinf(run.counters["best"]):
        run.counters["fallback"] = f"no dev evaluation met the recipe ({refused}); the last state is kept"
        refused = None
    run.log.append({"event": "dev", "step": step, **result, "sparsity": sparsity, "ineligible": refused})
    if refused is None and score < run.counters["best"]:
        run.counters["best"], run.counters["best_step"] = score, step
        if run.objective.select_best:
            run.tuning.save(run.host.model, run.dir / "adapter", {"window_seconds": run.host.window_seconds})


def _finish(
    run: Run, zero: dict[str, Any] | None, adapted: dict[str, Any] | None, trainable: int, total_seconds: float
) -> dict[str, Any]:
    r, ev = run.recipe, run.recipe.eval
    summary = run.tuning.summary(run.host.model)  # of the best-on-dev state, restored
    norm = ev.normaliser + (" (+ opencc t2s)" if ev.normaliser == "zh_chars" and has_opencc() else "")
    synthetic = "SYNTHETIC speech. " if r.data.synthetic else ""
    devs = [row for row in run.log.rows() if row["event"] == "dev"]
    best_dev = next(row for row in devs if row["step"] == run.counters["best_step"])
    facts = dict(summary.get("facts", {}))
    refused = [row for row in devs if row.get("ineligible")]
    if run.counters.get("fallback"):
        facts["best-on-dev selection"] = run.counters["fallback"]
    elif refused:
        facts["best-on-dev selection"] = (
            f"{len(refused)} of {len(devs)} dev evaluations were not eligible (at update {refused[-1]['step']}: "
            f"{refused[-1]['ineligible']}); the best of the others is kept"
        )
    info = {
        "name": r.name,
        "model": r.model.name,
        "adapter_kind": run.tuning.label,
        "metric": ev.metric,
        "zero_shot": zero,
        "adapted": adapted,
        "best_dev": best_dev,
        "dev_utterances": len(run.dev),
        "zero_shot_window": zero["window_seconds"] if zero else None,
        "window_seconds": run.host.window_seconds,
        "best_step": run.counters["best_step"],
        "test_utterances": len(run.test),
        "data_description": f"{synthetic}{r.data.description or r.data.test}",
        "trainable": trainable,
        "base_parameters": run.base_parameters,
        "stored": summary.get("stored"),
        "steps": r.train.max_steps,
        "batch": f"{r.train.batch_size} utterances"
        + (f" x {r.train.grad_accum} accumulated" if r.train.grad_accum > 1 else ""),
        "train_seconds": run.counters["train_seconds"],
        "total_seconds": total_seconds,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {run.host.device.type}",
        "decoding": f"beam {ev.beam}, language {ev.language or 'per utterance'}, "
        f"at most 16 + {ev.max_tokens_per_second:g} tokens/s",
        "normaliser": norm,
        "sparsity": summary.get("sparsity"),
        "facts": facts,
        "rank_table": summary.get("rank_table"),
        "extra_metrics": [{"label": "WER", "zero": zero["wer"], "adapted": adapted["wer"]}]
        if zero and adapted and "wer" in zero
        else [],
    }
    title = f"{r.name}: {r.model.name} + {run.tuning.label}" + (" (synthetic data)" if r.data.synthetic else "")
    write_curves(run.log.rows(), run.dir / "curves.png", ev.metric, title)
    if info["rank_table"]:
        write_rank_heatmap(info["rank_table"], run.dir / "ranks.png", f"{title}: ranks in use per matrix")
    write_report(run.dir / "report.md", info)
    return info
