"""What a training run trains, as a strategy the loop is handed.

The loop never asks which adapter kind it trains. It talks to a ``Tuning``: attach to the model,
give the optimizer its parameter groups, adjust the loss, act after each update, hand out the
tensors for a checkpoint, save and load the best-on-dev copy, and describe itself for the report.

``AdapterTuning`` (the default) trains a speechpeft adapter of any registered kind. ``bench/``
hands the same loop PEFT's AdaLoRA and VeRA and a full fine-tune, so that comparisons share the
batches, schedule, decoding and selection of the run they are compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..adapters import (
    adapter_kind,
    adapter_layers,
    after_optimizer_step,
    assert_adapter_mode,
    count_parameters,
    inject,
    load_adapter,
    save_adapter,
)
from ..adapters.inject import adapter_param_groups
from ..errors import SpeechPeftError


class Tuning(Protocol):
    label: str  # what reports call it, e.g. "s2lora" or "full fine-tune"

    def attach(self, model: nn.Module) -> None:
        """Make the model trainable the strategy's way (inject, wrap, unfreeze)."""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups at peak learning rate ``lr``."""

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """The loss to minimise, given the host's (regularisers are added here)."""

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        """Called after every optimizer update, gradients still in place; ``step`` is 1-based."""

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every trained tensor, for a resumable checkpoint."""

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Put ``state``'s tensors back. Raises SpeechPeftError if they do not fit."""

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        """Write the current trained state to directory ``path`` (the best-on-dev copy)."""

    def load(self, model: nn.Module, path: Path) -> None:
        """Read back what ``save`` wrote."""

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """``trainable`` parameters, plus facts for the report (``facts``: label -> text) and
        optionally ``rank_table`` (module name -> ranks in use) for the rank heatmap."""


class AdapterTuning:
    """Train a speechpeft adapter (any registered kind); the base stays frozen."""

    def __init__(self, config: Any):
        self.config = config
        self.label = type(config).kind

    def attach(self, model: nn.Module) -> None:
        inject(model, self.config)
        assert_adapter_mode(model)

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return adapter_param_groups(model, lr)

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        after_optimizer_step(model, lr, progress=step / total)

    def _layer_cls(self, model: nn.Module):
        return adapter_kind(self.label).layer_cls

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = self._layer_cls(model).state_for_save(adapter_layers(model), prune=False)
        return {k: v.detach().to("cpu").clone() for k, v in tensors.items()}

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        expected = {k: tuple(v.shape) for k, v in self.state(model).items()}
        if {k: tuple(v.shape) for k, v in tensors.items()} != expected:
            raise SpeechPeftError(f"cannot resume: '{where}' holds a different adapter than this recipe builds")
        self._layer_cls(model).load_saved(adapter_layers(model), tensors, where)

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        save_adapter(model, path, prune=True, extra=extra)

    def load(self, model: nn.Module, path: Path) -> None:
        load_adapter(model, path)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        layers = adapter_layers(model)
        cls = self._layer_cls(model)
        stored = sum(t.numel() for t in cls.state_for_save(layers, prune=True).values())
        return {"trainable": count_parameters(model)["adapter"], "stored": stored, **cls.live_summary(layers)}
