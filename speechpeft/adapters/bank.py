"""A bank of adapters in one model, where every utterance of a batch picks its own.

``load_bank(model, [dir, ...])`` wraps each targeted ``nn.Linear`` once and stacks every
adapter's weights beside it; ``with bank_ids(model, ids):`` sets the adapter of each batch row
(-1: none) for the forward passes inside, in the calling thread only. LoRA and S2-LoRA adapters mix freely: S2-LoRA is
converted exactly to LoRA (A, scale·B·diag(λ)). When every adapter is S2-LoRA on one shared
basis, the bank keeps the basis once and only the λ rows differ, and the shrink x·Aᵀ runs once
for the whole batch. The kernels do the arithmetic (Triton on CUDA, the torch reference elsewhere).

Rows may be a multiple of the ids (beam search repeats each utterance ``beams`` times in a
row, as transformers does); each block of rows takes its utterance's adapter.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import SpeechPeftError
from ..kernels import batched_lora, batched_s2lora, lora_coef, s2lora_coef
from .base import adapter_kind
from .io import AdapterFile, check_adapter_base, read_adapter
from .lora import PEFT_PREFIX
from .s2lora import basis_key

_ROWS = threading.local()  # per thread: {id(BankLinear): ids}; kept off the module so it deep-copies and saves


class BankLinear(nn.Module):
    """A frozen ``nn.Linear`` with N adapters stacked; ``ids`` picks one per batch row."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.shared_basis = False
        self._coef: torch.Tensor | None = None  # fp32 coefficient rows, made once from the fp32 weights

    @property
    def ids(self) -> torch.Tensor | None:
        """This thread's per-row adapter ids (two threads decoding at once keep their own)."""
        return getattr(_ROWS, "ids", {}).get(id(self))

    @ids.setter
    def ids(self, value: torch.Tensor | None) -> None:
        rows = _ROWS.__dict__.setdefault("ids", {})
        if value is None:
            rows.pop(id(self), None)
        else:
            rows[id(self)] = value

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def set_lora(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> None:
        self.register_buffer("lora_a", a.contiguous(), persistent=False)  # (N, r, d_in)
        self.register_buffer("lora_b", b.contiguous(), persistent=False)  # (N, d_out, r)
        self.register_buffer("scale", scale, persistent=False)  # (N,)
        self._coef = lora_coef(scale, a.shape[1])

    def set_s2lora(self, a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, scale: float) -> None:
        self.shared_basis = True
        self.register_buffer("basis_a", a.contiguous(), persistent=False)  # (r, d_in)
        self.register_buffer("basis_b", b.contiguous(), persistent=False)  # (d_out, r)
        self.register_buffer("lam", lam.contiguous(), persistent=False)  # (N, r)
        self.s2_scale = scale
        self._coef = s2lora_coef(lam, scale)

    def coef(self, device: torch.device) -> torch.Tensor:
        """The fused kernel's (N, r) fp32 coefficients on ``device``, moved there once (a plain
        attribute, so that ``model.to(bfloat16)`` does not round them as it rounds buffers)."""
        if self._coef.device != device:
            self._coef = self._coef.to(device)
        return self._coef

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.ids
        if ids is None:
            return self.base_layer(x)
        rows = x.shape[0]
        if rows != ids.shape[0]:
            if rows % ids.shape[0]:
                raise SpeechPeftError(f"{rows} batch rows cannot take {ids.shape[0]} per-utterance adapter ids")
            ids = ids.repeat_interleave(rows // ids.shape[0])  # beams of one utterance sit together
        x3 = x.reshape(rows, -1, x.shape[-1]).contiguous()  # (B, T, d_in)
        w, bias = self.base_layer.weight, self.base_layer.bias
        if self.shared_basis:
            y = batched_s2lora(x3, w, bias, ids, self.basis_a, self.basis_b, self.lam, self.s2_scale,
                               coef=self.coef(x3.device))  # fmt: skip
        else:
            y = batched_lora(x3, w, bias, ids, self.lora_a, self.lora_b, self.scale, coef=self.coef(x3.device))
        return y.reshape(*x.shape[:-1], y.shape[-1])


def bank_layers(model: nn.Module) -> dict[str, BankLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BankLinear)}


def load_bank(model: nn.Module, paths: Sequence[str | Path], check_base: bool = True) -> list[str]:
    """Load adapters ``paths`` (id i = paths[i]) as a bank; returns the wrapped module names.

    Raises:
        SpeechPeftError: no paths, a model that already holds adapters, an unreadable adapter,
            or one made for another base (as ``load_adapter``).
    """
    from .inject import adapter_layers

    if not paths:
        raise SpeechPeftError("load_bank needs at least one adapter")
    if adapter_layers(model) or bank_layers(model):
        raise SpeechPeftError("the model already holds adapters; unload them before loading a bank")
    files = [read_adapter(p) for p in paths]
    for af in files:
        check_adapter_base(model, af, check_base)
    return load_bank_files(model, files)


def load_bank_files(model: nn.Module, files: Sequence[AdapterFile]) -> list[str]:
    """``load_bank`` for adapter files already read and checked against ``model`` (a server's pool
    reads and verifies each file once, then rebuilds the bank from memory as its set changes).

    Raises:
        SpeechPeftError: no files, a model that already holds adapters, or a kind that is not a low-rank update.
    """
    from .inject import adapter_layers

    if not files:
        raise SpeechPeftError("load_bank needs at least one adapter")
    if adapter_layers(model) or bank_layers(model):
        raise SpeechPeftError("the model already holds adapters; unload them before loading a bank")
    names = sorted(set().union(*(af.targets for af in files)))
    shared = _shared_basis(files)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = BankLinear(getattr(parent, child))
        d_out, d_in = layer.base_layer.out_features, layer.base_layer.in_features
        if shared is not None:
            a, b, scale = shared[basis_key(name, d_out, d_in, files[0].config.share)]
            lam = torch.stack([af.tensors.get(f"{name}.lam", torch.zeros(a.shape[0])) for af in files])
            layer.set_s2lora(a, b, lam.float(), scale)
        else:
            pairs = [_lora_pair(af, name, d_out, d_in) for af in files]
            rank = max(p[0].shape[0] for p in pairs)
            a = torch.zeros(len(files), rank, d_in)
            b = torch.zeros(len(files), d_out, rank)
            for i, (ai, bi, _) in enumerate(pairs):
                a[i, : ai.shape[0]], b[i, :, : bi.shape[1]] = ai, bi
            layer.set_lora(a, b, torch.tensor([p[2] for p in pairs]))
        layer.to(layer.base_layer.weight.device)
        setattr(parent, child, layer)
    return names


def unload_bank(model: nn.Module) -> None:
    """Put the plain ``nn.Linear`` layers back."""
    for name, layer in bank_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base_layer)


@contextlib.contextmanager
def bank_ids(model: nn.Module, ids: Sequence[int] | torch.Tensor) -> Iterator[None]:
    """Inside the block, batch row i (or its beams) uses adapter ``ids[i]`` (-1: none)."""
    layers = list(bank_layers(model).values())
    if not layers:
        raise SpeechPeftError("the model holds no adapter bank; load_bank(model, paths) first")
    ids = torch.as_tensor(ids, dtype=torch.int64, device=layers[0].weight.device)
    n = (layers[0].lam if layers[0].shared_basis else layers[0].lora_a).shape[0]
    if bool(((ids < -1) | (ids >= n)).any()):
        raise SpeechPeftError(f"adapter ids must be in -1..{n - 1}, got {ids.tolist()}")
    set_bank_ids(model, ids)
    try:
        yield
    finally:
        set_bank_ids(model, None)


def set_bank_ids(model: nn.Module, ids: torch.Tensor | None) -> None:
    """Set the per-row adapter ids of every bank layer (a host calls this when its batch shrinks)."""
    for layer in bank_layers(model).values():
        layer.ids = ids


def _lora_pair(af: AdapterFile, name: str, d_out: int, d_in: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A (r, d_in), B (d_out, r), scale) of adapter ``af`` on module ``name``; zeros if it skips it."""
    if name not in af.targets:
        return torch.zeros(1, d_in), torch.zeros(d_out, 1), 0.0
    lora = adapter_kind(af.kind).layer_cls.as_lora(af.tensors, {name: af.targets[name]}, af.config)
    if lora is None:
        raise SpeechPeftError(f"{af.path}: a {af.kind} adapter is not a low-rank update; it cannot join a bank")
    tensors, _, scale = lora
    a = tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"].float()
    b = tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"].float()
    return a, b, scale


def _shared_basis(files: list[AdapterFile]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]] | None:
    """Factors every adapter shares exactly, when they are all of one kind that has such factors."""
    kinds = {af.kind for af in files}
    if len(kinds) != 1:
        return None
    layer_cls = adapter_kind(kinds.pop()).layer_cls
    return layer_cls.shared_bases([af.tensors for af in files], [af.config for af in files])
