"""LoRA (Hu et al. 2021): ΔW = B·A·(alpha/rank), with B zero-initialised.

Files use PEFT's key layout (``base_model.model.<module>.lora_A.weight``), so
``peft.PeftModel.from_pretrained(base, dir)`` and vLLM load them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import AdapterLayer, Targets, adapter_dtype, expect_tensor, normalise_targets, register_adapter

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8  # the LoRA paper's r=8 on q,v is the usual Whisper baseline
    alpha: float = 16.0  # scaling = alpha / rank; 2·rank is the common choice
    dropout: float = 0.0  # applied to the input of A, as PEFT does
    targets: Targets = "attn_qv"  # regex fullmatch, preset name, or list of names / suffixes

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be a positive integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"LoRAConfig.alpha must be positive, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "targets", normalise_targets(self.targets, "LoRAConfig"))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(AdapterLayer):
    """``y = W x + (alpha/r) · B A dropout(x)``; A Kaiming-uniform, B zero (PEFT's default init)."""

    def __init__(self, base_layer: nn.Linear, config: LoRAConfig, shared: dict, name: str = ""):
        super().__init__(base_layer, config)
        where = dict(device=base_layer.weight.device, dtype=adapter_dtype(base_layer.weight))
        self.lora_A = nn.Linear(self.in_features, config.rank, bias=False, **where)
        self.lora_B = nn.Linear(config.rank, self.out_features, bias=False, **where)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.scaling

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype)))  # (..., r)
        return self.lora_B(h * self.scaling)  # scaled at rank r, not at d_out: one small multiply, forward and back

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (d_out, d_in)

    @classmethod
    def state_for_save(cls, layers: Mapping[str, AdapterLayer], prune: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in layers.items():
            out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach()
            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach()
        return out

    @classmethod
    @torch.no_grad()
    def load_saved(cls, layers: Mapping[str, AdapterLayer], tensors: Mapping[str, torch.Tensor], where: str) -> None:
        for name, layer in layers.items():
            a = expect_tensor(tensors, f"{PEFT_PREFIX}{name}.lora_A.weight", tuple(layer.lora_A.weight.shape), where)
            b = expect_tensor(tensors, f"{PEFT_PREFIX}{name}.lora_B.weight", tuple(layer.lora_B.weight.shape), where)
            layer.lora_A.weight.copy_(a)
            layer.lora_B.weight.copy_(b)

    @classmethod
    def summarize(cls, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        ranks = sorted({t.shape[0] for k, t in tensors.items() if k.endswith(".lora_A.weight")})
        return {"ranks": ranks}

    @classmethod
    def config_json(cls, config: LoRAConfig, targets: list[str], base_model: str | None) -> dict[str, Any]:
        return peft_config(config, targets, base_model)

    @classmethod
    def as_lora(cls, tensors, targets, config: LoRAConfig):
        return dict(tensors), config.rank, config.scaling


def peft_config(config: LoRAConfig, target_names: list[str], base_model: str | None) -> dict[str, Any]:
    """``adapter_config.json`` in PEFT's LoraConfig layout; exact module names as targets."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(target_names),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
    }


# PEFT options that change the maths; a file that sets any of them is not plain LoRA.
_UNSUPPORTED_PEFT = {
    "use_dora": False,
    "use_rslora": False,
    "fan_in_fan_out": False,
    "bias": "none",
    "rank_pattern": {},
    "alpha_pattern": {},
}


def config_from_peft(data: Mapping[str, Any], where: str) -> LoRAConfig:
    """A LoRAConfig from a PEFT ``adapter_config.json`` (targets are filled in by the loader).

    Raises:
        ValueError: the file uses a PEFT option that plain LoRA cannot reproduce.
    """
    for key, plain in _UNSUPPORTED_PEFT.items():
        if data.get(key, plain) not in (plain, None):
            raise ValueError(f"{where}: PEFT option {key}={data[key]!r} is not supported (only plain LoRA is)")
    if data.get("modules_to_save"):
        raise ValueError(f"{where}: PEFT option modules_to_save={data['modules_to_save']!r} is not supported")
    return LoRAConfig(
        rank=int(data["r"]),
        alpha=float(data["lora_alpha"]),
        dropout=float(data.get("lora_dropout") or 0.0),
        targets=".*",
    )


register_adapter("lora", LoRAConfig, LoRALinear)
