"""Voice activity detection with silero-vad, and chunking of long audio at speech boundaries."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from ..errors import SpeechPeftError

VAD_RATE = 16_000


@functools.lru_cache(maxsize=1)
def _silero():
    try:
        threads = torch.get_num_threads()
        from silero_vad import get_speech_timestamps, load_silero_vad
    except ImportError:
        raise SpeechPeftError("silero-vad is missing (speechpeft needs it): pip install 'silero-vad>=5.1'") from None
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread, process-wide
    with warnings.catch_warnings():  # silero-vad's loader uses APIs its dependencies deprecate
        warnings.simplefilter("ignore", DeprecationWarning)
        model = load_silero_vad()
    return model, get_speech_timestamps


def speech_regions(
    audio: np.ndarray, sampling_rate: int = VAD_RATE, threshold: float = 0.5, pad_ms: int = 30
) -> list[tuple[int, int]]:
    """(start, end) sample indices of the speech in ``audio`` (mono, 16 kHz), in order.
    ``threshold`` (speech probability) and ``pad_ms`` (padding around each region) are
    silero-vad's own, defaults included.

    Raises:
        SpeechPeftError: silero-vad is not installed, or the rate is not 16 kHz.
    """
    if sampling_rate != VAD_RATE:
        raise SpeechPeftError(f"VAD expects {VAD_RATE} Hz audio, got {sampling_rate} Hz")
    model, timestamps = _silero()
    model.reset_states()
    found = timestamps(
        torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        model,
        sampling_rate=VAD_RATE,
        threshold=threshold,
        speech_pad_ms=pad_ms,
    )
    return [(int(r["start"]), int(r["end"])) for r in found]


def merge_regions(regions: list[tuple[int, int]], max_samples: int, max_gap: int) -> list[tuple[int, int]]:
    """Greedily join neighbouring speech regions into chunks of at most ``max_samples``.

    Two regions join when the silence between them is at most ``max_gap`` samples and the
    joined span still fits; a single region longer than ``max_samples`` is cut into equal
    pieces (silero marks such stretches rarely: speech without a pause longer than the window).
    """
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        n = -(-(end - start) // max_samples)  # ceil
        step = -(-(end - start) // n)
        pieces += [(s, min(end, s + step)) for s in range(start, end, step)]
    chunks: list[tuple[int, int]] = []
    for start, end in pieces:
        if chunks and start - chunks[-1][1] <= max_gap and end - chunks[-1][0] <= max_samples:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, end))
    return chunks


def vad_chunks(audio: np.ndarray, window_seconds: float, sampling_rate: int = VAD_RATE) -> list[tuple[int, int]]:
    """Chunks of ``audio`` (sample ranges, each ≤ ``window_seconds``) that hold its speech.

    Silence longer than 2 s between speech regions is dropped from the chunks, so Whisper never
    decodes long stretches of silence (where it tends to invent text).
    """
    regions = speech_regions(audio, sampling_rate)
    return merge_regions(regions, int(window_seconds * sampling_rate), max_gap=2 * sampling_rate)
