"""Resumable training checkpoints: adapter, optimizer, scheduler, RNG states and counters.

Written with ``torch.save`` to a temp file and renamed; read back with ``weights_only=True``, so a
checkpoint can hold only tensors and plain Python values, never arbitrary objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import adapter_kind, adapter_layers
from ..errors import SpeechPeftError
from ..fs import atomic_write

CHECKPOINT = "checkpoint.pt"


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors, unpruned, in the kind's file layout (cloned to CPU)."""
    layers = adapter_layers(model)
    kind = adapter_kind(next(iter(layers.values())).kind)
    return {k: v.detach().to("cpu").clone() for k, v in kind.layer_cls.state_for_save(layers, prune=False).items()}


def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, counters: dict[str, Any]) -> None:
    """Atomically write everything a run needs to continue exactly where it stopped."""
    state = {
        "adapter": adapter_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": _python_state(),
        },
        "counters": dict(counters),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore a checkpoint written by ``save_checkpoint``; returns its counters.

    Raises:
        SpeechPeftError: the file is missing or unreadable, or holds another adapter's tensors.
    """
    if not path.is_file():
        raise SpeechPeftError(f"cannot resume: no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpeechPeftError(f"cannot resume: '{path}' is unreadable ({str(e).splitlines()[0]})") from None
    layers = adapter_layers(model)
    kind = adapter_kind(next(iter(layers.values())).kind)
    expected = {k: tuple(v.shape) for k, v in kind.layer_cls.state_for_save(layers, prune=False).items()}
    got = {k: tuple(v.shape) for k, v in state["adapter"].items()}
    if got != expected:
        raise SpeechPeftError(f"cannot resume: '{path}' holds a different adapter than this recipe builds")
    kind.layer_cls.load_saved(layers, state["adapter"], str(path))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    return state["counters"]


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
