"""Several processes training one run, as ``torchrun`` launches them: the process group, and the few
collectives the training loop and evaluation use.

``torchrun --nproc-per-node N -m speechpeft finetune ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in every process; ``session`` reads them and joins the group (gloo on CPU, NCCL on
CUDA). Without them (a plain ``speechpeft finetune``) the world is one process and every
collective here is the identity, so the single-process path does no extra work.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from .errors import SpeechPeftError

T = TypeVar("T")


class SharedError(SpeechPeftError):
    """An error every process raises alike (a recipe check): only rank 0 prints it."""


@dataclass(frozen=True)
class World:
    """Where this process stands among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that writes files and prints: rank 0."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``size``-th from ``rank``, so that shards of a
        length-sorted batch get utterances of alike lengths."""
        return list(items[self.rank :: self.size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over every process (float64), in one collective."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.tolist()

    def max(self, value: int) -> int:
        """The largest ``value`` any process holds."""
        if not self.enabled:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable, in-process values only), in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def world() -> World:
    """The current world: the joined process group's, else one process."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return World(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched_size() -> int:
    """How many processes the launcher (torchrun) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True unless this is a torchrun worker other than rank 0 (for printing before or after a run)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def session(device: str | None) -> Iterator[World]:
    """Join torchrun's process group for the span of one run (and leave it after), or yield a
    one-process world when there is no launcher. ``device``: the recipe's (None = auto).

    Raises:
        SpeechPeftError: the launcher's environment is incomplete, or the group cannot be joined.
    """
    size = launched_size()
    if size <= 1 or torch_dist.is_initialized():
        yield world()
        return
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise SpeechPeftError(f"WORLD_SIZE={size} but {', '.join(missing)} unset: launch with torchrun")
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    minutes = float(os.environ.get("SPEECHPEFT_DIST_TIMEOUT_MINUTES", "30"))
    try:
        torch_dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=minutes))
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot join the torchrun process group: {first}") from None
    try:
        yield world()
    except BaseException:
        torch_dist.destroy_process_group()
        raise
    # every rank leaves together: a gloo rank that tore its group down while its peer was still
    # finishing (rank 0 writes the report) was seen to abort ("terminate called without an active
    # exception", about one run in three of tests/unit/test_ddp.py)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def device_for(w: World, device: str | None) -> str | None:
    """The device this process trains on: the recipe's, with a bare ``cuda`` (or auto, on a GPU
    machine) meaning this process's local GPU."""
    if not w.enabled:
        return device
    if device in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{w.local_rank}"
    return device


def _comm_device() -> torch.device:
    backend = torch_dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
