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


_LOADED: dict = {}  # {"key": (folder, compute type, threads), "model": WhisperModel}: one kept loaded


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
            key = (folder, self.compute_type, self.threads)
            if _LOADED.get("key") != key:  # the last model loaded stays for the next call (servers, benches)
                _LOADED.clear()
                model = WhisperModel(str(folder), device="cpu", compute_type=self.compute_type,
                                     cpu_threads=self.threads)  # fmt: skip
                _LOADED.update(key=key, model=model)
            self.loaded = (folder, _LOADED["model"])

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
        batched = _first_windows_batched(model, arrays, language, task, beam, d)
        for audio, found in zip(arrays, batched, strict=True):
            if found is not None:  # decoded in the batch, and sequential decoding would have stopped there
                out.append(found)
                done += len(audio) / 16_000
                if progress is not None:
                    progress(done)
                continue
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


def _first_windows_batched(model, arrays, language, task, beam, d: DecodeOptions) -> list[Transcript | None]:
    """Files of up to 30 s decoded together: each window encoded alone, then one batched
    ``generate``, with the prompt, suppression and thresholds ``WhisperModel.transcribe`` uses for
    a file's first window. A file's result is kept only where file-by-file decoding would have
    ended after that window (its tokens reach the file's end, no temperature fallback is called
    for); the others get None and are decoded file by file. Only for the plain case: language
    given, no word timestamps, no initial prompt (faster-whisper decodes one file at a time)."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    found: list[Transcript | None] = [None] * len(arrays)
    fe = model.feature_extractor
    short = [i for i, a in enumerate(arrays) if len(a) <= fe.n_samples]
    if len(short) < 2 or language is None or d.word_timestamps or d.initial_prompt:
        return found
    feats = [fe(np.asarray(arrays[i], dtype=np.float32)) for i in short]
    sizes = [min(fe.nb_max_frames, f.shape[-1] - 1) for f in feats]  # content frames, as transcribe counts them
    batch = np.stack([pad_or_trim(f[:, :n]) for f, n in zip(feats, sizes, strict=True)])
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task, language=language)
    prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
    # The encoder runs one window at a time (on 2 CPU cores a batched int8 encode measured ~10 %
    # slower, same output bit for bit); only the decoder's search is batched, where it pays.
    encoded = ctranslate2.StorageView.from_array(np.concatenate([np.asarray(model.encode(f)) for f in batch]))
    results = model.model.generate(
        encoded, [prompt] * len(short), beam_size=beam, patience=1, length_penalty=1,
        repetition_penalty=1, no_repeat_ngram_size=0, max_length=model.max_length, return_scores=True,
        return_no_speech_prob=True, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        max_initial_timestamp_index=int(round(1.0 / model.time_precision)),
    )  # fmt: skip
    t0 = d.temperatures[0]
    for i, n, result in zip(short, sizes, results, strict=True):
        tokens = result.sequences_ids[0]
        logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = tokenizer.decode(tokens).strip()
        silent = d.no_speech_threshold is not None and result.no_speech_prob > d.no_speech_threshold
        if silent and d.logprob_threshold is not None and logprob > d.logprob_threshold:
            silent = False
        ratio = d.compression_ratio_threshold
        retry = (ratio is not None and get_compression_ratio(text) > ratio) or (
            d.logprob_threshold is not None and logprob < d.logprob_threshold)  # fmt: skip
        if silent:
            found[i] = Transcript([], language, None)
            continue
        if retry and len(d.temperatures) > 1:
            continue  # temperature fallback: file by file
        parts, seek, _ = model._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=0.0, segment_size=n,
            segment_duration=n * fe.time_per_frame, seek=0,
        )  # fmt: skip
        if seek < n:
            continue  # transcribe would decode another window from the last timestamp
        segs = [(p["start"], p["end"], tokenizer.decode(p["tokens"]).strip()) for p in parts]
        found[i] = Transcript([Segment(float(a), float(b), t, (), t0 if d.fallback else None) for a, b, t in segs
                               if t and a != b], language, None)  # fmt: skip
    return found
