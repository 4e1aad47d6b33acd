"""Audio loading: soundfile decode, mono downmix, soxr resampling, and loud failure on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import SpeechPeftError


class AudioError(SpeechPeftError):
    """An audio file is missing, unreadable, empty or holds non-finite samples."""


def load_audio(
    path: str | Path, sampling_rate: int = 16_000, where: str = "", max_seconds: float | None = None
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sampling_rate`` Hz.

    ``where`` (e.g. ``"train.jsonl:12"``) prefixes every error so the user can find the entry.

    Raises:
        AudioError: the file is missing, a directory, unreadable or in an unknown format,
            empty, holds NaN/inf samples, or lasts longer than ``max_seconds``.
    """
    path, prefix = _existing(path, where)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{prefix}cannot decode '{path}' ({_first_line(e)})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{prefix}audio file '{path}' is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{prefix}audio file '{path}' holds NaN or inf samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]  # (frames,)
    if max_seconds is not None and mono.shape[0] > max_seconds * rate:
        raise AudioError(
            f"{prefix}'{path}' lasts {mono.shape[0] / rate:.2f} s, longer than the {max_seconds:g} s allowed"
        )
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_audio_file(path: str | Path, where: str = "") -> None:
    """Read only the header: cheap enough to check a whole corpus before training starts.

    Raises:
        AudioError: the file is missing, a directory, unreadable or empty.
    """
    path, prefix = _existing(path, where)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{prefix}cannot decode '{path}' ({_first_line(e)})") from None
    if info.frames == 0:
        raise AudioError(f"{prefix}audio file '{path}' is empty (0 samples)")


def _existing(path: str | Path, where: str) -> tuple[Path, str]:
    path, prefix = Path(path), (f"{where}: " if where else "")
    if not path.exists():
        raise AudioError(f"{prefix}audio file '{path}' does not exist")
    if path.is_dir():
        raise AudioError(f"{prefix}'{path}' is a directory, not an audio file")
    return path, prefix


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
