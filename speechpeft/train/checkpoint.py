"""Resumable training checkpoints: trained tensors, optimizer, scheduler, RNG states and counters.

Written with ``torch.save`` to a temp file and renamed; read back with ``weights_only=True``, so a
checkpoint can hold only tensors and plain Python values, never arbitrary objects. Under torchrun
rank 0 writes it, with every process's RNG states (a list, one per rank); one process writes one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpeechPeftError
from ..fs import atomic_write

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    optimizer,
    scheduler,
    counters: dict[str, Any],
    rng: list[dict[str, Any]] | None = None,
) -> None:
    """Atomically write everything a run needs to continue exactly where it stopped. ``rng``:
    every process's ``rng_state()`` (None: this process's alone)."""
    states = rng if rng is not None else [rng_state()]
    state = {
        "adapter": tensors,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": states[0] if len(states) == 1 else states,  # one process: the layout of earlier versions
        "counters": dict(counters),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, optimizer, scheduler) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    """Restore optimizer and scheduler states from ``save_checkpoint``'s file; returns the trained
    tensors (for the tuning strategy to put back), the counters, and the RNG states as saved (one
    dict, or a list of one per process) for the caller to restore with ``set_rng_state``.

    Raises:
        SpeechPeftError: the file is missing or unreadable.
    """
    if not path.is_file():
        raise SpeechPeftError(f"cannot resume: no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpeechPeftError(f"cannot resume: '{path}' is unreadable ({str(e).splitlines()[0]})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["adapter"], state["counters"], state["rng"]


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, Python, numpy) as plain values a checkpoint holds."""
    version, internal, gauss = random.getstate()
    # transformers draws LayerDrop and SpecAugment masks from numpy's global RNG
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
