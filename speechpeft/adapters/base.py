"""The adapter registry and the wrapper that every adapter layer builds on.

An adapter kind is a config dataclass plus a layer class, joined by one line::

    register_adapter("s2lora", S2LoRAConfig, S2LoRALinear)

A layer wraps a frozen ``nn.Linear`` (kept as ``base_layer``, PEFT's name). Most kinds add
``delta(x)``: ``y = base_layer(x) + delta(x)``; a kind that changes the weight itself (Master-ASR's
masks) overrides ``adapted(x)`` instead. Everything kind-specific lives on the layer class: its
parameters, what it shares between layers (built from the ``shared`` dict that ``inject`` hands
every layer of one model), how it is stored, what it needs per call (``condition``: e.g. the
language a pool assembles), and what happens around an optimizer step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import AdapterFileError, SpeechPeftError

Targets = str | tuple[str, ...]


@dataclass(frozen=True)
class AdapterKind:
    name: str
    config_cls: type
    layer_cls: type[AdapterLayer]


_KINDS: dict[str, AdapterKind] = {}


def register_adapter(kind: str, config_cls: type, layer_cls: type[AdapterLayer]) -> None:
    """Make an adapter kind known to ``inject``, ``save_adapter`` and ``load_adapter``.

    Raises:
        ValueError: ``kind`` is already registered with different classes.
    """
    known = _KINDS.get(kind)
    if known is not None and (known.config_cls, known.layer_cls) != (config_cls, layer_cls):
        raise ValueError(f"adapter kind {kind!r} is already registered to {known.config_cls.__name__}")
    config_cls.kind = kind
    layer_cls.kind = kind
    _KINDS[kind] = AdapterKind(kind, config_cls, layer_cls)


def adapter_kind(kind: str) -> AdapterKind:
    """The registered kind called ``kind``.

    Raises:
        SpeechPeftError: no such kind; the message lists the known ones.
    """
    try:
        return _KINDS[kind]
    except KeyError:
        raise SpeechPeftError(f"unknown adapter kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}") from None


def registered_kinds() -> list[str]:
    """Names of every registered adapter kind, sorted."""
    return sorted(_KINDS)


def kind_of(config: Any) -> AdapterKind:
    """The registered kind whose config class ``config`` is an instance of.

    Raises:
        SpeechPeftError: ``config`` is not a registered adapter config.
    """
    for kind in _KINDS.values():
        if type(config) is kind.config_cls:
            return kind
    raise SpeechPeftError(f"{type(config).__name__} is not a registered adapter config")


def normalise_targets(targets: Any, owner: str) -> Targets:
    """Targets as a config stores them: a regex string, or a tuple of exact names / suffixes."""
    if isinstance(targets, str) and targets:
        return targets
    if isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets):
        return tuple(targets)
    raise ValueError(f"{owner}.targets must be a regex string or a non-empty list of module names, got {targets!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def config_from_dict(config_cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build ``config_cls`` from a dict read from a file, naming the file in every error.

    Raises:
        AdapterFileError: an unknown key, or a value the config rejects.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AdapterFileError(
            f"{where}: unknown {config_cls.__name__} key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as e:
        raise AdapterFileError(f"{where}: {e}") from None


class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable delta: ``y = base_layer(x) + delta(x)``.

    Subclasses implement ``delta``, ``delta_weight`` and the class-level storage hooks
    ``state_for_save`` / ``load_saved``. ``merge`` folds ``delta_weight`` into the base weight.
    """

    kind: ClassVar[str] = ""
    # The module types this kind can wrap; `inject` refuses targets of any other type.
    wraps: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear,)
    mergeable: ClassVar[bool] = True
    # Whether saved tensors keep the shapes of a fresh layer (S2-LoRA prunes ranks, so it does not).
    fixed_shapes: ClassVar[bool] = True
    # The largest share of all parameters that may train (the frozen-base check); a kind whose
    # pool is larger than the weights it adapts (Master-ASR's scores) raises it.
    max_trainable_fraction: ClassVar[float] = 0.5
    # Whether every trainable parameter gets a gradient on every update. A kind that trains some
    # parameters only on some updates says False, and torchrun's DDP then looks for unused
    # parameters on each update (train.ddp). (Master-ASR's language rows are rows of one tensor
    # per layer: the rows of other languages get a zero gradient, so it says True.)
    every_parameter_every_step: ClassVar[bool] = True

    def __init__(self, base_layer: nn.Linear, config: Any):
        super().__init__()
        self.base_layer = base_layer
        self.config = config
        self.merged = False

    @property
    def in_features(self) -> int:
        return features(self.base_layer)[1]

    @property
    def out_features(self) -> int:
        return features(self.base_layer)[0]

    @property
    def weight(self) -> torch.Tensor:
        # Host code sometimes reads `proj.weight.dtype`; answer for the wrapped layer.
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return self.adapted(x)

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        """The adapted output; by default the base's plus ``delta(x)``."""
        y = self.base_layer(x)
        return y + self.delta(x).to(y.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution for input ``x`` (..., in_features) -> (..., out_features)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The dense weight update (out_features, in_features) that ``merge`` adds."""
        raise NotImplementedError

    def adapter_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The trainable parameters of this layer (everything except ``base_layer``)."""
        for name, p in self.named_parameters():
            if not name.startswith("base_layer."):
                yield name, p

    @torch.no_grad()
    def merge(self) -> None:
        if not self.mergeable:
            raise SpeechPeftError(f"{self.kind} adapters are not linear in the weights; they cannot be merged")
        if not self.merged:
            w = self.base_layer.weight
            w += self.delta_weight().to(w.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            w = self.base_layer.weight
            w -= self.delta_weight().to(w.dtype)
            self.merged = False

    def unmerged_weight(self) -> torch.Tensor:
        """The base weight as it was before any merge (what fingerprints compare)."""
        w = self.base_layer.weight.detach()
        return w - self.delta_weight().detach().to(w.dtype).view_as(w) if self.merged else w

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name (e.g. ``{"lam": 10.0}``); others get 1."""
        return {}

    def after_step(self, lr: float, progress: float | None = None) -> None:
        """Called by ``after_optimizer_step`` once per update with the run's lr and the fraction
        of training done (None when unknown); proximal kinds act here."""

    # Storage: a kind decides its own tensor layout (LoRA uses PEFT's keys).
    @classmethod
    def state_for_save(cls, layers: Mapping[str, AdapterLayer], prune: bool) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def load_saved(cls, layers: Mapping[str, AdapterLayer], tensors: Mapping[str, torch.Tensor], where: str) -> None:
        raise NotImplementedError

    @classmethod
    def summarize(cls, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Kind-specific facts for ``speechpeft adapters inspect`` (e.g. sparsity)."""
        return {}

    @classmethod
    def config_json(cls, config: Any, targets: list[str], base_model: str | None) -> dict[str, Any]:
        """``adapter_config.json``'s content (LoRA writes PEFT's LoraConfig so PEFT can load the folder)."""
        return {"speechpeft_kind": cls.kind, **config_to_dict(config), "base_model_name_or_path": base_model}

    @classmethod
    def as_lora(
        cls, tensors: Mapping[str, torch.Tensor], targets: Mapping[str, tuple[int, int]], config: Any
    ) -> tuple[dict[str, torch.Tensor], int, float] | None:
        """The adapter as plain LoRA, exactly: (tensors in PEFT's keys, rank, scaling), or None
        for kinds that are not linear low-rank updates. Banks and PEFT exports use it."""
        return None

    @classmethod
    def shared_bases(cls, tensors: Sequence[Mapping[str, torch.Tensor]], configs: Sequence[Any]) -> Any:
        """Factors that several saved adapters of this kind share exactly (a bank then keeps them
        once and runs one shrink for the batch), or None."""
        return None

    @classmethod
    def after_inject(cls, layers: Mapping[str, AdapterLayer], config: Any) -> None:
        """Called once by ``inject`` after every target is wrapped (a kind that extends a saved
        pool loads it here). Raises SpeechPeftError (one line) when that cannot be done."""

    @classmethod
    def condition(
        cls, layers: Mapping[str, AdapterLayer], language: str | None = None
    ) -> contextlib.AbstractContextManager:
        """A context for the forward passes of one call, given what the call is about (its
        language). Kinds that do not depend on it return a null context."""
        return contextlib.nullcontext()

    @classmethod
    def before_step(cls, layers: Mapping[str, AdapterLayer], step: int) -> None:
        """Called before optimizer update ``step`` (1-based), gradients in place: a kind that
        updates some tensors only on some updates drops their gradients (``grad = None``) here."""

    @classmethod
    def not_selectable(cls, layers: Mapping[str, AdapterLayer]) -> str | None:
        """Why the current trained state may not be kept as the best on dev (a kind whose config
        asks for a property the state has not reached yet), or None when it may."""
        return None

    @classmethod
    def live_summary(cls, layers: Mapping[str, AdapterLayer]) -> dict[str, Any]:
        """Kind-specific facts about a model being trained, for logs and reports: ``facts``
        (label -> text), and optionally ``sparsity`` (a fraction) and ``rank_table`` (module
        name -> ranks in use, drawn as a heatmap)."""
        return {}


def features(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of an ``nn.Linear`` or a ``nn.Conv1d`` (its channels)."""
    if isinstance(module, nn.Conv1d):
        return module.out_channels, module.in_channels
    return module.out_features, module.in_features


def adapter_dtype(base_weight: torch.Tensor) -> torch.dtype:
    """Adapters are fp32 unless the base is fp64: tiny low-rank factors lose too much in fp16/bf16."""
    return torch.float64 if base_weight.dtype == torch.float64 else torch.float32


def expect_tensor(
    tensors: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...] | None, where: str
) -> torch.Tensor:
    """``tensors[key]`` with the given shape, or a one-line error naming the file and key."""
    t = tensors.get(key)
    if t is None:
        raise AdapterFileError(f"{where}: missing tensor {key!r}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise AdapterFileError(f"{where}: tensor {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    return t
