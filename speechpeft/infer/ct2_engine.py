"""The CTranslate2 engine of `speechpeft transcribe --engine ct2`: faster-whisper's decoder on the
merged CTranslate2 export of the chosen adapter.

An adapter (or the bare model) is converted once: merged into the base, converted by
CTranslate2's own converter at the asked compute type, and kept in a cache folder named by a
checksum of the adapter's files, the base, the compute type and the CTranslate2 version. A changed
adapter has another checksum, so it is converted again (and its conversions from older files removed). The
engine decodes with the same options as the torch path (``DecodeOptions``) and returns the same
``Transcript``s, so the writers cannot tell the engines apart; the JSON says which one ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import SpeechPeftError
from ..fs import atomic_dir
from ..models import DecodeOptions, Segment, Transcript, Word

COMPUTE_TYPES = ("int8", "int8_float32", "float32")
INSTALL = "pip install 'speechpeft[ct2]' (ctranslate2 and faster-whisper)"
WINDOW_SECONDS = 30.0  # faster-whisper decodes 30 s windows only (every released Whisper's)


def available() -> bool:
    try:
        import ctranslate2  # noqa: F401
        import faster_whisper  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    if not available():
        raise SpeechPeftError(f"--engine ct2 needs CTranslate2 and faster-whisper: {INSTALL}")


def cache_root() -> Path:
    """``$SPEECHPEFT_CACHE/ct2``, else ``~/.cache/speechpeft/ct2`` (XDG_CACHE_HOME honoured)."""
    if os.environ.get("SPEECHPEFT_CACHE"):
        return Path(os.environ["SPEECHPEFT_CACHE"]) / "ct2"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "speechpeft" / "ct2"


def _files_digest(adapter: str | None) -> str:
    """A checksum of the adapter folder's files (names and bytes); "" for the bare model."""
    if adapter is None:
        return ""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(adapter).iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _checksum(files: str, base: str, compute_type: str) -> str:
    import ctranslate2

    return hashlib.sha256(json.dumps([files, base, compute_type, ctranslate2.__version__]).encode()).hexdigest()[:20]


def converted(adapter: str | None, base: str, compute_type: str, progress: bool = False) -> Path:
    """The cached CTranslate2 folder of ``adapter`` merged into ``base`` (None: the bare model),
    converting it first when the cache has no folder for these exact files.

    Raises:
        SpeechPeftError: CTranslate2 or faster-whisper is missing, or the adapter cannot be merged.
    """
    require()
    from ..models import export as exporting

    if compute_type not in COMPUTE_TYPES:
        raise SpeechPeftError(f"--ct2-compute must be one of {', '.join(COMPUTE_TYPES)}, got {compute_type!r}")
    root = cache_root()
    files = _files_digest(adapter)
    key = _checksum(files, base, compute_type)
    folder = root / key
    if (folder / "model.bin").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    source = str(Path(adapter).resolve()) if adapter is not None else f"bare:{base}"
    if progress:
        print(f"converting {source} for CTranslate2 ({compute_type}), once: cached in {folder}", flush=True)
    atomic_dir(folder, lambda tmp: exporting.write_ct2(adapter, base, tmp, compute_type))
    note = {"source": source, "base": base, "files": files, "compute_type": compute_type}
    (folder / "speechpeft_source.json").write_text(json.dumps(note) + "\n")
    _drop_stale(root, source, files)
    return folder


def _drop_stale(root: Path, source: str, files: str) -> None:
    """Remove conversions of the same adapter folder made from files it no longer holds (any
    compute type); conversions of its current files at other compute types stay."""
    for other in root.iterdir():
        note = other / "speechpeft_source.json"
        if note.is_file():
            try:
                seen = json.loads(note.read_text())
                stale = seen["source"] == source and seen["files"] != files
            except (ValueError, KeyError, TypeError):
                continue
            if stale:
                shutil.rmtree(other, ignore_errors=True)


class Ct2Decoder:
    """Decodes with faster-whisper's ``WhisperModel`` on one converted folder at a time; has the
    parts of a host that `transcribe_files` decodes through (``window_seconds``, ``transcribe_long``)."""

    window_seconds = WINDOW_SECONDS
    max_window_seconds = WINDOW_SECONDS

    def __init__(self, base: str, compute_type: str = "int8", threads: int = 0, progress: bool = False):
        require()
        self.base, self.compute_type, self.threads, self.progress = base, compute_type, threads, progress
        self.loaded: tuple[Path, object] | None = None

    @property
    def label(self) -> str:
        return f"ct2 ({self.compute_type}, faster-whisper)"

    def use(self, adapter: str | None) -> None:
        """Decode with ``adapter`` merged (None: the bare model), converting it if the cache lacks it."""
        from faster_whisper import WhisperModel

        folder = converted(adapter, self.base, self.compute_type, self.progress)
        if self.loaded is None or self.loaded[0] != folder:
            model = WhisperModel(str(folder), device="cpu", compute_type=self.compute_type, cpu_threads=self.threads)
            self.loaded = (folder, model)

    def transcribe_long(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
        decode: DecodeOptions | None = None,
    ) -> list[Transcript]:
        if adapter_ids is not None:
            raise SpeechPeftError("the ct2 engine decodes one adapter at a time; mixed batches need --engine torch")
        if self.loaded is None:
            raise RuntimeError("Ct2Decoder.use() must be called before decoding")
        import ctranslate2

        d = (decode or DecodeOptions()).resolved()
        ctranslate2.set_random_seed(d.seed)
        model = self.loaded[1]
        out, done = [], 0.0
        for audio in arrays:
            segments, info = model.transcribe(
                np.asarray(audio, dtype=np.float32), language=language, task=task, beam_size=beam, best_of=1,
                temperature=list(d.temperatures), compression_ratio_threshold=d.compression_ratio_threshold,
                log_prob_threshold=d.logprob_threshold, no_speech_threshold=d.no_speech_threshold,
                condition_on_previous_text=d.condition_on_previous_text, initial_prompt=d.initial_prompt,
                word_timestamps=d.word_timestamps, vad_filter=False,
            )  # fmt: skip
            found = [self._segment(s, d) for s in segments if s.text.strip()]  # decoding runs in this generator
            out.append(Transcript(found, info.language, None if language else float(info.language_probability)))
            done += len(audio) / 16_000
            if progress is not None:
                progress(done)
        return out

    @staticmethod
    def _segment(s, d: DecodeOptions) -> Segment:
        words = tuple(Word(round(w.start, 3), round(w.end, 3), w.word) for w in (s.words or ()))
        return Segment(float(s.start), float(s.end), s.text.strip(), words, s.temperature if d.fallback else None)
