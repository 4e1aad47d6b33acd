"""What a training run trains, as a strategy the loop is handed.

The loop never asks which adapter kind it trains. It talks to a ``Tuning``: attach to the model,
give the optimizer its parameter groups, adjust the loss, act after each update, hand out the
tensors for a checkpoint, save and load the best-on-dev copy, and describe itself for the report.

``AdapterTuning`` (the default) trains a speechpeft adapter of any registered kind. ``bench/``
hands the same loop PEFT's AdaLoRA and VeRA and a full fine-tune, so that comparisons share the
batches, schedule, decoding and selection of the run they are compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..adapters import (
    adapter_kind,
    adapter_layers,
    after_optimizer_step,
    assert_adapter_mode,
    before_optimizer_step,
    count_parameters,
    inject,
    load_adapter,
    save_adapter,
)
from ..adapters.inject import adapter_param_groups
from ..adapters.lora import PEFT_PREFIX
from ..adapters.whole_modules import module_tensors
from ..errors import SpeechPeftError
from ..fs import atomic_dir


class Tuning(Protocol):
    label: str  # what reports call it, e.g. "s2lora" or "full fine-tune"

    def attach(self, model: nn.Module) -> None:
        """Make the model trainable the strategy's way (inject, wrap, unfreeze)."""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups at peak learning rate ``lr``."""

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """The loss to minimise, given the host's (regularisers are added here)."""

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before optimizer update ``step`` (1-based), after the gradients are in place."""

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        """Called after every optimizer update, gradients still in place; ``step`` is 1-based."""

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every trained tensor, for a resumable checkpoint."""

    def same_parameters_every_step(self, model: nn.Module) -> bool:
        """True when every trained parameter gets a gradient on every update (DDP then skips its
        search for unused ones); False when unsure."""

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Put ``state``'s tensors back. Raises SpeechPeftError if they do not fit."""

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        """Write the current trained state to directory ``path`` (the best-on-dev copy)."""

    def load(self, model: nn.Module, path: Path) -> None:
        """Read back what ``save`` wrote."""

    def not_selectable(self, model: nn.Module) -> str | None:
        """Why the current state may not be kept as the best on dev yet, or None when it may."""

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """``trainable`` parameters, plus facts for the report (``facts``: label -> text) and
        optionally ``rank_table`` (module name -> ranks in use) for the rank heatmap."""


class AdapterTuning:
    """Train a speechpeft adapter (any registered kind); the base stays frozen.

    ``modules`` are trained whole beside it (at ``module_lr_scale`` x the learning rate) and
    stored in its file: what the host made new for this run, such as a CTC head sized to a new
    vocabulary (``host.new_modules``). ``files`` writes the host's companions of the adapter
    (that vocabulary) into each saved folder.
    """

    def __init__(
        self,
        config: Any,
        modules: Sequence[str] = (),
        files: Callable[[Path], None] | None = None,
        module_lr_scale: float = 1.0,
    ):
        self.config = config
        self.label = type(config).kind
        self.modules, self.files, self.module_lr_scale = tuple(modules), files, module_lr_scale

    def attach(self, model: nn.Module) -> None:
        inject(model, self.config)
        for p in module_tensors(model, self.modules).values():
            p.requires_grad_(True)
        assert_adapter_mode(model)  # counts the whole modules among the trainable parameters

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        groups = adapter_param_groups(model, lr)
        whole = list(module_tensors(model, self.modules).values())
        return groups + ([{"params": whole, "lr": lr * self.module_lr_scale}] if whole else [])

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_step(self, model: nn.Module, step: int) -> None:
        before_optimizer_step(model, step)

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        after_optimizer_step(model, lr, progress=step / total)

    def _layer_cls(self, model: nn.Module):
        return adapter_kind(self.label).layer_cls

    def same_parameters_every_step(self, model: nn.Module) -> bool:
        return self._layer_cls(model).every_parameter_every_step  # the host's new modules are used always

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = dict(self._layer_cls(model).state_for_save(adapter_layers(model), prune=False))
        tensors.update({PEFT_PREFIX + k: v for k, v in module_tensors(model, self.modules).items()})
        return {k: v.detach().to("cpu").clone() for k, v in tensors.items()}

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        expected = {k: tuple(v.shape) for k, v in self.state(model).items()}
        if {k: tuple(v.shape) for k, v in tensors.items()} != expected:
            raise SpeechPeftError(f"cannot resume: '{where}' holds a different adapter than this recipe builds")
        whole = {k: tensors.pop(PEFT_PREFIX + k) for k in module_tensors(model, self.modules)}
        self._layer_cls(model).load_saved(adapter_layers(model), tensors, where)
        with torch.no_grad():
            for key, p in module_tensors(model, self.modules).items():
                p.copy_(whole[key])

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        save_adapter(model, path, prune=True, extra=extra, modules=self.modules, files=self.files)

    def load(self, model: nn.Module, path: Path) -> None:
        load_adapter(model, path)

    def not_selectable(self, model: nn.Module) -> str | None:
        return self._layer_cls(model).not_selectable(adapter_layers(model))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        layers = adapter_layers(model)
        cls = self._layer_cls(model)
        stored = sum(t.numel() for t in cls.state_for_save(layers, prune=True).values())
        whole = sum(p.numel() for p in module_tensors(model, self.modules).values())
        stored += whole
        return {"trainable": count_parameters(model)["adapter"] + whole, "stored": stored, **cls.live_summary(layers)}


WHOLE_WEIGHTS = "trained.safetensors"


class WholeModelTuning:
    """Train every parameter of the model except those under ``frozen`` (module-name prefixes):
    continued pretraining's full mode, which leaves the conv feature encoder as it is, and full
    fine-tuning. The best-on-dev copy is the trained tensors in one safetensors file."""

    def __init__(self, frozen: Sequence[str] = (), label: str = "full"):
        self.frozen, self.label = tuple(frozen), label

    def trained(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def attach(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(self.frozen))

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [{"params": list(self.trained(model).values()), "lr": lr}]

    def same_parameters_every_step(self, model: nn.Module) -> bool:
        return False  # e.g. wav2vec 2.0's mask embedding is used only when SpecAugment draws a mask

    def loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_step(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, lr: float, step: int, total: int) -> None:
        pass

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu").clone() for n, p in self.trained(model).items()}

    @torch.no_grad()
    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        params = self.trained(model)
        if {k: tuple(v.shape) for k, v in tensors.items()} != {k: tuple(p.shape) for k, p in params.items()}:
            raise SpeechPeftError(f"cannot resume: '{where}' holds other tensors than this run trains")
        for name, p in params.items():
            p.copy_(tensors[name])

    def save(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        """The trained tensors (not the frozen rest) as ``trained.safetensors`` in ``path``."""
        tensors = {k: v.contiguous() for k, v in self.state(model).items()}
        atomic_dir(path, lambda tmp: save_file(tensors, str(tmp / WHOLE_WEIGHTS), metadata={"format": "pt"}))

    def load(self, model: nn.Module, path: Path) -> None:
        self.load_state(model, load_file(str(path / WHOLE_WEIGHTS)), str(path / WHOLE_WEIGHTS))

    def not_selectable(self, model: nn.Module) -> str | None:
        return None

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {"trainable": sum(p.numel() for p in self.trained(model).values())}
