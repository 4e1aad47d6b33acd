"""Word edges at pauses, from a voice activity detector.

Cross-attention alignment (``models.whisper_align``) places a word by where the decoder looked,
and next to a pause it often lets the word before it run on into the silence, or start the word
after it early; openai-whisper patches this with duration caps and notes that a VAD-based
segmentation should replace them. Here silero-vad's speech regions do: a word takes the region
it overlaps most, and its edges are clipped to that region, so no word starts or ends inside a
detected pause. The first word of a region may also start earlier, and its last word end later,
by at most ``reach`` seconds, to meet the region's edge: the speech between the aligned edge and
the pause can belong to no other word. Words that overlap no region (text in what the VAD heard
as silence) keep their aligned times.

The detector's settings and ``reach`` were chosen on SYNTHETIC festival speech joined by pauses,
then checked on the real LibriVox joins (``bench/word_timestamps.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.vad import VAD_RATE, speech_regions
from ..models import Segment, Word


@dataclass(frozen=True)
class EdgeRule:
    threshold: float = 0.5  # silero-vad speech probability (silero's default)
    pad_ms: int = 30  # silero-vad's padding around each speech region (silero's default)
    reach: float = 0.5  # seconds a region's first/last word may move outwards to meet its edge

    def regions(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Speech regions of ``audio`` (16 kHz mono) in seconds."""
        found = speech_regions(audio, VAD_RATE, threshold=self.threshold, pad_ms=self.pad_ms)
        return [(a / VAD_RATE, b / VAD_RATE) for a, b in found]


def snap_words(segments: Sequence[Segment], regions: Sequence[tuple[float, float]], reach: float) -> list[Segment]:
    """``segments`` with their words' edges moved to the speech ``regions`` (seconds, in order);
    each segment then spans its words. Segments without words are returned unchanged."""
    words = [[w.start, w.end] for s in segments for w in s.words]
    home = [_region_of(a, b, regions) for a, b in words]
    for i, ((a, b), r) in enumerate(zip(words, home, strict=True)):
        if r is None:
            continue
        # Only a region's first and last words can cross its edges (words are in order, and a word
        # overlaps its region); they meet them. Other regions' words, and words of none, lie outside it.
        start, end = regions[r]
        if (i == 0 or home[i - 1] != r) and a - start <= reach:
            a = start
        if (i + 1 == len(words) or home[i + 1] != r) and end - b <= reach:
            b = end
        words[i] = [a, b]
    out, k = [], 0
    for s in segments:
        if not s.words:
            out.append(s)
            continue
        mine = zip(words[k : k + len(s.words)], s.words, strict=True)
        moved = tuple(Word(round(a, 3), round(b, 3), w.word) for (a, b), w in mine)
        k += len(s.words)
        out.append(s._replace(start=moved[0].start, end=moved[-1].end, words=moved))
    return out


def _region_of(a: float, b: float, regions: Sequence[tuple[float, float]]) -> int | None:
    """The region that overlaps [a, b] most (a zero-length word: the region holding it), or None."""
    best, most = None, 0.0
    for r, (start, end) in enumerate(regions):
        if start > b:
            break
        if a == b and start <= a <= end:
            return r
        overlap = min(b, end) - max(a, start)
        if overlap > most:
            best, most = r, overlap
    return best
