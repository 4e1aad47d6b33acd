"""What the training loop needs to run under torchrun: the checks every process must pass alike,
PyTorch's DistributedDataParallel around one micro-batch's loss, and per-process RNG states.

A run on N processes computes what one process computes on the same global batch: every process
reads the same seeded batch order, takes every N-th utterance of each batch, pads its shard as the
whole batch would be padded, and weighs its shard's mean loss by its share of the batch's units
(tokens, utterances), so that DDP's averaged gradient is the whole batch's gradient.

Unused parameters. LoRA, S2-LoRA and Master-ASR train every parameter on every update (Master-ASR's
language rows are rows of one tensor per layer, so the other languages' rows get a zero gradient,
not none), so DDP's default holds and costs nothing. A whole fine-tune of wav2vec 2.0 uses its
mask embedding only when SpecAugment draws a mask, and a checkpoint with LayerDrop skips whole
layers: which parameters go without a gradient changes from update to update, so ``static_graph``
(the same set every time) is wrong there and ``find_unused_parameters=True`` is right, at the
price of one walk over the autograd graph per micro-batch. The tuning (and the adapter kind behind
it) says which case holds. A parameter shared by several layers (S2-LoRA's bases) is one leaf to
autograd: DDP reduces its summed gradient once, whatever the number of layers that use it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import yaml
from torch import nn

from ..distributed import SharedError, World
from ..errors import SpeechPeftError
from .recipe import Recipe, recipe_to_yaml


def check_world(recipe: Recipe, world: World) -> None:
    """Every process runs the same recipe, and the global batch divides over the processes.

    Raises:
        SharedError: (on every process alike) the processes disagree, or the batch does not divide.
    """
    if not world.enabled:
        return
    texts = world.gather(recipe_to_yaml(recipe))
    for rank, text in enumerate(texts):
        if text != texts[0]:
            key, mine, theirs = _first_difference(_flat(yaml.safe_load(texts[0])), _flat(yaml.safe_load(text)))
            raise SharedError(
                f"processes disagree on the recipe: {key} is {mine!r} on rank 0 but {theirs!r} on rank {rank}"
            )
    b = recipe.train.batch_size
    if b % world.size:
        raise SharedError(
            f"train.batch_size={b} is the global batch and must divide evenly over {world.size} processes "
            f"(e.g. train.batch_size={b + world.size - b % world.size})"
        )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, Any, Any]:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return "(the recipe text)", "", ""


class _Forward(nn.Module):
    """The module DDP wraps: its parameters are the host model's, its forward one micro-batch's loss."""

    def __init__(self, run: Any):
        super().__init__()
        self.model = run.host.model
        object.__setattr__(self, "_run", run)  # the run is state, not a submodule

    def forward(self, utts: list, step: int):
        return self._run.objective.loss(self._run, utts, step)


def fixed_graph(run: Any) -> bool:
    """Whether every trained parameter gets a gradient on every update: the tuning says so, and
    the model drops no layers at random (``layerdrop``, ``encoder_layerdrop``, ... > 0)."""
    model = run.host.model
    config = getattr(model, "config", None)
    settings = config.to_dict() if hasattr(config, "to_dict") else {}
    drops = any(k.endswith("layerdrop") and isinstance(v, int | float) and v > 0 for k, v in settings.items())
    same = getattr(run.tuning, "same_parameters_every_step", None)  # bench/'s PEFT tunings do not say
    return bool(same and same(model)) and not drops


class MicroBatchLoss:
    """Calls the run's objective on a micro-batch: directly in one process, through
    DistributedDataParallel under torchrun (gradients then average across processes on the
    micro-batch that ends an update, and not before)."""

    def __init__(self, run: Any):
        self.run = run
        self.ddp = None
        if run.world.enabled:
            device = run.host.device
            self.find_unused = not fixed_graph(run)
            self.ddp = nn.parallel.DistributedDataParallel(
                _Forward(run),
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.find_unused,  # see the module's docstring
                forward_sync_buffers=False,  # nothing trains a buffer; the start is broadcast once, at wrapping
            )

    def __call__(self, utts: list, step: int):
        if self.ddp is None:
            return self.run.objective.loss(self.run, utts, step)
        return self.ddp(utts, step)

    def syncing(self, last: bool):
        """The context of one micro-batch's forward and backward: no all-reduce until ``last``."""
        if self.ddp is None or last:
            return contextlib.nullcontext()
        return self.ddp.no_sync()


def own_rng(states: Any, world: World, where: str) -> dict[str, Any]:
    """This process's RNG states from a checkpoint's (one dict, or one per process).

    Raises:
        SharedError: the checkpoint was written by another number of processes.
    """
    states = states if isinstance(states, list) else [states]
    if len(states) != world.size:
        raise SharedError(
            f"cannot resume: '{where}' was written by {len(states)} process(es), this run has {world.size}; "
            f"resume with the same number (torchrun --nproc-per-node {len(states)}, or no torchrun for 1)"
        )
    return states[world.rank]


def check_in_step(world: World, tensors: dict[str, torch.Tensor]) -> None:
    """Every process holds the same trained tensors (DDP keeps them so; this catches a hook that
    would not). One float per process.

    Raises:
        SpeechPeftError: the processes' tensors differ.
    """
    if not world.enabled:
        return
    total = sum(float(t.detach().double().abs().sum()) for t in tensors.values())
    totals = world.gather(total)
    if any(t != totals[0] for t in totals):
        raise SpeechPeftError(f"the processes' trained tensors have drifted apart (sums {totals}); this is a bug")
