"""Putting adapters into a model, finding them again, merging and removing them.

Adapter layers are found structurally (``isinstance(m, AdapterLayer)``), never by matching
substrings of parameter names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import AdapterModeError, SpeechPeftError, TargetError
from .base import AdapterLayer, Targets, kind_of

# Target presets by `model.config.model_type`, registered by the model hosts.
_PRESETS: dict[str, dict[str, str]] = {}


def register_presets(model_type: str, presets: Mapping[str, str]) -> None:
    """Name regexes (fullmatch over module names) for a model type, e.g. ``attn`` for whisper."""
    _PRESETS.setdefault(model_type, {}).update(presets)


def presets_for(model: nn.Module) -> dict[str, str]:
    return dict(_PRESETS.get(_model_type(model), {}))


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", "") or ""


def match_targets(model: nn.Module, targets: Targets, wraps: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[str]:
    """Names of the modules of a type in ``wraps`` that ``targets`` selects, in model order.

    ``targets`` is a preset name of this model type, a regex that must match the whole module
    name, or a tuple of exact names / dotted suffixes (``"q_proj"`` matches ``...self_attn.q_proj``).

    Raises:
        TargetError: nothing matches, the regex is invalid, or a match is not of a type in ``wraps``.
    """
    presets = presets_for(model)
    if isinstance(targets, str):
        pattern = presets.get(targets, targets)
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise TargetError(f"targets {targets!r} is not a valid regex ({e})") from None
        selected = lambda name: rx.fullmatch(name) is not None  # noqa: E731
        how = "regex fullmatch" if targets not in presets else f"preset for {_model_type(model)}"
    else:
        selected = lambda name: any(name == t or name.endswith("." + t) for t in targets)  # noqa: E731
        how = "exact names or suffixes"
    names, wrong = [], []
    for name, module in model.named_modules():
        if name and selected(name):
            (names if isinstance(module, wraps) else wrong).append(name)
    if wrong:
        kinds = type(model.get_submodule(wrong[0])).__name__
        allowed = " or ".join(f"nn.{t.__name__}" for t in wraps)
        raise TargetError(
            f"targets {targets!r} ({how}) select {wrong[0]!r} ({kinds}), which is not {allowed}; narrow the pattern"
        )
    if not names:
        raise TargetError(_no_match_message(model, targets, how, presets))
    return names


def _no_match_message(model: nn.Module, targets: Targets, how: str, presets: Mapping[str, str]) -> str:
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    sample = ", ".join(linear[:4]) + (f", ... ({len(linear)} in all)" if len(linear) > 4 else "")
    hint = f"; presets: {', '.join(sorted(presets))}" if presets else ""
    return f"targets {targets!r} ({how}) match no module; nn.Linear modules include {sample or '(none)'}{hint}"


def inject(model: nn.Module, config: Any) -> list[str]:
    """Wrap the targeted ``nn.Linear`` modules with ``config``'s adapter and freeze the rest.

    Returns the wrapped module names. The model's output is unchanged until the adapter trains.

    Raises:
        TargetError: the targets match nothing, or match something that cannot be wrapped.
        SpeechPeftError: ``config`` is not a registered adapter config.
    """
    kind = kind_of(config)
    present = adapter_layers(model)
    if present:
        first = next(iter(present.values()))
        raise SpeechPeftError(
            f"the model already holds a {first.kind} adapter on {len(present)} modules; "
            "call unload_adapter(model) before injecting another"
        )
    names = match_targets(model, config.targets, kind.layer_cls.wraps)
    shared: dict = {}  # state a kind shares between its layers (S2-LoRA's bases)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        layer = kind.layer_cls(base, config, shared, name)
        layer.train(base.training)  # a new module starts in training mode; keep the model's (dropout, caches)
        setattr(parent, child, layer)
    try:
        kind.layer_cls.after_inject(adapter_layers(model), config)
    except BaseException:
        unload_adapter(model, merge=False)  # leave the model as it was
        raise
    freeze_base(model)
    return names


def adapter_condition(model: nn.Module, language: str | None = None):
    """The context the model's adapter needs for one call (Master-ASR: the language to assemble);
    a null context for kinds that need none, and for a model without adapters."""
    layers = adapter_layers(model)
    if not layers:
        return contextlib.nullcontext()
    return type(next(iter(layers.values()))).condition(layers, language=language)


def before_optimizer_step(model: nn.Module, step: int) -> None:
    """The adapter kind's pre-update hook (see ``AdapterLayer.before_step``); ``step`` is 1-based."""
    layers = adapter_layers(model)
    if layers:
        type(next(iter(layers.values()))).before_step(layers, step)


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every adapter layer of ``model`` by module name, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters of ``model``, each once (shared bases appear in several layers)."""
    seen: dict[int, nn.Parameter] = {}
    for layer in adapter_layers(model).values():
        for _, p in layer.adapter_parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def freeze_base(model: nn.Module) -> None:
    """Freeze every parameter, then unfreeze the adapters' own."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in adapter_parameters(model):
        p.requires_grad_(True)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``base`` (everything not adapter), ``adapter`` and ``trainable``."""
    adapter_ids = {id(p) for p in adapter_parameters(model)}
    counts = {"base": 0, "adapter": 0, "trainable": 0}
    for p in model.parameters():  # deduplicated by torch
        counts["adapter" if id(p) in adapter_ids else "base"] += p.numel()
        if p.requires_grad:
            counts["trainable"] += p.numel()
    return counts


def assert_adapter_mode(model: nn.Module, max_fraction: float | None = None) -> dict[str, int]:
    """Refuse adapter-mode training when the base is not frozen. Returns the counts.

    Raises:
        AdapterModeError: no adapter is injected, or more than ``max_fraction`` of all
            parameters are trainable (default: the kind's ``max_trainable_fraction``).
    """
    layers = adapter_layers(model)
    if max_fraction is None:
        max_fraction = type(next(iter(layers.values()))).max_trainable_fraction if layers else 0.5
    counts = count_parameters(model)
    if counts["adapter"] == 0:
        raise AdapterModeError("adapter mode, but the model holds no adapter; inject or load one first")
    total = counts["base"] + counts["adapter"]
    if counts["trainable"] > max_fraction * total:
        raise AdapterModeError(
            f"adapter mode, but {counts['trainable']:,} of {total:,} parameters "
            f"({100 * counts['trainable'] / total:.1f} %) are trainable; the base must stay frozen "
            f"(call freeze_base(model))"
        )
    return counts


def adapter_param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups for the adapter: one per learning-rate multiplier a kind asks
    for (``AdapterLayer.lr_scales``), each parameter once. Every group gets ``lr`` x multiplier.
    """
    scale_of: dict[int, float] = {}
    params: dict[int, nn.Parameter] = {}
    for layer in adapter_layers(model).values():
        scales = layer.lr_scales()
        for name, p in layer.adapter_parameters():
            if p.requires_grad:
                params.setdefault(id(p), p)
                scale_of.setdefault(id(p), float(scales.get(name, 1.0)))
    groups: dict[float, list[nn.Parameter]] = {}
    for key, p in params.items():
        groups.setdefault(scale_of[key], []).append(p)
    return [{"params": ps, "lr": lr * scale, "lr_scale": scale} for scale, ps in sorted(groups.items())]


def after_optimizer_step(model: nn.Module, lr: float, progress: float | None = None) -> None:
    """Run each adapter's post-update hook (S2-LoRA's proximal L1 step) with the run's lr (the
    scheduled lr before any kind's multiplier) and the fraction of training done."""
    for layer in adapter_layers(model).values():
        layer.after_step(lr, progress)


def merge_adapter(model: nn.Module) -> None:
    """Fold every adapter into its base weight; forward then costs what the bare model costs."""
    _require_layers(model, "merge")
    for layer in adapter_layers(model).values():
        layer.merge()


def unmerge_adapter(model: nn.Module) -> None:
    """Undo ``merge_adapter`` (exact up to float rounding)."""
    _require_layers(model, "unmerge")
    for layer in adapter_layers(model).values():
        layer.unmerge()


def unload_adapter(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every adapter layer by its base ``nn.Linear``, merged first when ``merge``.

    The result is a plain transformers model, e.g. for ``save_pretrained``.
    """
    for name, layer in adapter_layers(model).items():
        if merge:
            layer.merge()
        elif layer.merged:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base_layer)
    return model


def _require_layers(model: nn.Module, what: str) -> None:
    if not adapter_layers(model):
        raise SpeechPeftError(f"cannot {what}: the model holds no adapter")
