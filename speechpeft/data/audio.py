"""Audio loading: soundfile decode (PyAV for m4a/aac/opus...), mono downmix, soxr resampling,
and loud failure on bad input."""

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
    if max_seconds is not None:  # a two-hour file is refused from its header, not after decoding it
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError):
            pass
        else:
            if info.samplerate and info.frames > max_seconds * info.samplerate:
                seconds = info.frames / info.samplerate
                raise AudioError(f"{prefix}'{path}' lasts {seconds:.2f} s, longer than the {max_seconds:g} s allowed")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        audio, rate = _decode_other(path, prefix, _first_line(e))
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


# Containers and codecs libsndfile does not read (it reads wav, flac, ogg/vorbis/opus, mp3, aiff...).
AV_FORMATS = {".m4a", ".aac", ".mp4", ".m4b", ".webm", ".mkv", ".mov", ".wma", ".amr", ".3gp", ".ac3", ".opus"}


def _decode_other(path: Path, prefix: str, why: str) -> tuple[np.ndarray, int]:
    """Decode what soundfile cannot through PyAV (FFmpeg), when it is installed."""
    try:
        import av
    except ImportError:
        hint = ""
        if path.suffix.lower() in AV_FORMATS:
            hint = f"; {path.suffix} needs PyAV: pip install 'speechpeft[av]'"
        raise AudioError(f"{prefix}cannot decode '{path}' ({why}{hint})") from None
    try:
        with av.open(str(path)) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioError(f"{prefix}cannot decode '{path}' (no audio stream; soundfile: {why})")
            rate = streams[0].rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)  # planar -> packed mono
            chunks = [
                f.to_ndarray().reshape(-1) for frame in container.decode(streams[0]) for f in resampler.resample(frame)
            ]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush
    except av.FFmpegError as e:
        raise AudioError(f"{prefix}cannot decode '{path}' ({why}; PyAV: {_first_line(e)})") from None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio[:, None], rate  # (frames, 1)


def check_audio_file(path: str | Path, where: str = "", max_seconds: float | None = None) -> None:
    """Read only the header: cheap enough to check a whole corpus before training starts.

    Raises:
        AudioError: the file is missing, a directory, unreadable, empty or longer than ``max_seconds``.
    """
    path, prefix = _existing(path, where)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{prefix}cannot decode '{path}' ({_first_line(e)})") from None
    if info.frames == 0:
        raise AudioError(f"{prefix}audio file '{path}' is empty (0 samples)")
    if max_seconds is not None and info.frames > max_seconds * info.samplerate:
        raise AudioError(
            f"{prefix}'{path}' lasts {info.frames / info.samplerate:.2f} s, longer than the {max_seconds:g} s allowed"
        )


def audio_duration(path: str | Path, where: str = "") -> float:
    """Seconds of audio in ``path``, from the header when soundfile reads the format.

    Formats only PyAV reads are decoded in full to be measured.

    Raises:
        AudioError: as ``load_audio``.
    """
    path, prefix = _existing(path, where)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        audio, rate = _decode_other(path, prefix, _first_line(e))
        frames = audio.shape[0]
    else:
        frames, rate = info.frames, info.samplerate
    if frames == 0:
        raise AudioError(f"{prefix}audio file '{path}' is empty (0 samples)")
    return frames / rate


def _existing(path: str | Path, where: str) -> tuple[Path, str]:
    path, prefix = Path(path), (f"{where}: " if where else "")
    if not path.exists():
        raise AudioError(f"{prefix}audio file '{path}' does not exist")
    if path.is_dir():
        raise AudioError(f"{prefix}'{path}' is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{prefix}audio file '{path}' is empty (0 bytes)")
    return path, prefix


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
