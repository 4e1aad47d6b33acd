"""`speechpeft transcribe`: many files, any length, per-file adapters, subtitle outputs.

The base model is loaded once. Files are grouped by adapter; each group swaps its adapter in,
merged into the weights (the kernel issue turns this into one mixed batch), and is decoded in
batches of similar length.
A file that fails is reported and skipped; the others complete.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapters import adapter_layers, merge_adapter, read_adapter
from ..adapters.bank import load_bank, unload_bank
from ..adapters.io import check_adapter_base
from ..data import audio_duration, load_audio
from ..errors import SpeechPeftError
from ..fs import atomic_write_text
from ..models import ASRHost, DecodeOptions, Transcript, load_host
from .ct2_engine import COMPUTE_TYPES, Ct2Decoder
from .engines import low_rank, pick_engine, readable_adapters
from .inputs import Job
from .word_edges import EdgeRule, snap_words
from .writers import FORMATS, SubtitleLayout, render

RATE = 16_000
WORD_EDGES = ("vad", "attention")
ENGINES = ("torch", "ct2", "auto")
VAD_BLOCK_SECONDS = 1800.0  # VAD mode holds at most this much decoded audio at once


@dataclass(frozen=True)
class TranscribeOptions:
    model: str = "openai/whisper-base"
    language: str | None = None  # None: Whisper detects it
    task: str = "transcribe"  # or "translate" (to English)
    beam: int = 1
    batch_size: int = 8  # files per batch; with --vad, speech chunks per batch
    formats: tuple[str, ...] = ("txt",)
    output_dir: Path = Path(".")
    vad: bool = False  # chunk on silero-vad speech boundaries instead of sequential long-form
    overwrite: bool = False
    window_seconds: float | None = None  # None: the adapter's training window, else the model's
    window_step: float = 0.0  # > 0, short-window mode: each batch's window is its longest input rounded up to this
    device: str | None = None
    progress: bool = True
    decode: DecodeOptions = DecodeOptions()  # openai-whisper's options: fallback, prompt, words...
    layout: SubtitleLayout = SubtitleLayout()  # srt/vtt cues from words (needs decode.word_timestamps)
    word_edges: str = "vad"  # words beside a pause end at silero-vad's speech edges; or "attention" alone
    engine: str = "auto"  # ct2 where it serves the request and is faster, else torch; or "torch", "ct2"
    ct2_compute: str = "int8"  # the ct2 engine's compute type

    def __post_init__(self):
        if self.layout.asked and not self.decode.word_timestamps:
            raise SpeechPeftError(
                "--max-line-width, --max-line-count, --max-words-per-line and --highlight-words need --word-timestamps"
            )
        if self.engine not in ENGINES:
            raise SpeechPeftError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ct2_compute not in COMPUTE_TYPES:
            raise SpeechPeftError(f"--ct2-compute must be one of {', '.join(COMPUTE_TYPES)}, got {self.ct2_compute!r}")
        if self.word_edges not in WORD_EDGES:
            raise SpeechPeftError(f"--word-edges must be one of {', '.join(WORD_EDGES)}, got {self.word_edges!r}")
        if not self.window_step >= 0:
            raise SpeechPeftError(f"--window-step must be >= 0 seconds, got {self.window_step!r}")
        if self.batch_size < 1:
            raise SpeechPeftError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.beam < 1:
            raise SpeechPeftError(f"beam must be >= 1, got {self.beam}")
        if self.task not in ("transcribe", "translate"):
            raise SpeechPeftError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            name = bad[0] if bad else "(none)"
            raise SpeechPeftError(f"unknown output format {name!r}; choose from {', '.join(FORMATS)}")


@dataclass
class TranscribeOutcome:
    written: list[Path] = field(default_factory=list)  # every output file written
    done: list[str] = field(default_factory=list)  # jobs (by `where`) fully transcribed
    skipped: list[str] = field(default_factory=list)  # jobs whose outputs existed
    failures: list[tuple[str, str]] = field(default_factory=list)  # (where, one-line reason)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    mixed_batch: bool = False  # every adapter decoded in one batch through the adapter bank


def transcribe_files(jobs: Sequence[Job], opts: TranscribeOptions, host: ASRHost | None = None) -> TranscribeOutcome:
    """Transcribe ``jobs`` and write ``opts.formats`` into ``opts.output_dir`` per file.

    ``host`` reuses a loaded model (tests, servers); otherwise ``opts.model`` is loaded.

    Raises:
        SpeechPeftError: the output folder cannot be written, or the model cannot be loaded.
            Problems with single files or adapters are not raised: they land in ``failures``.
    """
    started = time.time()
    out = TranscribeOutcome()
    _check_writable(opts.output_dir)
    todo = _plan(jobs, opts, out)
    if not todo:
        out.wall_seconds = time.time() - started
        return out
    total = sum(d for _, d in todo)
    fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]"
    groups = _groups(todo)
    decode = _decode_vad if opts.vad else _decode_longform
    if pick_engine(opts, groups, host) == "ct2":
        with tqdm(total=total, desc="transcribe", bar_format=fmt, disable=not opts.progress) as bar:
            _transcribe_ct2(groups, opts, decode, bar, out)
        out.audio_seconds, out.wall_seconds = total, time.time() - started
        return out
    if host is None:
        host = load_host(opts.model, device=opts.device)
    full_window = host.max_window_seconds
    with tqdm(total=total, desc="transcribe", bar_format=fmt, disable=not opts.progress) as bar:
        if len(groups) > 1 and _bankable(groups, opts):  # one mixed batch: each file its own adapter
            mixed, ids = _load_bank(host, groups, opts, full_window, out, bar)
            out.mixed_batch = True
            try:
                for job, transcript in decode(host, mixed, opts, bar, out, ids):
                    _write(job, transcript, opts, {**_meta(host, opts, job.adapter), "engine": "torch"}, out)
            finally:
                unload_bank(host.model)
            out.audio_seconds, out.wall_seconds = total, time.time() - started
            return out
        slot = AdapterSlot(host)
        try:
            for adapter, group in groups:
                try:
                    slot.use(adapter, opts.window_seconds, full_window)
                except SpeechPeftError as e:
                    _fail_group(out, bar, group, e)
                    continue
                meta = {**_meta(host, opts, adapter), "engine": "torch"}
                for job, transcript in decode(host, group, opts, bar, out):
                    _write(job, transcript, opts, meta, out)
        finally:
            slot.clear()  # a host passed in leaves as it came: bare, base weights exact
    out.audio_seconds = total
    out.wall_seconds = time.time() - started
    return out


def _transcribe_ct2(groups, opts: TranscribeOptions, decode, bar, out: TranscribeOutcome) -> None:
    decoder = Ct2Decoder(opts.model, opts.ct2_compute, threads=torch.get_num_threads(), progress=opts.progress)
    for adapter, group in groups:
        try:
            decoder.use(adapter)
        except SpeechPeftError as e:
            _fail_group(out, bar, group, e)
            continue
        meta = {**_meta(decoder, opts, adapter), "engine": decoder.label}
        for job, transcript in decode(decoder, group, opts, bar, out):
            _write(job, transcript, opts, meta, out)


def _fail_group(out: TranscribeOutcome, bar, group, error: SpeechPeftError) -> None:
    """Every file of an adapter's group fails with ``error``, one line each; the other groups go on."""
    out.failures += [(job.where, str(error)) for job, _ in group]
    bar.update(sum(d for _, d in group))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".speechpeft-probe-"):
            pass
    except OSError as e:
        raise SpeechPeftError(f"cannot write to output folder '{folder}' ({e.strerror or e})") from None


def _outputs(job: Job, opts: TranscribeOptions) -> list[Path]:
    return [opts.output_dir / f"{job.audio.stem}.{f}" for f in opts.formats]


def _plan(jobs: Sequence[Job], opts: TranscribeOptions, out: TranscribeOutcome) -> list[tuple[Job, float]]:
    """Jobs to run with their durations; collisions, existing outputs and unreadable files drop out."""
    todo, owner = [], {}
    for job in jobs:
        stem = job.audio.stem
        if stem in owner:
            out.failures.append((job.where, f"output name '{stem}' is already used by {owner[stem]}"))
            continue
        owner[stem] = job.where
        if not opts.overwrite and all(p.exists() for p in _outputs(job, opts)):
            out.skipped.append(job.where)
            continue
        try:
            todo.append((job, audio_duration(job.audio)))
        except SpeechPeftError as e:
            out.failures.append((job.where, str(e)))
    return todo


def _groups(todo: list[tuple[Job, float]]) -> list[tuple[str | None, list[tuple[Job, float]]]]:
    groups: dict[str | None, list[tuple[Job, float]]] = {}
    for item in todo:
        groups.setdefault(item[0].adapter, []).append(item)
    return list(groups.items())


class AdapterSlot:
    """Holds one adapter at a time in the host, merged into the base weights while it decodes:
    decoding then costs what the bare model costs. The base weights are saved before the merge
    and copied back when the adapter leaves, so swapping never lets rounding drift accumulate."""

    def __init__(self, host: ASRHost):
        self.host, self.saved = host, {}

    def clear(self) -> None:
        layers = adapter_layers(self.host.model)
        with torch.no_grad():
            for name, weight in self.saved.items():
                layers[name].base_layer.weight.copy_(weight)
                layers[name].merged = False
        self.saved = {}
        self.host.detach_adapter()

    def use(self, adapter: str | None, window: float | None, full_window: float) -> None:
        """Swap ``adapter`` in (None: the bare model). Raises SpeechPeftError, leaving the bare model."""
        self.clear()
        try:
            if adapter is not None:
                recorded = ((read_adapter(adapter).record or {}).get("host") or {}).get("window_seconds")
                window = window or recorded
            self.host.set_window(window or full_window)
            if adapter is not None:
                self.host.attach_adapter(adapter)
                layers = adapter_layers(self.host.model)
                self.saved = {n: layer.base_layer.weight.detach().clone() for n, layer in layers.items()}
                merge_adapter(self.host.model)
        except SpeechPeftError:
            self.clear()
            raise


def _bankable(groups, opts: TranscribeOptions) -> bool:
    """Whether every adapter can join one bank: low-rank kinds with nothing trained whole (a CTC
    head of their own), all trained with one encoder window."""
    windows = set()
    for _, af in readable_adapters(groups):
        if not low_rank(af):
            return False  # not a low-rank update: merged one group at a time instead
        windows.add(((af.record or {}).get("host") or {}).get("window_seconds"))
    return opts.window_seconds is not None or len(windows) <= 1


def _load_bank(host, groups, opts, full_window, out, bar) -> tuple[list, dict]:
    """Load every usable adapter into one bank; files of an adapter that fails fail, one line each."""
    good, ids, paths, window = [], {None: -1}, [], opts.window_seconds
    for adapter, group in groups:
        if adapter is not None:
            try:
                af = read_adapter(adapter)
                check_adapter_base(host.model, af)
            except SpeechPeftError as e:
                _fail_group(out, bar, group, e)
                continue
            window = window or ((af.record or {}).get("host") or {}).get("window_seconds")
            ids[adapter] = len(paths)
            paths.append(adapter)
        good += group
    host.set_window(window or full_window)
    if paths:
        load_bank(host.model, paths)
    return good, ids


def _meta(host: ASRHost, opts: TranscribeOptions, adapter: str | None) -> dict[str, Any]:
    return {
        "model": opts.model,
        "adapter": adapter,
        "task": opts.task,
        "beam": opts.beam,
        "window_seconds": host.window_seconds,
        **(
            {"window_fitted": f"each batch: its longest input rounded up to {opts.window_step:g} s"}
            if opts.window_step > 0 and host.window_seconds < host.max_window_seconds
            else {}
        ),  # fmt: skip
        "chunking": "silero-vad" if opts.vad else "sequential long-form (timestamp tokens)",
        "decoding": opts.decode.describe(),
        **({"word_edges": _edges_meta(opts)} if opts.decode.word_timestamps else {}),
    }


def _edges_meta(opts: TranscribeOptions) -> str:
    if opts.word_edges == "attention":
        return "cross-attention alignment"
    rule = EdgeRule()
    vad = f"threshold {rule.threshold}, pad {rule.pad_ms} ms, reach {rule.reach} s"
    return f"cross-attention alignment, edges at silero-vad speech ({vad})"


def _with_edges(transcript: Transcript, audio: np.ndarray, opts: TranscribeOptions) -> Transcript:
    """The transcript with its words' edges at the speech regions, when word timestamps ask for it."""
    if not opts.decode.word_timestamps or opts.word_edges != "vad":
        return transcript
    rule = EdgeRule()
    return transcript._replace(segments=snap_words(transcript.segments, rule.regions(audio), rule.reach))


def _load(job: Job, out: TranscribeOutcome) -> np.ndarray | None:
    try:
        return load_audio(job.audio, RATE)
    except SpeechPeftError as e:
        out.failures.append((job.where, str(e)))
        return None


def _decode_longform(host, group, opts, bar, out, ids=None):
    """Batches of similar-length files through Whisper's own long-form decoding.

    Files that fit the window and longer files never share a batch: a long file would make every
    short one in its batch compute features over the long one's padded length.
    """
    group = sorted(group, key=lambda item: -item[1])
    fits = [item for item in group if item[1] <= host.window_seconds]
    longer = group[: len(group) - len(fits)]
    batches = [part[i : i + opts.batch_size] for part in (longer, fits) for i in range(0, len(part), opts.batch_size)]
    for batch in batches:
        loaded = [(job, _load(job, out)) for job, _ in batch]
        loaded = [(job, a) for job, a in loaded if a is not None]
        seconds = sum(d for _, d in batch)
        if loaded:
            tracker = _BatchProgress(bar, seconds)
            arrays = [a for _, a in loaded]
            try:
                adapter_ids = [ids[job.adapter] for job, _ in loaded] if ids else None
                with fitted_window(host, max(len(a) for a in arrays) / RATE, opts.window_step):
                    found = host.transcribe_long(arrays, opts.language, opts.task, opts.beam, progress=tracker,
                                                 adapter_ids=adapter_ids, decode=opts.decode)  # fmt: skip
            except SpeechPeftError as e:
                out.failures += [(job.where, str(e)) for job, _ in loaded]
            else:
                yield from ((job, _with_edges(t, a, opts)) for (job, a), t in zip(loaded, found, strict=True))
            tracker.finish()
        else:
            bar.update(seconds)


def _decode_vad(host, group, opts, bar, out, ids=None):
    """Speech chunks (≤ the encoder window) from silero-vad, batched across files."""
    from ..data.vad import vad_chunks

    block: list[tuple[Job, float]] = []
    for item in sorted(group, key=lambda item: -item[1]) + [None]:
        if item is not None and (not block or sum(d for _, d in block) + item[1] <= VAD_BLOCK_SECONDS):
            block.append(item)
            continue
        chunks, results, languages, audios = [], {}, {}, {}
        for job, _ in block:
            audio = _load(job, out)
            if audio is None:
                continue
            results[job] = []
            if opts.decode.word_timestamps and opts.word_edges == "vad":
                audios[job] = audio  # kept for the word edges
            chunks += [(job, s, audio[s:e]) for s, e in vad_chunks(audio, host.window_seconds, RATE)]
        chunks.sort(key=lambda c: -len(c[2]))
        for start in range(0, len(chunks), opts.batch_size):
            batch = chunks[start : start + opts.batch_size]
            adapter_ids = [ids[c[0].adapter] for c in batch] if ids else None
            with fitted_window(host, len(batch[0][2]) / RATE, opts.window_step):  # the longest chunk comes first
                found = host.transcribe_long([c[2] for c in batch], opts.language, opts.task, opts.beam,
                                             adapter_ids=adapter_ids, decode=opts.decode)  # fmt: skip
            for (job, offset, _), t in zip(batch, found, strict=True):
                results[job] += [s.shifted(offset / RATE) for s in t.segments]
                if job not in languages or offset < languages[job][0]:  # a file's language: its first chunk's
                    languages[job] = (offset, t.language, t.language_probability)
            bar.update(sum(len(c[2]) for c in batch) / RATE)
        for job, segs in results.items():
            _, language, probability = languages.get(job, (0, opts.language, None))
            found = Transcript(sorted(segs, key=lambda s: s.start), language, probability)
            yield job, _with_edges(found, audios.pop(job), opts) if job in audios else found
        bar.update(sum(d for _, d in block) - sum(len(c[2]) for c in chunks) / RATE)  # the silence
        block = [item] if item is not None else []


@contextmanager
def fitted_window(host, longest: float, step: float):
    """In short-window mode (an adapter trained with a window shorter than the model's), the
    encoder window for one batch: its longest input rounded up to ``step`` seconds, never more
    than the adapter's window. The 30 s window of the bare model and of 30 s adapters is kept:
    shortening it costs WER (bench/window_wer.md). Restored when the batch is done."""
    window = host.window_seconds
    fit = min(window, step * max(1, math.ceil(longest / step))) if step > 0 else window
    if window >= host.max_window_seconds or fit >= window:
        yield
        return
    host.set_window(fit)
    try:
        yield
    finally:
        host.set_window(window)


class _BatchProgress:
    """Feeds transformers' long-form progress (seconds decoded in this batch) into the bar."""

    def __init__(self, bar: tqdm, limit: float):
        self.bar, self.shown, self.limit = bar, 0.0, limit

    def __call__(self, seconds: float) -> None:
        seconds = min(seconds, self.limit)  # padded frames of shorter files count too
        if seconds > self.shown:
            self.bar.update(seconds - self.shown)
            self.shown = seconds

    def finish(self) -> None:
        self(self.limit)


def _write(job: Job, transcript: Transcript, opts: TranscribeOptions, meta: dict, out: TranscribeOutcome) -> None:
    written = []
    meta = {"audio": str(job.audio), **meta, "language": transcript.language,
            "language_probability": transcript.language_probability}  # fmt: skip
    try:
        for path, fmt in zip(_outputs(job, opts), opts.formats, strict=True):
            written.append(atomic_write_text(path, render(fmt, transcript.segments, meta, opts.layout)))
    except OSError as e:
        out.failures.append((job.where, f"cannot write '{e.filename or opts.output_dir}' ({e.strerror or e})"))
        return
    out.written += written
    out.done.append(job.where)


def summary_lines(out: TranscribeOutcome, output_dir: Path) -> list[str]:
    """What the CLI prints on stdout at the end: counts and speed (failures: ``failure_lines``)."""
    speed = out.audio_seconds / out.wall_seconds if out.wall_seconds > 0 else 0.0
    lines = [
        f"transcribed {len(out.done)} file(s), {out.audio_seconds:.1f} s of audio in {out.wall_seconds:.1f} s "
        f"({speed:.1f}x real time) into {output_dir}{os.sep}"
    ]
    if out.skipped:
        lines.append(f"skipped {len(out.skipped)} file(s) whose outputs exist (pass --overwrite to redo them)")
    if out.failures:
        lines.append(f"FAILED {len(out.failures)} file(s), one line each on stderr")
    return lines


def failure_lines(out: TranscribeOutcome) -> list[str]:
    """One line per file that failed, naming it: what the CLI prints on stderr."""
    return [f"{where}: {why}" for where, why in out.failures]
