"""Whisper long-form decoding with openai-whisper's options: what ``generate`` is asked for, and
how its segments become ``Transcript``s with words, temperatures and the detected language.

Word timestamps come from transformers' cross-attention alignment (dynamic time warping over the
``generation_config.alignment_heads``); a checkpoint without that list gets openai-whisper's
default, every head of the decoder's second half (``default_alignment_heads``). A word starts
where its first token is aligned and ends where the token after its last one is (the next word's
first token, or the segment's closing timestamp token), as openai-whisper's ``add_word_timestamps``
does, and a segment with words spans them. Tokens are grouped into words by transformers' own
Whisper rules (spaces; characters for Chinese, Japanese, Thai, Lao, Burmese and Cantonese;
punctuation joined to its word).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .decoding import DecodeOptions
from .host import Segment, Transcript, Word


def default_alignment_heads(model: nn.Module) -> list[list[int]]:
    """openai-whisper's alignment heads for a model that ships none: every cross-attention head
    of the second half of the decoder layers."""
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    return [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]


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
    if decode.word_timestamps:
        if not getattr(model.generation_config, "alignment_heads", None):
            model.generation_config.alignment_heads = default_alignment_heads(model)
        out["return_token_timestamps"] = True
    return out


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
) -> list[Transcript]:
    """transformers' ``generate(..., return_segments=True)`` output as one ``Transcript`` per row.
    ``languages``: per row, the forced or detected language and (when detected) its probability."""
    out = []
    for row, items in enumerate(result["segments"]):
        language, probability = languages[row]
        segments = []
        for seg in items:
            text = tokenizer.decode(seg["tokens"], skip_special_tokens=True).strip()
            if not text:
                continue
            start, end = float(seg["start"]), float(seg["end"])
            words = _words(seg, tokenizer, language) if decode.word_timestamps else ()
            if words:  # the segment spans its words, as openai-whisper's word timestamps make it
                start, end = words[0].start, words[-1].end
            temperature = seg.get("temperature") if decode.fallback else None
            segments.append(Segment(start, end, text, words, temperature))
        out.append(Transcript(segments, language, probability))
    return out


def _words(seg: dict[str, Any], tokenizer: Any, language: str | None) -> tuple[Word, ...]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, _combine_tokens_into_words

    tokens = [int(t) for t in seg["tokens"]]
    times = [float(t) for t in seg["token_timestamps"]]
    text_at = [i for i, t in enumerate(tokens) if t < tokenizer.eos_token_id]  # positions of text tokens
    if not text_at:
        return ()
    name = LANGUAGES.get(language or "", language)
    words, _, groups = _combine_tokens_into_words(tokenizer, [tokens[i] for i in text_at], name)
    out = []
    for word, group in zip(words, groups, strict=True):
        first, last = text_at[group[0]], text_at[group[-1]]
        start = times[first]
        end = times[last + 1] if last + 1 < len(times) else float(seg["end"])
        out.append(Word(round(start, 3), round(max(end, start), 3), word))
    return tuple(out)


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
