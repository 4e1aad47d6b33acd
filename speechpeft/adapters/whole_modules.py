"""Modules a host trains whole beside an adapter (a CTC head sized to a new vocabulary): their
tensors, and how they travel in an adapter file (PEFT's ``modules_to_save`` names,
``base_model.model.<module>.<param>``, listed in the record's ``modules``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import AdapterFileError
from .lora import PEFT_PREFIX


def module_tensors(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """The parameters of modules trained whole, by ``"<module>.<param>"``."""
    out = {}
    for name in modules:
        for pname, p in model.get_submodule(name).named_parameters():
            out[f"{name}.{pname}"] = p
    return out


def split_modules(record: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Take the record's whole-module tensors out of ``tensors``, checked against their shapes."""
    listed = record.get("modules") or {}
    if not isinstance(listed, dict):
        raise AdapterFileError(f"{where}: the speechpeft record's 'modules' must be an object")
    out = {}
    for key, shape in listed.items():
        t = tensors.pop(PEFT_PREFIX + key, None)
        if t is None:
            raise AdapterFileError(f"{where}: missing tensor {PEFT_PREFIX + key!r} (module {key!r} in the record)")
        if list(t.shape) != list(shape):
            raise AdapterFileError(
                f"{where}: tensor {PEFT_PREFIX + key!r} has shape {tuple(t.shape)}, recorded {shape}"
            )
        out[key] = t
    return out


def load_modules(model: nn.Module, modules: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``modules`` (``"<module>.<param>"`` -> tensor) into ``model``, whose host sized them to fit first.

    Raises:
        AdapterFileError: a module is missing from the model or shaped differently.
    """
    have = {}
    for key in modules:
        name = key.rsplit(".", 1)[0]
        try:
            have.update(module_tensors(model, [name]))
        except AttributeError:
            raise AdapterFileError(f"{where}: the model has no module {name!r} for tensor {key!r}") from None
    for key, t in modules.items():
        target = have.get(key)
        if target is None or tuple(target.shape) != tuple(t.shape):
            shape = None if target is None else tuple(target.shape)
            raise AdapterFileError(
                f"{where}: {key} has shape {tuple(t.shape)}, the model's is {shape} (its host must size it first)"
            )
    with torch.no_grad():
        for key, t in modules.items():
            have[key].copy_(t.to(have[key].device, have[key].dtype))
