"""Word timestamps for Whisper, the way openai-whisper finds them: after decoding, one more
decoder pass per window over its text alone, then dynamic time warping of the cross-attention.

For each decoded window the decoder reads ``<|startoftranscript|><|lang|><|task|><|notimestamps|>``,
the window's text tokens and ``<|endoftext|>`` (no timestamp tokens: they pull the alignment
towards the pauses they mark). The attention weights of the alignment heads
(``generation_config.alignment_heads``; a checkpoint without them gets openai-whisper's default,
every head of the decoder's second half) are normalised over the tokens, median-filtered along
time (width 7) and averaged over heads; a monotonic DTW path through them says at which encoder
frame (20 ms) each token begins. A word starts where its first token begins and ends where the
next word's (or end-of-text) begins; as openai-whisper does, a segment's first and last words may
last at most twice the median word (the median at most 0.7 s), so that they take in no silence.

transformers can return token timestamps from generate itself, but from cross-attention read
while timestamp tokens are in the sequence, which on real speech put the word ends next to a
pause up to half a second off (measured on tests/data/librivox joined with pauses), and its
temperature-fallback retries look up other rows' frame counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .host import Word

FRAMES_PER_POSITION = 2  # mel frames per encoder position
SECONDS_PER_POSITION = 0.02
MEDIAN_WIDTH = 7


def default_alignment_heads(model: nn.Module) -> list[list[int]]:
    """openai-whisper's alignment heads for a model that ships none: every cross-attention head
    of the second half of the decoder layers."""
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    return [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]


def alignment_heads(model: nn.Module) -> list[list[int]]:
    heads = getattr(model.generation_config, "alignment_heads", None)
    return [list(h) for h in heads] if heads else default_alignment_heads(model)


class Window:
    """One decoded window of one file: where it lies, and the text tokens of its segments."""

    def __init__(self, row: int, start_frame: int, frames: int, prefix: list[int]):
        self.row, self.start_frame, self.frames, self.prefix = row, start_frame, frames, prefix
        self.segments: list[tuple[int, list[int]]] = []  # (segment index in its row, text tokens)

    @property
    def tokens(self) -> list[int]:
        return [t for _, toks in self.segments for t in toks]


def align(
    model: nn.Module,
    tokenizer: Any,
    features: torch.Tensor,
    windows: Sequence[Window],
    window_frames: int,
) -> dict[tuple[int, int], tuple[Word, ...]]:
    """Words for every (row, segment index) of ``windows``. ``features``: the log-mel input of the
    whole batch (B, mels, frames); ``window_frames``: the encoder's input length in mel frames.
    The model is called once, on every window at once (run it inside the adapters' context)."""
    windows = [w for w in windows if w.tokens]
    if not windows:
        return {}
    eot = tokenizer.eos_token_id
    inputs = torch.stack([_window_input(features[w.row], w, window_frames) for w in windows])
    sequences = [w.prefix + w.tokens + [eot] for w in windows]
    width = max(map(len, sequences))
    ids = torch.full((len(windows), width), eot, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
    with torch.no_grad():
        out = model(input_features=inputs, decoder_input_ids=ids.to(inputs.device), output_attentions=True,
                    use_cache=False)  # fmt: skip
    heads = alignment_heads(model)
    found: dict[tuple[int, int], tuple[Word, ...]] = {}
    for i, w in enumerate(windows):
        weights = torch.stack([out.cross_attentions[layer][i, head] for layer, head in heads])  # (H, T, S)
        starts = _token_starts(weights[:, : len(sequences[i]), : w.frames // FRAMES_PER_POSITION], len(w.prefix))
        offset = w.start_frame / (FRAMES_PER_POSITION / SECONDS_PER_POSITION)
        found.update(_words(tokenizer, w, starts, offset))
    return found


def _window_input(row_features: torch.Tensor, w: Window, window_frames: int) -> torch.Tensor:
    piece = row_features[:, w.start_frame : w.start_frame + w.frames]
    if piece.shape[-1] < window_frames:  # as transformers' generate pads a window
        piece = torch.nn.functional.pad(piece, (0, window_frames - piece.shape[-1]))
    return piece


def _token_starts(weights: torch.Tensor, prefix: int) -> np.ndarray:
    """Seconds (from the window's start) at which each text token, and end-of-text, begins."""
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping, _median_filter

    weights = weights.float()
    # the softmax over the audio frames alone (openai-whisper's, on the logits of the cropped window)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-10)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = _median_filter((weights - mean) / (std + 1e-10), MEDIAN_WIDTH)
    matrix = weights.mean(0)[prefix - 1 : -1]  # the rows that predict text[0], ..., end-of-text
    text_at, time_at = _dynamic_time_warping(-matrix.double().cpu().numpy())
    jumps = np.pad(np.diff(text_at), (1, 0), constant_values=1).astype(bool)
    return time_at[jumps] * SECONDS_PER_POSITION


def _words(tokenizer: Any, w: Window, starts: np.ndarray, offset: float) -> dict[tuple[int, int], tuple[Word, ...]]:
    """Each segment's tokens grouped into words (per segment: a word never crosses one); a word
    ends where the window's next token begins (the next word's, the next segment's, or end-of-text)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, _combine_tokens_into_words

    code = tokenizer.decode([w.prefix[1]]).strip("<|>") if len(w.prefix) > 2 else None
    language = LANGUAGES.get(code or "", code)
    per_segment: dict[int, list[list]] = {}
    at = 0  # index of the segment's first token among the window's
    for seg, tokens in w.segments:
        words, _, groups = _combine_tokens_into_words(tokenizer, tokens, language)
        for word, group in zip(words, groups, strict=True):
            start, end = float(starts[at + group[0]]), float(starts[min(at + group[-1] + 1, len(starts) - 1)])
            per_segment.setdefault(seg, []).append([start + offset, max(end, start) + offset, word])
        at += len(tokens)
    durations = [b - a for items in per_segment.values() for a, b, _ in items if b > a]
    longest = 2 * min(0.7, float(np.median(durations))) if durations else None
    out = {}
    for seg, items in per_segment.items():
        if longest is not None:  # a segment's edge words may not take in the silence beside them
            if items[0][1] - items[0][0] > longest:
                items[0][0] = items[0][1] - longest
            if items[-1][1] - items[-1][0] > longest:
                items[-1][1] = items[-1][0] + longest
        out[(w.row, seg)] = tuple(Word(round(a, 3), round(b, 3), text) for a, b, text in items)
    return out
