"""``speechpeft pretrain``: continued pretraining of wav2vec 2.0 on untranscribed audio of a new
language, through the same loop as ``finetune`` with another objective.

The recipe's ``model.name`` must be a pretraining checkpoint (it keeps its quantizer). Either the
whole transformer trains with the conv feature encoder frozen (``pretrain.mode: full``, as in
Nowakowski et al. 2023), or only the recipe's adapter (``adapter``, for a one-GPU budget), which
is merged into the weights at the end. The run folder gets ``model/``, a ``save_pretrained``
checkpoint that a CTC recipe names as its ``model.name``, and ``curves.png``, ``report.md``,
``metrics.jsonl``, ``checkpoint.pt`` (exact resume) and ``recipe.yaml``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..adapters import adapter_layers, unload_adapter
from ..data import read_audio_set
from ..distributed import World, device_for, session
from ..errors import SpeechPeftError
from ..eval.pretrain_report import write_pretrain_curves, write_pretrain_report
from ..fs import atomic_dir, remove_leftovers
from ..models import PretrainSettings, load_pretrain_host
from .checkpoint import CHECKPOINT
from .ddp import check_world
from .loop import Run, _seed, batch_description, check_run_folder, machine_description, open_run_log, train_loop
from .objective import ContrastivePretraining
from .recipe import Recipe
from .runlog import check_audio_headers
from .tuning import AdapterTuning, WholeModelTuning

OUTPUTS = [CHECKPOINT, "model", "metrics.jsonl", "recipe.yaml", "report.md", "curves.png"]


def pretrain(recipe: Recipe, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Continue pretraining ``recipe.model.name`` on ``recipe.data.train``; returns the report's facts.

    Raises:
        SpeechPeftError: bad data (file:line), a checkpoint without a quantizer, an existing run
            without --resume/--overwrite, or a checkpoint that does not fit.
    """
    started = time.time()
    run_dir = Path(recipe.output_dir) / recipe.name
    fresh = not run_dir.exists()
    with session(None if recipe.model.device == "auto" else recipe.model.device) as world:
        try:
            check_world(recipe, world)
            run = _prepare(recipe, run_dir, resume, overwrite, progress and world.main, world)
            run.tuning.attach(run.host.model)
            trainable = run.tuning.summary(run.host.model)["trainable"]
            if run.log.first("setup") is None:
                run.log.append({"event": "setup", "tuning": run.tuning.label, "trainable": trainable})
            train_loop(run, resume)
            return _finish(run, trainable, time.time() - started)
        except BaseException:
            if world.main and fresh and not (run_dir / CHECKPOINT).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _prepare(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool, progress: bool, world: World) -> Run:
    check_run_folder(run_dir, ("model",), resume, overwrite, world)
    splits = {key: read_audio_set(getattr(recipe.data, key)) for key in ("train", "dev")}
    for utts in splits.values():
        check_audio_headers(utts, max_seconds=recipe.model.window_seconds)
    if recipe.train.dev_max_utterances:
        splits["dev"] = splits["dev"][: recipe.train.dev_max_utterances]
    _seed(recipe.train.seed)
    p = recipe.pretrain
    settings = PretrainSettings(p.mask_time_prob, p.mask_time_length, p.num_negatives, p.diversity_weight,
                                p.max_temperature, p.min_temperature, p.temperature_decay)  # fmt: skip
    device = device_for(world, None if recipe.model.device == "auto" else recipe.model.device)
    host = load_pretrain_host(recipe.model.name, device=device, settings=settings)
    host.set_window(recipe.model.window_seconds)
    for utts in splits.values():
        short = min(utts, key=lambda u: u.duration)
        if short.duration < host.min_seconds:
            raise SpeechPeftError(
                f"{short.where}: {short.duration:g} s is shorter than the {host.min_seconds:.3f} s continued "
                f"pretraining needs (one masked span of {p.mask_time_length} frames and a neighbour)"
            )
    if p.mode == "full" and p.freeze_feature_encoder:
        tuning: Any = WholeModelTuning(frozen=host.input_layer, label="full (feature encoder frozen)")
    elif p.mode == "full":
        host.train_input_layer()
        tuning = WholeModelTuning(label="full (feature encoder included)")
    else:
        tuning = AdapterTuning(recipe.adapter.config())
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run_dir, OUTPUTS)
        if overwrite and not resume:
            for name in (CHECKPOINT, "report.md", "curves.png"):
                (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "model", ignore_errors=True)
    log = open_run_log(run_dir, recipe, resume, world)
    base = sum(q.numel() for q in host.model.parameters())
    objective = ContrastivePretraining(seed=recipe.train.seed, batch_size=recipe.eval.batch_size)
    return Run(recipe, run_dir, host, splits["train"], splits["dev"], [], log, base, tuning, objective, progress,
               world=world)  # fmt: skip


def _finish(run: Run, trainable: int, total_seconds: float) -> dict[str, Any]:
    model = run.host.model
    if adapter_layers(model):
        unload_adapter(model, merge=True)  # the output is a plain checkpoint with the adapter in its weights
    if run.world.main:
        atomic_dir(run.dir / "model", run.host.save_pretrained)
    r = run.recipe
    rows = run.log.rows()
    dev = [row for row in rows if row["event"] == "dev"]
    info = {
        "name": r.name,
        "model": r.model.name,
        "mode": run.tuning.label,
        "synthetic": r.data.synthetic,
        "description": r.data.description or r.data.train,
        "train_utterances": len(run.train),
        "train_hours": sum(u.duration for u in run.train) / 3600,
        "dev_utterances": len(run.dev),
        "trainable": trainable,
        "base_parameters": run.base_parameters,
        "steps": r.train.max_steps,
        "batch": batch_description(r, run.world),
        "machine": machine_description(run),
        "lr": r.train.lr,
        "first_dev": dev[0] if dev else None,
        "last_dev": dev[-1] if dev else None,
        "train_seconds": run.counters["train_seconds"],
        "total_seconds": total_seconds,
        "output": str(run.dir / "model"),
    }
    title = f"{r.name}: continued pretraining of {r.model.name}" + (" (synthetic data)" if r.data.synthetic else "")
    if run.world.main:
        write_pretrain_curves(rows, run.dir / "curves.png", title)
        write_pretrain_report(run.dir / "report.md", info)
    return info
