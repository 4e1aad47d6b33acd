"""The training loop behind ``speechpeft finetune``: plain, explicit, seeded and resumable.

One update = ``grad_accum`` micro-batches -> gradient clipping -> AdamW step -> the adapters'
post-step hook (S2-LoRA's proximal L1) -> scheduler step. Dev error is measured every
``eval_every`` updates (and at update 0); the best adapter so far is kept in ``<run>/adapter``.
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

from ..adapters import (
    after_optimizer_step,
    assert_adapter_mode,
    load_adapter,
    read_adapter,
    save_adapter,
)
from ..adapters.s2lora import s2lora_sparsity
from ..data import Utterance, bucketed_batches, load_audio, read_manifest
from ..errors import SpeechPeftError
from ..eval.asr import score_utterances, transcribe_utterances
from ..eval.normalise import has_opencc, make_normaliser
from ..eval.report import write_curves, write_report
from ..fs import atomic_write_text
from ..models.whisper import WhisperHost, load_whisper
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .recipe import Recipe, recipe_to_yaml
from .runlog import MetricsLog, check_audio_headers


@dataclass
class Run:
    """Everything one training run holds while it goes."""

    recipe: Recipe
    dir: Path
    host: WhisperHost
    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]
    log: MetricsLog
    base_parameters: int  # the full model's, counted before a short window slices the position table
    progress: bool = True
    counters: dict[str, Any] = field(default_factory=dict)


def finetune(recipe: Recipe, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the recipe's adapter, keep the best on dev, and report test error before and after.

    Writes ``<output_dir>/<name>/``: ``adapter/``, ``metrics.jsonl``, ``curves.png``,
    ``report.md``, ``recipe.yaml`` and ``checkpoint.pt``. Returns the report's facts.

    Raises:
        SpeechPeftError: bad data (file:line), an existing run without --resume/--overwrite,
            a model that cannot be loaded, or a checkpoint that does not fit.
    """
    started = time.time()
    run = _prepare(recipe, resume, overwrite, progress)
    zero = run.log.first("zero_shot")
    if zero is None:
        zero = _evaluate(run, run.test, f"zero-shot test ({run.host.window_seconds:g} s window)")
        run.log.append({"event": "zero_shot", **zero})
    run.host.set_window(recipe.model.window_seconds)
    run.host.inject(recipe.adapter.config())
    assert_adapter_mode(run.host.model)
    _train(run, resume)
    _restore_best(run)
    adapted = _evaluate(run, run.test, "adapted test")
    run.log.append({"event": "test", "step": run.counters["best_step"], **adapted})
    return _finish(run, zero, adapted, time.time() - started)


def _prepare(recipe: Recipe, resume: bool, overwrite: bool, progress: bool) -> Run:
    run_dir = Path(recipe.output_dir) / recipe.name
    started = any((run_dir / f).exists() for f in (CHECKPOINT, "adapter", "report.md"))
    if started and not (resume or overwrite):
        raise SpeechPeftError(f"'{run_dir}' already holds a run; pass --resume to continue it or --overwrite")
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise SpeechPeftError(f"cannot resume: no checkpoint at '{run_dir / CHECKPOINT}'")
    splits = {key: read_manifest(getattr(recipe.data, key)) for key in ("train", "dev", "test")}
    for utts in splits.values():
        check_audio_headers(utts)
    if recipe.train.dev_max_utterances:
        splits["dev"] = splits["dev"][: recipe.train.dev_max_utterances]
    _seed(recipe.train.seed)
    device = None if recipe.model.device == "auto" else recipe.model.device
    host = load_whisper(recipe.model.name, device=device)
    if recipe.model.window_seconds > host.window_seconds:
        raise SpeechPeftError(
            f"model.window_seconds={recipe.model.window_seconds:g} exceeds the model's {host.window_seconds:g} s"
        )
    _check_durations(splits, recipe.model.window_seconds)
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        for name in (CHECKPOINT, "report.md", "curves.png"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    log = MetricsLog(run_dir / "metrics.jsonl", fresh=not resume)
    atomic_write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    base = sum(p.numel() for p in host.model.parameters())
    return Run(recipe, run_dir, host, splits["train"], splits["dev"], splits["test"], log, base, progress)


def _check_durations(splits: dict[str, list[Utterance]], window: float) -> None:
    for utts in splits.values():
        longest = max(utts, key=lambda u: u.duration)
        if longest.duration > window:
            raise SpeechPeftError(
                f"{longest.where}: {longest.duration:g} s is longer than model.window_seconds={window:g}"
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


def _train(run: Run, resume: bool) -> None:
    cfg = run.recipe.train
    model = run.host.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(run.recipe))
    run.counters = {"step": 0, "epoch": 0, "batch": 0, "best": math.inf, "best_step": 0, "train_seconds": 0.0}
    if resume:
        run.counters = load_checkpoint(run.dir / CHECKPOINT, model, optimizer, scheduler)
        run.log.truncate_after(run.counters["step"])
    else:
        _dev_eval(run)  # update 0: the unadapted model in the training window
    bar = tqdm(total=cfg.max_steps, initial=run.counters["step"], desc="train", unit="update", disable=not run.progress)
    while run.counters["step"] < cfg.max_steps:
        tick = time.time()
        loss = _update(run, optimizer, params)
        lr = optimizer.param_groups[0]["lr"]
        after_optimizer_step(model, lr)
        scheduler.step()
        run.counters["step"] += 1
        run.counters["train_seconds"] += time.time() - tick
        step = run.counters["step"]
        run.log.append(
            {"event": "train", "step": step, "loss": loss, "lr": lr, "seconds": run.counters["train_seconds"]}
        )
        bar.set_postfix(loss=f"{loss:.3f}", best=f"{run.counters['best']:.3f}")
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            _dev_eval(run)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint(run.dir / CHECKPOINT, model, optimizer, scheduler, run.counters)
    bar.close()


def _update(run: Run, optimizer, params) -> float:
    cfg = run.recipe.train
    model = run.host.model
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(cfg.grad_accum):
        utts = [run.train[i] for i in _next_batch(run)]
        rate = run.host.processor.feature_extractor.sampling_rate
        arrays = [load_audio(u.audio, rate, u.where, max_seconds=run.host.window_seconds) for u in utts]
        batch = run.host.batch(arrays, [u.text for u in utts], run.recipe.eval.language)
        with _autocast(run):
            loss = run.host.loss(batch) / cfg.grad_accum
        loss.backward()
        total += loss.item()
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    model.eval()
    return total


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
    ev = run.recipe.eval
    tokenizer = run.host.processor.tokenizer
    normalise = make_normaliser(ev.normaliser, getattr(tokenizer, "english_spelling_normalizer", None))
    tick = time.time()
    hyps = transcribe_utterances(
        run.host, utts, ev.language, ev.beam, ev.batch_size, ev.max_tokens_per_second, desc, run.progress
    )
    result = score_utterances(utts, hyps, ev.metric, normalise).as_dict()
    out = {ev.metric: result["rate"], **result, "seconds": round(time.time() - tick, 1)}
    out["window_seconds"] = run.host.window_seconds
    if ev.metric == "cer" and ev.normaliser != "zh_chars":
        out["wer"] = score_utterances(utts, hyps, "wer", normalise).rate
    return out


def _dev_eval(run: Run) -> None:
    step = run.counters["step"]
    result = _evaluate(run, run.dev, f"dev @ {step}")
    metric = result[run.recipe.eval.metric]
    sparsity = s2lora_sparsity(run.host.model)["zero_fraction"] if run.recipe.adapter.kind == "s2lora" else None
    run.log.append({"event": "dev", "step": step, **result, "sparsity": sparsity})
    if metric < run.counters["best"]:
        run.counters["best"], run.counters["best_step"] = metric, step
        save_adapter(run.host.model, run.dir / "adapter", prune=True, extra={"window_seconds": run.host.window_seconds})


def _restore_best(run: Run) -> None:
    load_adapter(run.host.model, run.dir / "adapter")


def _finish(run: Run, zero: dict[str, Any], adapted: dict[str, Any], total_seconds: float) -> dict[str, Any]:
    r, ev = run.recipe, run.recipe.eval
    params = read_adapter(run.dir / "adapter").record["parameters"]  # counted before pruning
    norm = ev.normaliser + (" (+ opencc t2s)" if ev.normaliser == "zh_chars" and has_opencc() else "")
    synthetic = "SYNTHETIC speech. " if r.data.synthetic else ""
    info = {
        "name": r.name,
        "model": r.model.name,
        "adapter_kind": r.adapter.kind,
        "metric": ev.metric,
        "zero_shot": zero,
        "adapted": adapted,
        "zero_shot_window": zero["window_seconds"],
        "window_seconds": run.host.window_seconds,
        "best_step": run.counters["best_step"],
        "test_utterances": len(run.test),
        "data_description": f"{synthetic}{r.data.description or r.data.test}",
        "trainable": params["trainable"],
        "base_parameters": run.base_parameters,
        "stored": params["stored"],
        "steps": r.train.max_steps,
        "batch": f"{r.train.batch_size} utterances"
        + (f" x {r.train.grad_accum} accumulated" if r.train.grad_accum > 1 else ""),
        "train_seconds": run.counters["train_seconds"],
        "total_seconds": total_seconds,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {run.host.device.type}",
        "decoding": f"beam {ev.beam}, language {ev.language}, at most 16 + {ev.max_tokens_per_second:g} tokens/s",
        "normaliser": norm,
        "sparsity": s2lora_sparsity(run.host.model)["zero_fraction"] if r.adapter.kind == "s2lora" else None,
        "extra_metrics": [{"label": "WER", "zero": zero["wer"], "adapted": adapted["wer"]}]
        if ev.metric == "cer" and "wer" in zero
        else [],
    }
    title = f"{r.name}: {r.model.name} + {r.adapter.kind}" + (" (synthetic data)" if r.data.synthetic else "")
    write_curves(run.log.rows(), run.dir / "curves.png", ev.metric, title)
    write_report(run.dir / "report.md", info)
    return info
