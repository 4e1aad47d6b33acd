"""USAT fine-grained speaker adapters (Universal Speaker-Adaptive TTS, TASLP 2024).

A bottleneck on the output of a frozen module, added residually inside the transform:
``y = f(x); y + up(relu(down(layer_norm(y))))``, with ``up`` zero-initialised so the model is
unchanged until the adapter trains. USAT places it in the flow's coupling layers and the
duration predictor (the "flow adapter") and in the text encoder's attention (the "phoneme
adapter"); the VITS host's presets ``usat``, ``usat_flow`` and ``usat_phoneme`` select them.
It wraps ``nn.Linear`` (channels last) and ``nn.Conv1d`` (channels at dim 1). The bottleneck is
nonlinear, so it cannot be merged into the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import AdapterLayer, Targets, adapter_dtype, expect_tensor, normalise_targets, register_adapter


@dataclass(frozen=True)
class USATConfig:
    bottleneck: int = 8  # USAT's width: ~1 % of a VITS model per speaker
    targets: Targets = "usat"  # VITS preset: flow + duration predictor + text-encoder attention

    def __post_init__(self):
        if not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise ValueError(f"USATConfig.bottleneck must be a positive integer, got {self.bottleneck!r}")
        object.__setattr__(self, "targets", normalise_targets(self.targets, "USATConfig"))


class USATAdapter(AdapterLayer):
    """Residual bottleneck on the wrapped module's output channels."""

    wraps = (nn.Linear, nn.Conv1d)
    mergeable = False

    def __init__(self, base_layer: nn.Module, config: USATConfig, shared: dict, name: str = ""):
        super().__init__(base_layer, config)
        d = self.out_features
        where = dict(device=base_layer.weight.device, dtype=adapter_dtype(base_layer.weight))
        self.norm = nn.LayerNorm(d, **where)
        self.down = nn.Linear(d, config.bottleneck, **where)
        self.up = nn.Linear(config.bottleneck, d, **where)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.channels_at = 1 if isinstance(base_layer, nn.Conv1d) else -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        h = y.transpose(1, -1) if self.channels_at == 1 else y  # (..., d): channels last
        a = self.up(torch.relu(self.down(self.norm(h.to(self.norm.weight.dtype)))))
        a = a.transpose(1, -1) if self.channels_at == 1 else a  # back to the module's layout
        return y + a.to(y.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("USAT adapters act on the module's output; see forward")

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError("USAT adapters are nonlinear and have no weight delta")

    @classmethod
    def state_for_save(cls, layers: Mapping[str, AdapterLayer], prune: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in layers.items():
            for part, p in layer.adapter_parameters():
                out[f"{name}.{part}"] = p.detach()
        return out

    @classmethod
    @torch.no_grad()
    def load_saved(cls, layers: Mapping[str, AdapterLayer], tensors: Mapping[str, torch.Tensor], where: str) -> None:
        for name, layer in layers.items():
            for part, p in layer.adapter_parameters():
                p.copy_(expect_tensor(tensors, f"{name}.{part}", tuple(p.shape), where))

    @classmethod
    def summarize(cls, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        widths = sorted({t.shape[0] for k, t in tensors.items() if k.endswith(".down.weight")})
        return {"bottleneck": widths}


register_adapter("usat", USATConfig, USATAdapter)
