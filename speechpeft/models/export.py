"""`speechpeft export`: an adapter as a PEFT LoRA, a merged transformers model, or a CTranslate2
model for faster-whisper. Any ASR host's adapter exports as PEFT or merged; a CTC adapter's new
head and vocabulary go with it (PEFT's ``modules_to_save``, and the tokenizer files).

Whatever the encoder window an adapter was trained with, exports keep Whisper's standard 30 s
window so that every Whisper runtime loads them; measure the merged model with
`speechpeft evaluate --window-seconds 30` when the adapter was trained with a shorter one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file

from ..adapters import LoRAConfig, adapter_condition, adapter_kind, read_adapter, unload_adapter
from ..adapters.io import CONFIG, WEIGHTS
from ..adapters.lora import PEFT_PREFIX, peft_config
from ..errors import SpeechPeftError
from ..fs import atomic_dir
from .host import load_host, model_type_of

# what a tokenizer / feature extractor leaves beside an adapter (a CTC adapter's new vocabulary)
COMPANIONS = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "preprocessor_config.json")  # fmt: skip

FORMATS = ("peft", "hf", "ct2")


def export(
    adapter: str | Path,
    out: str | Path,
    fmt: str = "peft",
    model: str | None = None,
    overwrite: bool = False,
    quantization: str | None = None,
    language: str | None = None,
) -> Path:
    """Write ``adapter`` to directory ``out`` in format ``fmt``; the directory appears whole or not at all.

    ``peft``: a PEFT LoRA directory (S2-LoRA is converted exactly to LoRA). ``hf``: the base
    model with the adapter merged, as a transformers directory. ``ct2``: that merged model
    converted by CTranslate2's own converter (``quantization`` e.g. ``int8``), for faster-whisper.
    ``model`` overrides the base recorded in the adapter. ``language`` picks what an adapter that
    assembles a model per language (Master-ASR) merges; other kinds do not depend on it.

    Raises:
        SpeechPeftError: unknown format, existing output without ``overwrite``, no recorded
            base, a missing ctranslate2, or any adapter-file error.
    """
    if fmt not in FORMATS:
        raise SpeechPeftError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpeechPeftError(f"'{out}' is a file; an export is written as a folder")
    if out.exists() and not overwrite:
        raise SpeechPeftError(f"'{out}' exists; pass --overwrite to replace it")
    af = read_adapter(adapter)
    base = model or (af.record or {}).get("base_model")
    if fmt != "peft" and not base:
        raise SpeechPeftError(f"'{adapter}' records no base model; pass --model")
    if fmt == "ct2" and model_type_of(base) != "whisper":
        raise SpeechPeftError(f"--format ct2 is for Whisper (faster-whisper); '{base}' is a {model_type_of(base)} "
                              "model: export --merge (hf) or peft")  # fmt: skip
    write: Callable[[Path], None] = {
        "peft": lambda tmp: _write_peft(af, tmp),
        "hf": lambda tmp: _write_merged(adapter, base, tmp, language),
        "ct2": lambda tmp: write_ct2(adapter, base, tmp, quantization, language),
    }[fmt]
    atomic_dir(out, write)
    return out


def _write_peft(af, tmp: Path) -> None:
    base = (af.record or {}).get("base_model")
    lora = adapter_kind(af.kind).layer_cls.as_lora(af.tensors, af.targets, af.config)
    if lora is None:
        raise SpeechPeftError(f"adapter kind {af.kind!r} has no PEFT form; use --merge")
    tensors, rank, scale = lora
    if rank == 0:
        raise SpeechPeftError(f"'{af.path}': every rank is zero; there is nothing to export")
    whole = {PEFT_PREFIX + k: v for k, v in af.modules.items()}  # e.g. a new CTC head: PEFT's modules_to_save
    save_file({k: v.contiguous() for k, v in {**tensors, **whole}.items()}, str(tmp / WEIGHTS),
              metadata={"format": "pt"})  # fmt: skip
    dropout = getattr(af.config, "dropout", 0.0)
    config = peft_config(LoRAConfig(rank=rank, alpha=scale * rank, dropout=dropout), list(af.targets), base)
    if af.modules:
        config["modules_to_save"] = sorted({k.rsplit(".", 1)[0] for k in af.modules})
    (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in COMPANIONS:  # the vocabulary the head was sized to
        if (af.path / name).is_file():
            shutil.copyfile(af.path / name, tmp / name)


def _write_merged(adapter: str | Path | None, base: str, tmp: Path, language: str | None = None) -> None:
    host = load_host(base, device="cpu")
    if adapter is not None:  # None: the bare model (the ct2 engine converts it too)
        host.attach_adapter(adapter)  # a CTC adapter brings its vocabulary and head
        with adapter_condition(host.model, language=language):  # Master-ASR: the language to assemble
            unload_adapter(host.model, merge=True)
    host.model.save_pretrained(tmp)
    host.save_processor(tmp)
    note = {"base_model": base, "adapter": None if adapter is None else str(adapter), "merged": True,
            "window_seconds": host.window_seconds}  # fmt: skip
    if language:
        note["language"] = language
    (tmp / "speechpeft_export.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def write_ct2(
    adapter: str | Path | None, base: str, tmp: Path, quantization: str | None, language: str | None = None
) -> None:
    """Write into the empty folder ``tmp`` the CTranslate2 model of ``adapter`` merged into ``base``
    (None: the bare model)."""
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError:
        raise SpeechPeftError("--format ct2 needs ctranslate2: pip install ctranslate2") from None
    with tempfile.TemporaryDirectory(dir=tmp.parent) as merged:
        _write_merged(adapter, base, Path(merged), language)
        copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (Path(merged) / f).exists()]
        TransformersConverter(merged, copy_files=copy).convert(str(tmp), quantization=quantization, force=True)
