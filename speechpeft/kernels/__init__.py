"""Batched multi-adapter ops: each utterance of a batch may use its own adapter.

``batched_lora`` and ``batched_s2lora`` run the Triton kernels on CUDA tensors and the pure-torch
reference everywhere else (no warning: CPU is a supported path, not a fallback to complain about).
Triton is imported only when a CUDA tensor arrives.
"""

from __future__ import annotations

import functools

import torch

from . import reference


@functools.lru_cache(maxsize=1)
def _triton():
    try:
        from . import triton_lora
    except ImportError:  # no triton on this machine: the reference serves CUDA too
        return None
    return triton_lora


def _impl(x: torch.Tensor):
    if x.is_cuda and _triton() is not None:
        return _triton()
    return reference


def batched_lora(x, weight, bias, ids, lora_a, lora_b, scale):
    """See ``reference.batched_lora`` for the contract, stated as a loop."""
    return _impl(x).batched_lora(x, weight, bias, ids, lora_a, lora_b, scale)


def batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale):
    """See ``reference.batched_s2lora`` for the contract, stated as a loop."""
    return _impl(x).batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale)


__all__ = ["batched_lora", "batched_s2lora", "reference"]
