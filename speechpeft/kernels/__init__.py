"""Batched multi-adapter ops: each utterance of a batch may use its own adapter.

On CUDA tensors ``batched_lora`` and ``batched_s2lora`` run the engine ``CUDA_DEFAULT`` names, and
the pure-torch reference everywhere else (no warning: CPU is a supported path, not a fallback to
complain about). Two Triton engines exist:

- ``triton_lora``, the unfused pair: cuBLAS for the base GEMM, a shrink h = x·A_idᵀ, then an
  expand that reads y again and adds (h ⊙ c[id])·B_idᵀ;
- ``triton_fused``: one Triton GEMM per adapted linear with the adapter in its epilogue (y stored
  once, the shrink optionally folded into the K-loop).

The default is the unfused pair because it measured faster (bench/kernels.md, H200, 2026-12-04):
the fused kernel's own GEMM runs 1.5-1.9x slower than cuBLAS on Whisper's shapes, which costs more
than the y round trip it saves (whisper-small B=32, 32 adapters: 1.185x the bare encoder against
1.244x). When the fused GEMM reaches cuBLAS, flip ``CUDA_DEFAULT``. Triton is imported only when a
CUDA tensor arrives.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType

import torch

from . import reference

_FORCED: list[ModuleType] = []  # benchmarks and tests pin one implementation for every device


CUDA_DEFAULT = "triton_lora"  # or "triton_fused"; see the module docstring for the measurement


@functools.lru_cache(maxsize=1)
def _triton():
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{CUDA_DEFAULT}")
    except ImportError:  # no triton on this machine: the reference serves CUDA too
        return None


@contextlib.contextmanager
def forced(impl: ModuleType) -> Iterator[None]:
    """Inside the block every call runs ``impl`` (``reference``, ``triton_fused`` or ``triton_lora``)
    whatever the device: a benchmark times the engines on the same model, a test runs the Triton
    kernels on CPU tensors under ``TRITON_INTERPRET=1``."""
    _FORCED.append(impl)
    try:
        yield
    finally:
        _FORCED.pop()


def _impl(x: torch.Tensor):
    if _FORCED:
        return _FORCED[-1]
    if x.is_cuda and _triton() is not None:
        return _triton()
    return reference


def batched_lora(x, weight, bias, ids, lora_a, lora_b, scale, coef=None):
    """See ``reference.batched_lora`` for the contract, stated as a loop. ``coef``: the (N, r) fp32
    coefficient rows the fused kernel reads (``lora_coef``), when the caller keeps them."""
    impl = _impl(x)
    if impl is reference:
        return reference.batched_lora(x, weight, bias, ids, lora_a, lora_b, scale)
    return impl.batched_lora(x, weight, bias, ids, lora_a, lora_b, scale, coef=coef)


def batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale, coef=None):
    """See ``reference.batched_s2lora`` for the contract, stated as a loop; ``coef`` as above (λ·scale)."""
    impl = _impl(x)
    if impl is reference:
        return reference.batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale)
    return impl.batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale, coef=coef)


def lora_coef(scale: torch.Tensor, rank: int) -> torch.Tensor:
    """The fused kernel's (N, r) fp32 coefficient rows for LoRA: each adapter's scale on every rank
    (a stride-0 view, no copy). A bank computes them once, not per call."""
    return scale.float()[:, None].expand(scale.shape[0], rank)


def s2lora_coef(lam: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, r) fp32: λ·scale per adapter, for S2-LoRA."""
    return (lam.float() * scale).contiguous()


__all__ = ["batched_lora", "batched_s2lora", "forced", "lora_coef", "reference", "s2lora_coef"]
