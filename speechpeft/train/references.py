"""Clone references from untranscribed recordings: Whisper transcribes and cuts them into sentences.

A user who records 30 s into a microphone gives one file and no text, but ``clone`` needs at
least two transcribed references (one is held out). Whisper's timed segments supply both: each
recording is cut at segment boundaries into clips of at least ``min_seconds``, each with its
segment text. The clips are written as 16-bit WAV at the voice's rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data import load_audio
from ..errors import SpeechPeftError
from ..fs import atomic_write
from ..models import ASRHost, Segment
from .clone import MIN_SECONDS, Reference

ASR_RATE = 16_000


def transcribe_references(
    recordings: Sequence[Path],
    whisper: ASRHost,
    folder: Path,
    rate: int,
    language: str | None = None,
    min_seconds: float = 1.5,
    names: Sequence[str] | None = None,
) -> list[Reference]:
    """Cut each recording into transcribed clips in ``folder``; ``names`` label them in messages.

    Raises:
        SpeechPeftError: a recording cannot be read, or Whisper hears no speech in it.
    """
    if min_seconds < MIN_SECONDS:
        raise SpeechPeftError(f"min_seconds must be >= {MIN_SECONDS:g}, got {min_seconds:g}")
    names = list(names) if names is not None else [str(p) for p in recordings]
    folder.mkdir(parents=True, exist_ok=True)
    refs: list[Reference] = []
    for n, (path, name) in enumerate(zip(recordings, names, strict=True)):
        audio = load_audio(path, rate, name)
        segments = whisper.transcribe_segments([load_audio(path, ASR_RATE, name)], language=language)[0]
        clips = split_at_segments(audio, rate, segments, min_seconds)
        if not clips:
            raise SpeechPeftError(f"{name}: Whisper heard no speech in it")
        for i, (clip, text) in enumerate(clips):
            target = folder / f"rec{n:02d}_{i:03d}.wav"
            atomic_write(target, lambda tmp, c=clip: sf.write(tmp, c, rate, subtype="PCM_16", format="WAV"))
            refs.append(Reference(target, text, f"{name} [{len(clip) / rate:.1f} s clip {i + 1}]"))
    return refs


def split_at_segments(
    audio: np.ndarray, rate: int, segments: Sequence[Segment], min_seconds: float
) -> list[tuple[np.ndarray, str]]:
    """Clips of ``audio`` cut at segment boundaries, each at least ``min_seconds`` long, with their text.

    Consecutive segments are joined until a clip is long enough; a short remainder joins the
    last clip. Segments without text are skipped.
    """
    spans: list[list] = []  # [start, end, texts]
    for s in segments:
        text = s.text.strip()
        if not text:
            continue
        start, end = max(0.0, s.start), min(len(audio) / rate, s.end)
        if end <= start:
            continue
        if spans and spans[-1][1] - spans[-1][0] < min_seconds:
            spans[-1][1] = end
            spans[-1][2].append(text)
        else:
            spans.append([start, end, [text]])
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_seconds:
        last = spans.pop()
        spans[-1][1] = last[1]
        spans[-1][2] += last[2]
    clips = []
    for start, end, texts in spans:
        clip = audio[int(start * rate) : int(round(end * rate))]
        if len(clip) >= min_seconds * rate:
            clips.append((clip, " ".join(texts)))
    return clips
