"""The training loop behind ``speechpeft finetune`` and ``pretrain``: plain, explicit, seeded and resumable.

One update = ``grad_accum`` micro-batches -> gradient clipping -> AdamW step -> the adapters'
post-step hook (S2-LoRA's proximal L1) -> scheduler step. What is trained is a ``Tuning``, what
is minimised an ``Objective``. Dev is measured every ``eval_every`` updates (and at update 0);
for a supervised objective, the best adapter so far is kept in ``<run>/adapter``.

Under torchrun every process runs this loop on its shard of each batch (``train.ddp``); rank 0
alone writes files and prints, and every process holds the same trained state throughout.
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
from ..distributed import SharedError, World, device_for, session
from ..errors import SpeechPeftError
from ..eval.normalise import has_opencc
from ..eval.report import write_curves, write_rank_heatmap, write_report
from ..fs import atomic_write_text, remove_leftovers
from ..models import load_host
from .checkpoint import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .ddp import MicroBatchLoss, check_in_step, check_world, own_rng
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
    world: World = field(default_factory=World)  # this process among torchrun's; one process by default


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
    with session(None if recipe.model.device == "auto" else recipe.model.device) as world:
        try:
            check_world(recipe, world)
            return _finetune(recipe, resume, overwrite, progress and world.main, tuning, test, started, world)
        except BaseException:
            if world.main and fresh and not (run_dir / CHECKPOINT).exists():  # failed before any progress
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _finetune(recipe: Recipe, resume: bool, overwrite: bool, progress: bool, tuning: Tuning | None, test: bool,
              started: float, world: World) -> dict[str, Any]:  # fmt: skip
    run = _prepare(recipe, resume, overwrite, progress, tuning, world)
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
    run.world.barrier()  # rank 0 has written the best adapter
    run.tuning.load(run.host.model, run.dir / "adapter")
    adapted = None
    if test:
        adapted = _evaluate(run, run.test, "adapted test")
        run.log.append({"event": "test", "step": run.counters["best_step"], **adapted})
    return _finish(run, zero, adapted, trainable, time.time() - started)


def _prepare(recipe: Recipe, resume: bool, overwrite: bool, progress: bool, tuning: Tuning | None, world: World) -> Run:
    run_dir = Path(recipe.output_dir) / recipe.name
    check_run_folder(run_dir, ("adapter",), resume, overwrite, world)
    if not recipe.data.test:
        raise SpeechPeftError("data.test is required: finetune reports test error before and after")
    splits = {key: read_manifest(getattr(recipe.data, key)) for key in ("train", "dev", "test")}
    for utts in splits.values():
        check_audio_headers(utts, max_seconds=recipe.model.window_seconds)
    if recipe.train.dev_max_utterances:
        splits["dev"] = splits["dev"][: recipe.train.dev_max_utterances]
    _seed(recipe.train.seed)  # the same on every process: the same starting weights everywhere
    device = device_for(world, None if recipe.model.device == "auto" else recipe.model.device)
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
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run_dir, [CHECKPOINT, "adapter", "metrics.jsonl", "recipe.yaml", "report.md", "curves.png"])
        if overwrite and not resume:
            for name in (CHECKPOINT, "report.md", "curves.png", "ranks.png"):
                (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    log = open_run_log(run_dir, recipe, resume, world)
    base = sum(p.numel() for p in host.model.parameters())
    objective = Supervised(recipe.eval.metric)
    return Run(recipe, run_dir, host, splits["train"], splits["dev"], splits["test"], log, base, tuning, objective,
               progress, world=world)  # fmt: skip


def check_run_folder(run_dir: Path, outputs: tuple[str, ...], resume: bool, overwrite: bool, world: World) -> None:
    """A run folder that holds a run needs --resume or --overwrite; --resume needs a checkpoint.

    Raises:
        SharedError: (every process alike) either is missing.
    """
    started = any((run_dir / f).exists() for f in (CHECKPOINT, *outputs, "report.md"))
    if started and not (resume or overwrite):
        raise SharedError(f"'{run_dir}' already holds a run; pass --resume to continue it or --overwrite")
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise SharedError(f"cannot resume: no checkpoint at '{run_dir / CHECKPOINT}'")
    world.barrier()  # every process has looked before rank 0 writes anything


def open_run_log(run_dir: Path, recipe: Recipe, resume: bool, world: World) -> MetricsLog:
    """The run's metrics log (rank 0 writes it, every process keeps the rows) and ``recipe.yaml``.

    Raises:
        SpeechPeftError: under torchrun, a process that cannot see rank 0's run folder.
    """
    if world.main:
        log = MetricsLog(run_dir / "metrics.jsonl", fresh=not resume)
        atomic_write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    world.barrier()
    if not world.main:
        if not (run_dir / "recipe.yaml").is_file():
            raise SpeechPeftError(
                f"rank {world.rank} cannot see '{run_dir}', which rank 0 made: output_dir must be on a filesystem "
                "every machine shares"
            )
        log = MetricsLog(run_dir / "metrics.jsonl", fresh=not resume, write=False)
    world.barrier()  # no process appends before every process has read the log
    return log


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
        tensors, run.counters, rng = load_checkpoint(run.dir / CHECKPOINT, optimizer, scheduler)
        set_rng_state(own_rng(rng, run.world, str(run.dir / CHECKPOINT)))
        run.tuning.load_state(model, tensors, str(run.dir / CHECKPOINT))
        run.log.truncate_after(run.counters["step"])
    else:
        _dev_eval(run)  # update 0: the unadapted model in the training window
        if run.world.enabled:  # dropout and masks: a stream of its own on every process
            _seed(run.recipe.train.seed + 1_000_003 * run.world.rank)
    forward = MicroBatchLoss(run)  # under torchrun: DDP, which broadcasts rank 0's start to all
    bar = tqdm(total=cfg.max_steps, initial=run.counters["step"], desc="train", unit="update", disable=not run.progress)
    while run.counters["step"] < cfg.max_steps:
        tick = time.time()
        loss, figures = _update(run, optimizer, params, forward)
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
            tensors = run.tuning.state(model)
            check_in_step(run.world, tensors)
            rng = run.world.gather(rng_state())
            if run.world.main:
                save_checkpoint(run.dir / CHECKPOINT, tensors, optimizer, scheduler, run.counters, rng)
    bar.close()


def _update(run: Run, optimizer, params, forward: MicroBatchLoss) -> tuple[float, dict[str, float]]:
    cfg = run.recipe.train
    model = run.host.model
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total, figures = 0.0, {}
    for micro in range(cfg.grad_accum):
        batch = _next_batch(run)  # the global batch: the same on every process
        mine = run.world.shard(batch)
        utts = [run.train[i] for i in (mine or batch[:1])]  # a process left without any joins with weight 0
        with forward.syncing(last=micro == cfg.grad_accum - 1):
            with _autocast(run):
                out = forward(utts, run.counters["step"])
                value, more = _combine(run, out, 0.0 if not mine else float(out.units))
                loss = run.tuning.loss(model, value) / cfg.grad_accum
            loss.backward()
        if run.world.enabled:  # the whole batch's loss, plus the regulariser the tuning added
            regulariser = float(loss.detach()) * cfg.grad_accum - float(value.detach())
            total += (more.pop("loss") + regulariser) / cfg.grad_accum
        else:
            total += loss.item()
        for key, v in more.items():  # the micro-batches' mean
            figures[key] = figures.get(key, 0.0) + v / cfg.grad_accum
    run.tuning.before_step(model, run.counters["step"] + 1)  # e.g. Master-ASR's T, every 5th update only
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    model.eval()
    return total, figures


def _combine(run: Run, out, units: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss this process back-propagates, and the micro-batch's figures.

    In one process: the objective's loss and figures as they are. Under torchrun: this shard's
    mean loss x (its units / the batch's units) x processes, so that DDP's mean over processes is
    the whole batch's mean; the figures (and "loss", for the log) are the whole batch's.
    """
    if not run.world.enabled:
        return out.value, dict(out.figures)
    keys = sorted(out.figures)
    sums = run.world.sum([units, float(out.value.detach()) * units, *(out.figures[k] * units for k in keys)])
    whole = sums[0]
    figures = {k: v / whole for k, v in zip(keys, sums[2:], strict=True)}
    figures["loss"] = sums[1] / whole
    return out.value * (units * run.world.size / whole), figures


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
        if run.objective.select_best and run.world.main:
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
        "batch": batch_description(r, run.world),
        "train_seconds": run.counters["train_seconds"],
        "total_seconds": total_seconds,
        "machine": machine_description(run),
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
    if run.world.main:
        write_curves(run.log.rows(), run.dir / "curves.png", ev.metric, title)
        if info["rank_table"]:
            write_rank_heatmap(info["rank_table"], run.dir / "ranks.png", f"{title}: ranks in use per matrix")
        write_report(run.dir / "report.md", info)
    return info


def machine_description(run: Run) -> str:
    text = f"{platform.machine()}, {torch.get_num_threads()} threads, {run.host.device.type}"
    return text + (f", {run.world.size} processes (torchrun)" if run.world.enabled else "")


def batch_description(recipe: Recipe, world: World) -> str:
    """The batch as the report states it: global, and per process under torchrun."""
    b, accum = recipe.train.batch_size, recipe.train.grad_accum
    text = f"{b} utterances" + (f" x {accum} accumulated" if accum > 1 else "")
    if world.enabled:
        text += f" (global: {b // world.size} per process x {world.size} processes)"
    return text
