"""Which engine decodes a `speechpeft transcribe` request (``--engine torch|ct2|auto``), and the
adapter facts that choice and the mixed-adapter bank both read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..adapters import adapter_kind, read_adapter
from ..errors import SpeechPeftError
from ..models import ASRHost
from . import ct2_engine

if TYPE_CHECKING:
    from .transcribe import TranscribeOptions


def pick_engine(opts: TranscribeOptions, groups, host: ASRHost | None) -> str:
    """``opts.engine``, with ``auto`` resolved: ct2 where it can serve the request and is
    installed (a Whisper model on the CPU, one adapter or none, mergeable into the weights,
    trained with the full window), torch otherwise, and torch for a loaded ``host`` handed in.

    Raises:
        SpeechPeftError: ``--engine ct2`` for a request it cannot serve, or without its packages.
    """
    if opts.engine == "torch" or (opts.engine == "auto" and host is not None):
        return "torch"  # a caller that hands in a loaded model (a server, the demo) decodes with it
    why_not = _ct2_obstacle(opts, groups, host, asked=opts.engine == "ct2")
    if opts.engine == "ct2":
        ct2_engine.require()
        if why_not:
            raise SpeechPeftError(f"--engine ct2 {why_not}")
        return "ct2"
    return "torch" if why_not or len(groups) > 1 or not ct2_engine.available() else "ct2"


def _ct2_obstacle(opts: TranscribeOptions, groups, host: ASRHost | None, asked: bool) -> str | None:
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not str(device).startswith("cpu"):
        return "runs on the CPU; on a GPU use --engine torch"
    if opts.window_seconds is not None and opts.window_seconds < ct2_engine.WINDOW_SECONDS:
        return "decodes 30 s windows; --window-seconds needs --engine torch"
    if host is not None:
        config = host.model.config
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(opts.model)
        except (OSError, ValueError):
            return None  # loading the model says what is wrong with it
    if config.model_type != "whisper":
        return f"is for Whisper models; '{opts.model}' is a {config.model_type} model"
    window = config.max_source_positions / 50
    if window != ct2_engine.WINDOW_SECONDS:
        return f"decodes 30 s windows (faster-whisper); '{opts.model}' has a {window:g} s window"
    for adapter, af in readable_adapters(groups):
        if not low_rank(af):
            return f"needs an adapter that merges into the weights; '{adapter}' does not ({af.kind})"
        recorded = ((af.record or {}).get("host") or {}).get("window_seconds")
        if not asked and recorded and recorded < ct2_engine.WINDOW_SECONDS:
            return "is slower than torch's shorter window for this adapter"  # auto only: ct2 would run 30 s
    return None


def readable_adapters(groups):
    """(path, AdapterFile) of each group's adapter that reads; one that does not fails when it is loaded."""
    for adapter, _ in groups:
        if adapter is not None:
            try:
                yield adapter, read_adapter(adapter)
            except SpeechPeftError:
                continue


def low_rank(af) -> bool:
    """A low-rank update of the weights and nothing trained whole (no CTC head of its own)."""
    return not af.modules and adapter_kind(af.kind).layer_cls.as_lora(af.tensors, af.targets, af.config) is not None
