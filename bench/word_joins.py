"""Speech clips joined by pauses of known length: where each clip's speech starts and ends is known,
so the words on either side of a join have a true edge to be measured against.

Used by ``bench/word_timestamps.py`` (its dev set: SYNTHETIC festival speech; its test set: the
real LibriVox clips) and by ``tests/integration/test_transcribe_options_real.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RATE = 16_000
TOLERANCE = 0.2  # seconds: issue 19's bar for a word edge at a join


def speech_span(audio: np.ndarray, top_db: float = 20.0) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within ``top_db`` of the clip's loudest: where
    its speech begins and ends (recordings carry a little room tone at their edges)."""
    frame = RATE // 100
    rms = np.array([np.sqrt(np.mean(audio[i : i + frame] ** 2)) for i in range(0, len(audio) - frame, frame)])
    loud = np.where(20 * np.log10(rms / rms.max() + 1e-12) > -top_db)[0]
    return loud[0] * frame, (loud[-1] + 1) * frame


def join(clips: Sequence[np.ndarray], pauses: Sequence[float], seed: int = 0):
    """The clips (16 kHz), each cut to its speech, joined by near-silent pauses of ``pauses``
    seconds (one fewer than clips). Returns (audio, each clip's (start, end) in seconds)."""
    if len(pauses) != len(clips) - 1:
        raise ValueError(f"{len(clips)} clips need {len(clips) - 1} pauses, got {len(pauses)}")
    rng = np.random.default_rng(seed)
    pieces, spans, at = [], [], 0
    for i, clip in enumerate(clips):
        a, b = speech_span(clip)
        pieces.append(clip[a:b])
        spans.append((at / RATE, (at + b - a) / RATE))
        at += b - a
        if i < len(pauses):
            pieces.append(rng.normal(0, 1e-4, int(pauses[i] * RATE)).astype(np.float32))
            at += int(pauses[i] * RATE)
    return np.concatenate(pieces).astype(np.float32), spans


def join_errors(words: Sequence, spans: Sequence[tuple[float, float]]) -> list[float]:
    """Signed errors (s) of the first word's start and the last word's end of every clip. A word
    belongs to the clip whose span holds its middle (or lies nearest to it). ``words``: objects
    or dicts with start and end."""

    def edges(w):
        return (w["start"], w["end"]) if isinstance(w, dict) else (w.start, w.end)

    def clip_of(w):
        mid = sum(edges(w)) / 2
        return min(range(len(spans)), key=lambda k: max(spans[k][0] - mid, mid - spans[k][1], 0))

    by_clip: dict[int, list] = {}
    for w in words:
        by_clip.setdefault(clip_of(w), []).append(edges(w))
    if sorted(by_clip) != list(range(len(spans))):
        missing = sorted(set(range(len(spans))) - set(by_clip))
        raise ValueError(f"no words for clip(s) {missing}")
    errors = []
    for k, (start, end) in enumerate(spans):
        errors += [float(by_clip[k][0][0] - start), float(by_clip[k][-1][1] - end)]
    return errors
