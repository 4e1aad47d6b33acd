"""Adapter files: ``adapter_model.safetensors`` + ``adapter_config.json``, nothing else is read.

The safetensors header carries the full record under ``__metadata__["speechpeft"]``: kind,
config, the base model's id, the targeted modules with their shapes, a fingerprint of the base,
parameter counts and a SHA-256 of the tensors. ``adapter_config.json`` is PEFT's LoraConfig for
LoRA (so PEFT and vLLM load the directory) and the kind's config for the other kinds.

Modules a host trains whole beside the adapter (a new CTC head sized to its vocabulary) are
stored in the same file under PEFT's ``modules_to_save`` names, ``base_model.model.<module>.<param>``,
and listed in the record's ``modules``.

A plain PEFT LoRA directory, without our record, loads too; its base cannot be checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import AdapterFileError, BaseMismatchError, SpeechPeftError
from ..fs import atomic_dir, link_or_copy
from .base import AdapterLayer, adapter_kind, config_from_dict, config_to_dict, features
from .inject import adapter_layers, count_parameters, inject
from .lora import PEFT_PREFIX, config_from_peft
from .whole_modules import load_modules, module_tensors, split_modules

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
FORMAT_VERSION = 1
PROBE_ELEMENTS = 256  # entries sampled per target weight for the base fingerprint
PROBE_RTOL = 1e-2  # bf16/fp16 loads of the same checkpoint agree far closer than this


@dataclass
class AdapterFile:
    """What an adapter directory holds, validated."""

    path: Path
    kind: str
    config: Any
    targets: dict[str, tuple[int, int]]  # module name -> (d_out, d_in)
    tensors: dict[str, torch.Tensor]
    record: dict[str, Any] | None  # None for a foreign PEFT directory
    modules: dict[str, torch.Tensor] = field(default_factory=dict)  # whole modules: "<module>.<param>" -> tensor


def save_adapter(
    model: nn.Module,
    path: str | Path,
    prune: bool = True,
    extra: dict[str, Any] | None = None,
    modules: Sequence[str] = (),
    files: Callable[[Path], None] | None = None,
) -> Path:
    """Write the model's adapter to directory ``path`` (created if needed), atomically as a whole.

    ``prune`` drops S2-LoRA ranks that are zero in every matrix; LoRA ignores it. ``extra``
    (JSON values) is stored in the record under ``"host"``, e.g. the encoder window it was
    trained with. ``modules`` names modules trained whole (stored in the same file); ``files``
    writes what else belongs beside the weights (a vocabulary) into the folder being assembled.

    Raises:
        SpeechPeftError: the model holds no adapter.
    """
    layers = adapter_layers(model)
    if not layers:
        raise SpeechPeftError("save_adapter: the model holds no adapter")
    first = next(iter(layers.values()))
    kind = adapter_kind(first.kind)
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in kind.layer_cls.state_for_save(layers, prune).items()
    }
    whole = {
        PEFT_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in module_tensors(model, modules).items()
    }
    tensors.update(whole)
    targets = describe_targets(model, list(layers))
    counts = count_parameters(model)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": kind.name,
        "config": config_to_dict(first.config),
        "base_model": model_id(model),
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "targets": {n: list(s) for n, s in targets.items()},
        "fingerprint": fingerprint(model, list(layers)),
        "parameters": {
            "base": counts["base"],
            "trainable": counts["adapter"] + sum(t.numel() for t in whole.values()),
            "stored": sum(t.numel() for t in tensors.values()),
        },
        "modules": {k[len(PEFT_PREFIX) :]: list(v.shape) for k, v in whole.items()},
        "tensors_sha256": tensors_sha256(tensors),
        "host": dict(extra or {}),
    }
    path = Path(path)
    meta = {"format": "pt", "speechpeft": json.dumps(record)}
    cfg = kind.layer_cls.config_json(first.config, list(layers), record["base_model"])
    if modules:
        cfg["modules_to_save"] = sorted(modules)

    def write(tmp: Path) -> None:
        if path.is_dir():  # keep what else the folder holds (a processor, a vocabulary...)
            for entry in path.iterdir():
                if entry.name not in (WEIGHTS, CONFIG):
                    link_or_copy(entry, tmp / entry.name)
        if files is not None:
            files(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata=meta)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    atomic_dir(path, write)  # weights and config change together or not at all
    return path


def load_adapter(model: nn.Module, path: str | Path, check_base: bool = True) -> list[str]:
    """Load the adapter at ``path`` into ``model``, injecting it first if the model has none.

    Returns the adapted module names.

    Raises:
        AdapterFileError: the directory is missing, unreadable, truncated or tampered with.
        BaseMismatchError: the adapter was made for another base model (``check_base=False``
            skips the weight comparison, never the shape check).
    """
    af = read_adapter(path)
    names = sorted(af.targets)
    check_adapter_base(model, af, check_base)
    present = adapter_layers(model)
    if present:
        if sorted(present) != names or next(iter(present.values())).kind != af.kind:
            raise SpeechPeftError(
                f"{af.path}: the model already holds a different adapter; unload_adapter(model) first"
            )
    else:
        inject(model, dataclasses.replace(af.config, targets=tuple(names)))
    layers = adapter_layers(model)
    where = str(af.path / WEIGHTS)
    adapter_kind(af.kind).layer_cls.load_saved(layers, af.tensors, where)
    extra = sorted(set(af.tensors) - set(adapter_kind(af.kind).layer_cls.state_for_save(layers, prune=False)))
    if extra:
        raise AdapterFileError(
            f"{where}: unexpected tensor {extra[0]!r} (not part of a {af.kind} adapter on these modules)"
        )
    load_modules(model, af.modules, str(af.path / WEIGHTS))
    return list(layers)


def read_adapter(path: str | Path) -> AdapterFile:
    """Read and validate an adapter directory without a model.

    Raises:
        AdapterFileError: anything about the directory or its files that is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise AdapterFileError(f"adapter directory '{path}' does not exist")
    if not path.is_dir():
        raise AdapterFileError(f"'{path}' is not a directory; an adapter is a directory holding {WEIGHTS}")
    weights = path / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        if pickles:
            raise AdapterFileError(
                f"'{path}' holds {pickles[0]}, a pickle, and no {WEIGHTS}; speechpeft reads only safetensors "
                "(convert it where you trust it, e.g. with safetensors.torch.save_file)"
            )
        raise AdapterFileError(f"'{path}' holds no {WEIGHTS}; is it an adapter directory?")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncation and bad headers
        raise AdapterFileError(
            f"{weights}: not a readable safetensors file, truncated or corrupt ({_first_line(e)})"
        ) from None
    if "speechpeft" not in metadata:
        return _read_peft(path, tensors)
    where = str(weights)
    try:
        record = json.loads(metadata["speechpeft"])
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{where}: the speechpeft record in the header is not valid JSON ({e})") from None
    if _field(record, "tensors_sha256", where) != tensors_sha256(tensors):
        raise AdapterFileError(
            f"{where}: tensors do not match the checksum recorded when the file was saved (tampered or corrupt)"
        )
    kind = adapter_kind(_field(record, "kind", where))
    config = config_from_dict(kind.config_cls, _field(record, "config", where), where)
    targets = {n: (int(s[0]), int(s[1])) for n, s in _field(record, "targets", where).items()}
    _check_finite(tensors, where)
    modules = split_modules(record, tensors, where)
    check_layout(kind.layer_cls, config, targets, tensors, where)
    return AdapterFile(path, kind.name, config, targets, tensors, record, modules)


def check_layout(layer_cls: type[AdapterLayer], config: Any, targets: dict[str, tuple[int, int]],
                 tensors: dict[str, torch.Tensor], where: str) -> None:  # fmt: skip
    """The tensors a file must hold for its kind, config and targets: built on the meta device
    (no memory), compared by name and, for kinds whose shapes are fixed, by shape.

    Raises:
        AdapterFileError: a tensor is missing, unexpected or (fixed-shape kinds) of another shape.
    """
    layers = {}
    shared: dict = {}
    for name, (d_out, d_in) in sorted(targets.items()):
        base = nn.Linear(d_in, d_out, bias=False, device="meta")
        layers[name] = layer_cls(base, config, shared, name)
    expected = {k: tuple(v.shape) for k, v in layer_cls.state_for_save(layers, prune=False).items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise AdapterFileError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise AdapterFileError(
            f"{where}: unexpected tensor {unexpected[0]!r} (not part of this {layer_cls.kind} adapter)"
        )
    for key, shape in expected.items():
        if layer_cls.fixed_shapes and tuple(tensors[key].shape) != shape:
            raise AdapterFileError(f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {shape}")


def _read_peft(path: Path, tensors: dict[str, torch.Tensor]) -> AdapterFile:
    where = str(path / CONFIG)
    data = read_json(path / CONFIG)
    if data.get("peft_type") != "LORA":
        raise AdapterFileError(
            f"{where}: not a speechpeft adapter, and PEFT type {data.get('peft_type')!r} is not supported (only LORA)"
        )
    try:
        config = config_from_peft(data, where)
    except (KeyError, TypeError, ValueError) as e:
        raise AdapterFileError(str(e) if isinstance(e, ValueError) else f"{where}: missing or bad key {e}") from None
    suffix = ".lora_A.weight"
    targets = {}
    for key, a in tensors.items():
        if key.startswith(PEFT_PREFIX) and key.endswith(suffix):
            name = key[len(PEFT_PREFIX) : -len(suffix)]
            b = tensors.get(f"{PEFT_PREFIX}{name}.lora_B.weight")
            if b is None:
                raise AdapterFileError(f"{path / WEIGHTS}: {key!r} has no matching lora_B")
            targets[name] = (int(b.shape[0]), int(a.shape[1]))
    if not targets:
        raise AdapterFileError(f"{path / WEIGHTS}: no LoRA tensors found")
    _check_finite(tensors, str(path / WEIGHTS))
    config = dataclasses.replace(config, targets=tuple(sorted(targets)))
    return AdapterFile(path, "lora", config, targets, tensors, None)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line error naming the file and line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterFileError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AdapterFileError(f"{path}: cannot read ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise AdapterFileError(f"{path}: expected a JSON object")
    return data


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise AdapterFileError(f"{where}: the speechpeft record lacks {key!r}")
    return record[key]


def _check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise AdapterFileError(f"{where}: tensor {key!r} holds NaN or inf")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --- base-model identity ---------------------------------------------------------------------


def model_id(model: nn.Module) -> str | None:
    """The hub id or path the model was loaded from, if transformers recorded one."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    return name or None


def _base_weight(module: nn.Module) -> torch.Tensor:
    if isinstance(module, AdapterLayer):
        return module.unmerged_weight()
    return module.weight.detach()


def describe_targets(model: nn.Module, names: list[str]) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each named linear module (wrapped or not, by an adapter or an adapter bank);
    missing ones are left out."""
    out = {}
    for name in sorted(names):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        base = getattr(module, "base_layer", module)  # an adapter layer, or a bank's layer, wraps it
        if isinstance(base, (nn.Linear, nn.Conv1d)):
            out[name] = features(base)
    return out


def fingerprint(model: nn.Module, names: list[str]) -> dict[str, Any]:
    """``structure``: hash of the target names and shapes. ``probe``: mean |w| of a fixed sample
    of each target's base weight, which tells checkpoints apart where the structure cannot
    (whisper-small vs whisper-small.en, or two random inits)."""
    targets = describe_targets(model, names)
    text = "\n".join(f"{n}:{o}x{i}" for n, (o, i) in targets.items())
    probe = []
    for name in targets:
        w = _base_weight(model.get_submodule(name)).reshape(-1)
        step = max(1, w.numel() // PROBE_ELEMENTS)
        probe.append(float(f"{w[::step][:PROBE_ELEMENTS].float().abs().mean().item():.6g}"))
    return {"structure": hashlib.sha256(text.encode()).hexdigest()[:12], "probe": probe}


def _mismatch(model: nn.Module, af: AdapterFile, fp_model: dict[str, Any], why: str) -> BaseMismatchError:
    made_for = af.record.get("base_model") if af.record else None
    fp_file = af.record["fingerprint"]["structure"] if af.record else "unrecorded"
    return BaseMismatchError(
        f"adapter '{af.path}' was made for base '{made_for or 'unnamed model'}' (fingerprint {fp_file}), "
        f"but this model is '{model_id(model) or 'unnamed model'}' (fingerprint {fp_model['structure']}): {why}"
    )


def check_adapter_base(model: nn.Module, af: AdapterFile, check_weights: bool = True) -> None:
    """Raise BaseMismatchError unless ``af`` was made for ``model``: the checks ``load_adapter`` makes."""
    _check_structure(model, af)
    if check_weights and af.record is not None:
        _check_weights(model, af)


def _check_structure(model: nn.Module, af: AdapterFile) -> None:
    have = describe_targets(model, list(af.targets))
    bad = [n for n, shape in af.targets.items() if have.get(n) != shape]
    if bad:
        fp = fingerprint(model, list(af.targets))
        raise _mismatch(
            model,
            af,
            fp,
            f"{len(bad)} of {len(af.targets)} target modules are missing or shaped differently, e.g. {bad[0]!r}",
        )


def _check_weights(model: nn.Module, af: AdapterFile) -> None:
    fp = fingerprint(model, list(af.targets))
    recorded = af.record["fingerprint"].get("probe", [])  # names and shapes: see _check_structure
    same = len(fp["probe"]) == len(recorded) and all(
        math.isclose(a, b, rel_tol=PROBE_RTOL, abs_tol=1e-8) for a, b in zip(fp["probe"], recorded, strict=True)
    )
    if not same:
        raise _mismatch(model, af, fp, "same module layout, different weights (pass check_base=False to load anyway)")


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` in sorted-name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def summarize_adapter(af: AdapterFile) -> dict[str, Any]:
    """A JSON-ready description of an adapter file, for ``speechpeft adapters inspect``."""
    groups: dict[str, int] = {}
    for name in sorted(af.targets, key=_natural):
        pattern = re.sub(r"\.\d+(?=\.|$)", ".*", name)
        groups[pattern] = groups.get(pattern, 0) + 1
    record = af.record or {}
    params = dict(record.get("parameters", {}))
    params.setdefault("stored", sum(t.numel() for t in af.tensors.values()))
    params.setdefault("trainable", params["stored"])
    return {
        "path": str(af.path),
        "kind": af.kind,
        "config": config_to_dict(af.config),
        "base_model": record.get("base_model") or (None if af.record else "(unrecorded: plain PEFT file)"),
        "fingerprint": record.get("fingerprint", {}).get("structure"),
        "targets": {"count": len(af.targets), "groups": groups},
        "parameters": params,
        "details": adapter_kind(af.kind).layer_cls.summarize(af.tensors),
    }


def _natural(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
