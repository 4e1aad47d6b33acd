"""S2-LoRA, Sparsely Shared LoRA (Liu et al., ICASSP 2024), for child-speech Whisper adaptation.

All targeted matrices of the same shape, across all layers, share one low-rank basis pair
(A: r×d_in, B: d_out×r). Each matrix m owns only a coefficient vector λ_m ∈ R^r:

    ΔW_m = B · diag(λ_m) · A · (alpha / rank)

An L1 penalty keeps the λ sparse. It is applied SoRA-style as a proximal soft-threshold after each
optimizer update (``after_step(lr)``: λ ← sign(λ)·max(|λ| − lr·l1, 0)), which produces exact zeros
where a subgradient penalty would only jitter around them. Ranks that are zero in every matrix of
a basis are pruned when the adapter is saved.

Initialisation: λ = 0 gives ΔW = 0, while A and B are random so ∂L/∂λ_i = s · b_iᵀ G a_i ≠ 0 from
the first step. (Zeroing B instead, as LoRA does, would leave λ without gradient.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import AdapterLayer, Targets, adapter_dtype, expect_tensor, normalise_targets, register_adapter

BASIS_PREFIX = "s2lora.basis."


SHARE_MODES = ("shape", "stack", "leaf", "module")
INITS = ("lam0", "b0")


@dataclass(frozen=True)
class S2LoRAConfig:
    rank: int = 32  # width of each shared basis; sparse λ decide how much of it each matrix uses
    alpha: float = 32.0  # scaling = alpha / rank, as in LoRA
    l1: float = 1e-4  # proximal L1 strength on λ: threshold lr·lam_lr·l1 after each step; < 1, see below
    dropout: float = 0.0  # applied to the input of A
    targets: Targets = "attn"  # the paper adapts all attention projections
    # Which matrices share one basis. "shape": every matrix of one shape (the paper's global
    # sharing); "stack": also the same place in the block (e.g. encoder self-attention vs decoder
    # cross-attention); "leaf": also the same projection (q, k, v, out, fc1...); "module": the same
    # module of every layer (sharing across depth only).
    share: str = "shape"
    lam_lr: float = 1.0  # λ's learning rate as a multiple of the run's; the basis keeps the run's
    # "lam0": λ = 0 with a random basis (λ gets gradient at once); "b0": B = 0, λ = 1, random A
    # (LoRA's init: the basis output side starts at zero, every rank starts switched on)
    init: str = "lam0"
    l1_start: float = 0.0  # fraction of training before the proximal step begins (λ grows freely first)
    l1_ramp: float = 0.0  # fraction of training over which the threshold then rises linearly to full
    # The best-on-dev state is chosen only among states with at least this fraction of λ entries
    # exactly zero (0: any state); a run that never gets there keeps its last state and says so.
    keep_min_zero: float = 0.0

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"S2LoRAConfig.rank must be a positive integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"S2LoRAConfig.alpha must be positive, got {self.alpha!r}")
        # λ starts at 0 and Adam's first step moves it by about lr, so a threshold lr·l1 >= lr
        # would keep every λ at zero for ever.
        if not isinstance(self.l1, (int, float)) or not 0 <= self.l1 < 1:
            raise ValueError(
                f"S2LoRAConfig.l1 must be in [0, 1) (threshold lr·l1 must stay below Adam's step), got {self.l1!r}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"S2LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.share not in SHARE_MODES:
            raise ValueError(f"S2LoRAConfig.share must be one of {', '.join(SHARE_MODES)}, got {self.share!r}")
        if self.init not in INITS:
            raise ValueError(f"S2LoRAConfig.init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.lam_lr, (int, float)) or not self.lam_lr > 0:
            raise ValueError(f"S2LoRAConfig.lam_lr must be a positive multiplier, got {self.lam_lr!r}")
        for key in ("l1_start", "l1_ramp", "keep_min_zero"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"S2LoRAConfig.{key} must be a fraction in [0, 1], got {value!r}")
        if self.keep_min_zero > 0 and self.l1 == 0:
            raise ValueError("S2LoRAConfig.keep_min_zero needs l1 > 0: without the L1 no λ ever becomes zero")
        if self.l1_start + self.l1_ramp > 1.0:
            raise ValueError(f"S2LoRAConfig.l1_start + l1_ramp must be <= 1, got {self.l1_start!r} + {self.l1_ramp!r}")
        object.__setattr__(self, "targets", normalise_targets(self.targets, "S2LoRAConfig"))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def l1_factor(self, progress: float | None) -> float:
        """How much of the L1 threshold applies at ``progress`` (0..1 of training; None: all of it)."""
        if progress is None or progress >= self.l1_start + self.l1_ramp:
            return 1.0
        if progress < self.l1_start:
            return 0.0
        return (progress - self.l1_start) / self.l1_ramp


class S2LoRABasis(nn.Module):
    """One shared basis pair for every targeted matrix of one sharing group."""

    def __init__(self, d_in: int, d_out: int, rank: int, like: torch.Tensor, init: str = "lam0"):
        super().__init__()
        where = dict(device=like.device, dtype=adapter_dtype(like))
        self.A = nn.Parameter(torch.empty(rank, d_in, **where))
        self.B = nn.Parameter(torch.empty(d_out, rank, **where))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # bound 1/sqrt(d_in)
        if init == "b0":
            nn.init.zeros_(self.B)
        else:
            nn.init.kaiming_uniform_(self.B, a=math.sqrt(5))  # bound 1/sqrt(rank)


def basis_key(name: str, d_out: int, d_in: int, share: str = "shape") -> str:
    """The key of the basis that module ``name`` (d_out x d_in) shares under ``share``.

    Layer indices are dropped from the name, so ``model.encoder.layers.3.self_attn.q_proj``
    belongs to group ``model.encoder.layers.*.self_attn`` ("stack"), ``q_proj`` ("leaf") or
    ``model.encoder.layers.*.self_attn.q_proj`` ("module").
    """
    shape = f"{d_out}x{d_in}"
    if share == "shape":
        return shape
    pattern = re.sub(r"\.\d+(?=\.|$)", ".*", name)
    stack, _, leaf = pattern.rpartition(".")
    group = {"stack": stack, "leaf": leaf, "module": pattern}[share]
    return f"{shape}@{group}"


class S2LoRALinear(AdapterLayer):
    """``y = W x + s · B ((A dropout(x)) ⊙ λ)`` with (A, B) shared by every matrix of this shape."""

    fixed_shapes = False  # saved bases keep only the ranks some matrix uses

    def __init__(self, base_layer: nn.Linear, config: S2LoRAConfig, shared: dict, name: str = ""):
        super().__init__(base_layer, config)
        key = basis_key(name, self.out_features, self.in_features, config.share)
        if key not in shared:
            shared[key] = S2LoRABasis(self.in_features, self.out_features, config.rank, base_layer.weight, config.init)
        self.basis = shared[key]  # the same module object in every layer of this group
        self.basis_key = key
        start = 1.0 if config.init == "b0" else 0.0
        self.lam = nn.Parameter(
            torch.full((config.rank,), start, device=base_layer.weight.device, dtype=self.basis.A.dtype)
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.scaling

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x.to(self.basis.A.dtype)) @ self.basis.A.t()  # (..., r)
        return (h * (self.lam * self.scaling)) @ self.basis.B.t()  # (..., d_out); scaled at rank r

    def delta_weight(self) -> torch.Tensor:
        return (self.basis.B * self.lam) @ self.basis.A * self.scaling  # (d_out, r)·(r, d_in)

    def lr_scales(self) -> dict[str, float]:
        return {"lam": self.config.lam_lr}

    @torch.no_grad()
    def after_step(self, lr: float, progress: float | None = None) -> None:
        cfg = self.config
        threshold = lr * cfg.lam_lr * cfg.l1 * cfg.l1_factor(progress)  # λ moved at lr·lam_lr
        if threshold > 0:
            lam = self.lam
            lam.copy_(lam.sign() * (lam.abs() - threshold).clamp_min(0))

    @classmethod
    def state_for_save(cls, layers: Mapping[str, AdapterLayer], prune: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, (basis, members) in _groups(layers).items():
            if not prune:
                out[f"{BASIS_PREFIX}{key}.A"], out[f"{BASIS_PREFIX}{key}.B"] = basis.A.detach(), basis.B.detach()
                out.update({f"{name}.lam": layer.lam.detach() for name, layer in members.items()})
                continue
            lams = torch.stack([layer.lam.detach() for layer in members.values()])  # (M, r)
            keep = (lams != 0).any(dim=0)  # ranks some matrix of this basis uses
            out[f"{BASIS_PREFIX}{key}.A"] = basis.A.detach()[keep]  # (r', d_in)
            out[f"{BASIS_PREFIX}{key}.B"] = basis.B.detach()[:, keep]  # (d_out, r')
            for name, layer in members.items():
                out[f"{name}.lam"] = layer.lam.detach()[keep]  # (r',)
        return out

    @classmethod
    @torch.no_grad()
    def load_saved(cls, layers: Mapping[str, AdapterLayer], tensors: Mapping[str, torch.Tensor], where: str) -> None:
        for key, (basis, members) in _groups(layers).items():
            a = expect_tensor(tensors, f"{BASIS_PREFIX}{key}.A", None, where)
            rank = a.shape[0] if a.dim() == 2 else -1
            a = expect_tensor(tensors, f"{BASIS_PREFIX}{key}.A", (rank, basis.A.shape[1]), where)
            b = expect_tensor(tensors, f"{BASIS_PREFIX}{key}.B", (basis.B.shape[0], rank), where)
            _assign(basis, "A", a)
            _assign(basis, "B", b)
            for name, layer in members.items():
                _assign(layer, "lam", expect_tensor(tensors, f"{name}.lam", (rank,), where))

    @classmethod
    def summarize(cls, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return {**sparsity_of(tensors), "rank_table": rank_table(tensors)}

    @classmethod
    def as_lora(cls, tensors, targets, config: S2LoRAConfig):
        lora, rank = s2lora_as_lora(tensors, targets, config)
        return lora, rank, 1.0  # the scaling is folded into lora_B

    @classmethod
    def shared_bases(cls, tensors, configs):
        """The bases by key when every adapter holds identical bases and scaling (adapters trained
        from one saved start, say): a bank keeps them once and only the λ rows differ."""
        first, scale = tensors[0], configs[0].scaling
        keys = {k for k in first if k.startswith(BASIS_PREFIX)}
        for t, c in zip(tensors[1:], configs[1:], strict=True):
            if (
                c.scaling != scale
                or c.share != configs[0].share
                or {k for k in t if k.startswith(BASIS_PREFIX)} != keys
            ):
                return None
            if not all(torch.equal(t[k], first[k]) for k in keys):
                return None
        bases = {k[len(BASIS_PREFIX) :].rsplit(".", 1)[0] for k in keys}
        return {b: (first[f"{BASIS_PREFIX}{b}.A"].float(), first[f"{BASIS_PREFIX}{b}.B"].float(), scale) for b in bases}

    @classmethod
    def not_selectable(cls, layers: Mapping[str, AdapterLayer]) -> str | None:
        want = max(layer.config.keep_min_zero for layer in layers.values())
        if want == 0:
            return None
        zero = sparsity_of(cls.state_for_save(layers, prune=False))["zero_fraction"]
        if zero >= want:
            return None
        return f"{100 * zero:.1f} % of λ zero, below adapter.keep_min_zero={want:g}"

    @classmethod
    def live_summary(cls, layers: Mapping[str, AdapterLayer]) -> dict[str, Any]:
        stats = sparsity_of(cls.state_for_save(layers, prune=False))
        zero = f"{stats['lambda_zero']:,} of {stats['lambda_entries']:,}"
        return {
            "sparsity": stats["zero_fraction"],
            "rank_table": {name: int((layer.lam != 0).sum()) for name, layer in layers.items()},
            "facts": {"S2-LoRA λ sparsity": f"{100 * stats['zero_fraction']:.1f} % of entries exactly zero ({zero})"},
        }


def _groups(layers: Mapping[str, AdapterLayer]) -> dict[str, tuple[S2LoRABasis, dict[str, S2LoRALinear]]]:
    groups: dict[str, tuple[S2LoRABasis, dict[str, S2LoRALinear]]] = {}
    for name in sorted(layers):
        layer = layers[name]
        groups.setdefault(layer.basis_key, (layer.basis, {}))[1][name] = layer
    return groups


def _assign(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    """Copy in place when the shape matches (optimizers keep their references); else replace."""
    current = getattr(module, attr)
    if current.shape == value.shape:
        current.copy_(value)
    else:  # a pruned file has a smaller rank than the freshly injected basis
        new = nn.Parameter(
            value.to(device=current.device, dtype=current.dtype).clone(), requires_grad=current.requires_grad
        )
        setattr(module, attr, new)


def sparsity_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Zero fraction of all λ entries and, per basis, the ranks still used by some matrix."""
    lams = {k: t for k, t in tensors.items() if k.endswith(".lam") and not k.startswith(BASIS_PREFIX)}
    total = sum(t.numel() for t in lams.values())
    zeros = sum(int((t == 0).sum()) for t in lams.values())
    bases = {}
    for k, a in tensors.items():
        if k.startswith(BASIS_PREFIX) and k.endswith(".A"):
            bases[k[len(BASIS_PREFIX) : -2]] = a.shape[0]
    return {
        "lambda_entries": total,
        "lambda_zero": zeros,
        "zero_fraction": zeros / total if total else 1.0,
        "basis_ranks": bases,
    }


def rank_table(tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Module name -> how many of its λ entries are non-zero (the ranks it uses)."""
    return {
        k[: -len(".lam")]: int((t != 0).sum())
        for k, t in sorted(tensors.items())
        if k.endswith(".lam") and not k.startswith(BASIS_PREFIX)
    }


def s2lora_sparsity(model: nn.Module) -> dict[str, Any]:
    """Sparsity of the S2-LoRA coefficients in a live model, plus the ranks pruning would keep."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, S2LoRALinear)}
    stats = sparsity_of(S2LoRALinear.state_for_save(layers, prune=False))
    stats["active_ranks"] = sparsity_of(S2LoRALinear.state_for_save(layers, prune=True))["basis_ranks"]
    return stats


register_adapter("s2lora", S2LoRAConfig, S2LoRALinear)


def s2lora_as_lora(tensors: Mapping[str, torch.Tensor], targets: Mapping[str, tuple[int, int]], config: S2LoRAConfig):
    """Exact plain-LoRA tensors (PEFT keys) for a saved S2-LoRA adapter, and their common rank.

    Each matrix gets lora_A = A and lora_B = scaling · B · diag(λ) of its basis, so
    lora_B @ lora_A == ΔW. Bases pruned to different ranks are zero-padded to the largest, and
    the LoRA scaling (alpha / r) is 1: pass ``alpha = rank`` with the returned rank.
    """
    from .lora import PEFT_PREFIX

    scaling = config.scaling

    rank = max((t.shape[0] for k, t in tensors.items() if k.startswith(BASIS_PREFIX) and k.endswith(".A")), default=0)
    out = {}
    for name, (d_out, d_in) in sorted(targets.items()):
        key = f"{BASIS_PREFIX}{basis_key(name, d_out, d_in, config.share)}"
        a, b, lam = tensors[f"{key}.A"], tensors[f"{key}.B"], tensors[f"{name}.lam"]
        lora_a = torch.zeros(rank, d_in, dtype=a.dtype)
        lora_b = torch.zeros(d_out, rank, dtype=b.dtype)
        lora_a[: a.shape[0]] = a  # (r', d_in)
        lora_b[:, : b.shape[1]] = b * lam * scaling  # (d_out, r')
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = lora_a
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = lora_b
    return out, rank
