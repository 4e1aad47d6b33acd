"""Whisper long-form decoding with openai-whisper's options: what ``generate`` is asked for, and
how its segments become ``Transcript``s with words, temperatures and the detected language (the
words themselves come from a pass of their own, ``models.whisper_align``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .decoding import DecodeOptions
from .host import Segment, Transcript, Word
from .whisper_align import Window, align
from .whisper_generate import decode_record, report_decodes

RATE = 16_000


def generate_kwargs(model: nn.Module, processor: Any, decode: DecodeOptions) -> dict[str, Any]:
    """What ``generate`` needs for ``decode`` (already ``resolved``), beyond language, task and beams.
    The default options ask for nothing: decoding stays what it was without them."""
    out: dict[str, Any] = {}
    temps = decode.temperatures
    if len(temps) > 1:
        out["temperature"] = tuple(temps)
    elif temps[0] > 0:
        out["temperature"], out["do_sample"] = temps[0], True
    for key in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
        if getattr(decode, key) is not None:
            out[key] = getattr(decode, key)
    if decode.initial_prompt:
        ids = processor.get_prompt_ids(decode.initial_prompt.strip(), return_tensors="pt")
        out["prompt_ids"] = ids.to(model.device)
        out["prompt_condition_type"] = "all-segments" if decode.condition_on_previous_text else "first-segment"
    if decode.condition_on_previous_text:
        out["condition_on_prev_tokens"] = True
    return out  # word timestamps: a pass of their own after decoding (models.whisper_align)


def language_of(model: nn.Module, token_id: int) -> str | None:
    """``<|en|>``'s id -> ``"en"``."""
    for token, i in (getattr(model.generation_config, "lang_to_id", None) or {}).items():
        if i == token_id:
            return token.strip("<|>")
    return None


def transcripts(
    result: dict[str, Any],
    tokenizer: Any,
    languages: Sequence[tuple[str | None, float | None]],
    decode: DecodeOptions,
    words: dict[tuple[int, int], tuple[Word, ...]] | None = None,
) -> list[Transcript]:
    """transformers' ``generate(..., return_segments=True)`` output as one ``Transcript`` per row.
    ``languages``: per row, the forced or detected language and (when detected) its probability;
    ``words``: per (row, segment index), from ``whisper_align.align``."""
    out = []
    for row, items in enumerate(result["segments"]):
        language, probability = languages[row]
        segments = []
        for k, seg in enumerate(items):
            text = tokenizer.decode(seg["tokens"], skip_special_tokens=True).strip()
            if not text:
                continue
            start, end = float(seg["start"]), float(seg["end"])
            mine = (words or {}).get((row, k), ())
            if mine:  # the segment spans its words, as openai-whisper's word timestamps make it
                start, end = mine[0].start, mine[-1].end
            temperature = seg.get("temperature") if decode.fallback else None
            segments.append(Segment(start, end, text, mine, temperature))
        out.append(Transcript(segments, language, probability))
    return out


def alignment_windows(
    model: nn.Module, result: dict[str, Any], tokenizer: Any, languages: Sequence[str | None], task: str
) -> list[Window]:
    """The decoded windows of every row, with the text tokens of their segments, for ``align``."""
    gc = model.generation_config
    windows: dict[tuple[int, tuple[int, int]], Window] = {}
    for row, items in enumerate(result["segments"]):
        prefix = [gc.decoder_start_token_id]
        lang_ids = getattr(gc, "lang_to_id", None) or {}
        if languages[row] and f"<|{languages[row]}|>" in lang_ids:
            prefix.append(lang_ids[f"<|{languages[row]}|>"])
        task_ids = getattr(gc, "task_to_id", None) or {}
        if task in task_ids and len(prefix) > 1:
            prefix.append(task_ids[task])
        prefix.append(gc.no_timestamps_token_id)
        for k, seg in enumerate(items):
            text = [int(t) for t in seg["tokens"] if int(t) < tokenizer.eos_token_id]
            key = (row, tuple(seg.get("window") or (0, 0)))
            if key not in windows:
                windows[key] = Window(row, key[1][0], key[1][1], prefix)
            if text:
                windows[key].segments.append((k, text))
    return list(windows.values())


@contextlib.contextmanager
def restore_attention(model: nn.Module) -> Iterator[None]:
    """transformers switches the model to eager attention for token timestamps and leaves it so;
    this puts the previous implementation back after the call."""
    config = model.config
    saved = getattr(config, "_attn_implementation", None)
    try:
        yield
    finally:
        if saved is not None and config._attn_implementation != saved:
            config._attn_implementation = saved


@contextlib.contextmanager
def seeded(decode: DecodeOptions) -> Iterator[None]:
    """Sampling (a temperature above 0) draws from torch's RNG: seed it per call, so a batch
    decodes the same way every time; the caller's RNG state is left as it was."""
    if not decode.samples:
        yield
        return
    state = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(decode.seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def decode_long(
    host: Any,
    arrays: list[np.ndarray],
    kwargs: dict[str, Any],
    task: str,
    progress: Callable[[float], None] | None,
    adapter_ids: Sequence[int] | None,
    decode: DecodeOptions,
) -> list[Transcript]:
    """``WhisperHost.transcribe_long`` once its arguments are checked: features, one ``generate``
    for the batch, the detected languages, and the word-alignment pass when asked for."""
    fe = host._processor().feature_extractor
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    window = int(round(host.window_seconds * RATE))
    common = {"sampling_rate": RATE, "return_tensors": "pt", "return_attention_mask": True}
    if max(len(a) for a in arrays) > window:  # long-form: no truncation, padded to the longest
        out = fe(arrays, truncation=False, padding="longest", **common)
    else:  # short-form: every input padded to the window, as in training
        out = fe(arrays, padding="max_length", max_length=window, **common)
    monitor = None
    if progress is not None:
        monitor = lambda p: progress(float(p[:, 0].sum()) / 100)  # noqa: E731
    report_decodes(host.model)
    extra = generate_kwargs(host.model, host._processor(), decode)
    features = out.input_features.to(host.device, host.dtype)
    was_training = host.model.training
    host.model.eval()
    try:
        with (
            host._adapters_for(adapter_ids, 0, len(arrays)),
            host._condition(kwargs),
            decode_record() as record,
            restore_attention(host.model),
            seeded(decode),
        ):
            result = host.model.generate(
                input_features=features,
                attention_mask=out.attention_mask.to(host.device),
                return_timestamps=True,
                return_segments=True,
                monitor_progress=monitor,
                **{**kwargs, **extra},
            )
    finally:
        host.model.train(was_training)
    if "language" in kwargs:
        languages = [(kwargs["language"], None)] * len(arrays)
    elif record.languages is not None:
        languages = [(language_of(host.model, i), round(p, 4)) for i, p in record.languages]
    else:  # an English-only model: nothing to detect
        languages = [(None, None)] * len(arrays)
    tok = host._processor().tokenizer
    words = None
    if decode.word_timestamps:
        windows = alignment_windows(host.model, result, tok, [lang for lang, _ in languages], task)
        ids = [adapter_ids[w.row] for w in windows if w.tokens] if adapter_ids is not None else None
        host.model.eval()
        try:
            with host._adapters_for(ids, 0, len(windows)), host._condition(kwargs), restore_attention(host.model):
                host.model.config._attn_implementation = "eager"  # attention weights are what it reads
                words = align(host.model, tok, features, windows, int(round(host.window_seconds * 100)))
        finally:
            host.model.train(was_training)
    return transcripts(result, tok, languages, decode, words)
