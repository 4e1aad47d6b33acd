"""What the demo page does, without the page: limits, uploads, loaded models, and the four actions.

Everything here calls speechpeft's public API; app.py only lays out the page and wires events.
Every action returns its result or raises ``DemoError`` with one line meant for the page.

- Uploads are copied into a private workspace under a generated name: the name a browser
  sent is shown to the user, never used as a path. The workspace is removed when the app stops,
  and request folders older than an hour are swept while it runs.
- Models are loaded once (the Whisper hosts, the VITS base, the speaker verifier). Decoding with
  a shared host takes a lock, since an adapter is swapped into the host while it decodes.
- A clone trains on its own copy of the VITS base, so the base stays bare for everyone else.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechpeft.adapters.catalog import AdapterEntry, find_adapters
from speechpeft.data import audio_duration
from speechpeft.errors import SpeechPeftError
from speechpeft.eval import error_rate, make_normaliser
from speechpeft.eval.metrics import aligned_units
from speechpeft.eval.tts import speaker_similarity
from speechpeft.infer import FORMATS, Comparison, Job, TranscribeOptions, compare_adapters, transcribe_files
from speechpeft.models import load_host
from speechpeft.models.speaker_encoder import load_speaker_encoder
from speechpeft.models.vits import VitsHost
from speechpeft.models.vits_build import load_vits
from speechpeft.train.clone import CloneOptions, Reference, clone, load_references, load_speaker
from speechpeft.train.references import transcribe_references

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm", ".aac", ".mp4"}
DEFAULT_TTS_BASE = Path("runs/joe-completed")  # what `speechpeft tts complete-base` writes in the README
SWEEP_SECONDS = 3600.0
VERIFIER = "resemblyzer"
OnStep = Callable[[int, int, float], None] | None  # (step, steps, loss) after each training update


class DemoError(Exception):
    """A one-line message for the page."""


@dataclass(frozen=True)
class DemoConfig:
    asr_models: tuple[str, ...] = ("openai/whisper-base",)
    adapters: tuple[str, ...] = ("runs/*/adapter",)  # folders or globs (speechpeft.adapters.catalog)
    tts_base: str | None = None  # None: DEFAULT_TTS_BASE where it exists
    max_seconds: float = 300.0  # longest audio transcribe and compare take
    max_upload_mb: float = 50.0
    clone_min_seconds: float = 10.0
    clone_max_seconds: float = 60.0
    clone_steps: int = 150
    max_compare: int = 3  # adapters beside the bare model
    max_speakers: int = 4  # cloned voices kept in memory (least recently used leave)
    device: str | None = None

    def __post_init__(self):
        if not self.asr_models:
            raise SpeechPeftError("the demo needs at least one ASR model")
        if self.max_seconds <= 0 or self.max_upload_mb <= 0:
            raise SpeechPeftError("max_seconds and max_upload_mb must be > 0")
        if not 0 < self.clone_min_seconds <= self.clone_max_seconds:
            raise SpeechPeftError("need 0 < clone_min_seconds <= clone_max_seconds")

    def resolved_tts_base(self) -> str | None:
        if self.tts_base:
            return self.tts_base
        return str(DEFAULT_TTS_BASE) if (DEFAULT_TTS_BASE / "config.json").is_file() else None


@dataclass
class Upload:
    path: Path  # our copy, under a generated name
    name: str  # what the user called it: for messages only
    seconds: float


@dataclass
class Speaker:
    name: str
    host: VitsHost  # the base copy the adapters were trained into
    vector: Any
    references: list[np.ndarray]
    report: dict[str, Any] = field(default_factory=dict)


class Workspace:
    """A private temp folder: one subfolder per request, swept when old, removed on close."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="speechpeft-demo-"))
        (self.root / "requests").mkdir(parents=True, exist_ok=True)

    def request(self) -> Path:
        self.sweep()
        folder = self.root / "requests" / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def sweep(self, older_than: float = SWEEP_SECONDS) -> None:
        now = time.time()
        for folder in (self.root / "requests").iterdir():
            if now - folder.stat().st_mtime > older_than:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def scrub(self, message: str, uploads: list[Upload] = (), names: dict[str, str] | None = None) -> str:
        """The message with our private paths replaced by the names the user knows."""
        for u in uploads:
            message = message.replace(str(u.path), u.name)
        for path, name in (names or {}).items():
            message = message.replace(path, name)
        return message.replace(str(self.root), "<workspace>")


class Demo:
    """The demo's state and actions; one instance serves every request."""

    def __init__(self, config: DemoConfig, workspace: Workspace | None = None):
        self.config = config
        self.workspace = workspace or Workspace()
        self._asr: dict[str, Any] = {}
        self._tts: VitsHost | None = None
        self._encoder = None
        self._load_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._speakers: OrderedDict[str, Speaker] = OrderedDict()
        self._adapters: list[AdapterEntry] = []

    # -- models, loaded once ------------------------------------------------------------------

    def asr(self, name: str):
        if name not in self.config.asr_models:
            raise DemoError(f"unknown model {name!r}; this demo serves {', '.join(self.config.asr_models)}")
        with self._load_lock:
            if name not in self._asr:
                self._asr[name] = load_host(name, device=self.config.device)
            return self._asr[name]

    def tts(self) -> VitsHost:
        base = self.config.resolved_tts_base()
        if base is None:
            raise DemoError(
                "no TTS base is configured: start the demo with --tts-base DIR (a completed VITS voice, "
                f"e.g. from speechpeft tts complete-base -o {DEFAULT_TTS_BASE})"
            )
        with self._load_lock:
            if self._tts is None:
                self._tts = load_vits(base, device=self.config.device)
            return self._tts

    def encoder(self):
        with self._load_lock:
            if self._encoder is None:
                self._encoder = load_speaker_encoder(VERIFIER)
            return self._encoder

    # -- adapters --------------------------------------------------------------------------------

    def adapters(self, refresh: bool = True) -> list[AdapterEntry]:
        """The adapters on disk now: a folder that appears is listed without a restart."""
        if refresh or not self._adapters:
            self._adapters = find_adapters(self.config.adapters)
        return self._adapters

    def _scrub(self, message: str, uploads: list[Upload] = ()) -> str:
        """``Workspace.scrub``, with adapter folders shown by their names in the menu."""
        return self.workspace.scrub(message, uploads, {str(e.path): e.name for e in self._adapters})

    def adapter_path(self, name: str | None) -> str | None:
        if not name:
            return None
        for refresh in (False, True):
            for entry in self.adapters(refresh=refresh):
                if entry.name == name:
                    if entry.error:
                        raise DemoError(entry.error)
                    return str(entry.path)
        raise DemoError(f"no adapter called {name!r} under {', '.join(self.config.adapters)}")

    # -- uploads ---------------------------------------------------------------------------------

    def intake(self, path: str | None, folder: Path, max_seconds: float | None, what: str = "audio") -> Upload:
        """Copy one upload into ``folder`` under a generated name and check it.

        Raises:
            DemoError: nothing uploaded, empty, too large, unreadable, or longer than ``max_seconds``.
        """
        if not path:
            raise DemoError(f"no {what}: upload a file or record one")
        source = Path(path)
        name = source.name or "upload"
        if not source.is_file():
            raise DemoError(f"{name}: the upload did not arrive; try again")
        size = source.stat().st_size
        if size == 0:
            raise DemoError(f"{name}: the file is empty (0 bytes)")
        if size > self.config.max_upload_mb * 1e6:
            raise DemoError(f"{name}: {size / 1e6:.1f} MB is more than the {self.config.max_upload_mb:g} MB allowed")
        suffix = source.suffix.lower() if source.suffix.lower() in AUDIO_SUFFIXES else ""
        target = folder / f"upload-{uuid.uuid4().hex[:12]}{suffix}"
        shutil.copyfile(source, target)
        upload = Upload(target, name, 0.0)
        try:
            upload.seconds = audio_duration(target)
        except SpeechPeftError as e:
            raise DemoError(self.workspace.scrub(str(e), [upload])) from None
        if max_seconds is not None and upload.seconds > max_seconds:
            raise DemoError(f"{name}: {upload.seconds:.1f} s of audio; this demo takes at most {max_seconds:g} s")
        return upload

    # -- actions -------------------------------------------------------------------------------

    def transcribe(self, audio: str | None, model: str, adapter: str | None, language: str | None, beam: int,
                   vad: bool) -> tuple[list[dict[str, Any]], str, list[Path]]:  # fmt: skip
        """(segments, text, files in every format) for one upload."""
        folder = self.workspace.request()
        upload = self.intake(audio, folder, self.config.max_seconds)
        host = self.asr(model)
        opts = TranscribeOptions(
            model=model, language=language or None, beam=int(beam), formats=FORMATS, output_dir=folder / "out",
            vad=bool(vad), progress=False, overwrite=True,
        )  # fmt: skip
        job = Job(upload.path, self.adapter_path(adapter), upload.name)
        with self._decode_lock:
            outcome = transcribe_files([job], opts, host=host)
        if outcome.failures:
            raise DemoError(self._scrub(outcome.failures[0][1], [upload]))
        files = {Path(p).suffix: Path(p) for p in outcome.written}
        record = json.loads(files[".json"].read_text("utf-8"))
        renamed = []
        for path in outcome.written:  # downloads are named after the upload, never placed by it
            stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(upload.name).stem)[:60] or "audio"
            target = path.with_name(f"{stem}{path.suffix}")
            path.rename(target)
            renamed.append(target)
        return record["segments"], record["text"], renamed

    def compare(self, audio: str | None, model: str, adapters: list[str], language: str | None, beam: int,
                reference: str | None, normaliser: str = "basic") -> tuple[Comparison, list[Score | None]]:  # fmt: skip
        """The bare model and up to ``max_compare`` adapters on one upload, each row scored when a
        reference is given."""
        adapters = [a for a in (adapters or []) if a]
        if len(adapters) > self.config.max_compare:
            raise DemoError(f"pick at most {self.config.max_compare} adapters, got {len(adapters)}")
        folder = self.workspace.request()
        upload = self.intake(audio, folder, self.config.max_seconds)
        host = self.asr(model)
        paths = [None] + [self.adapter_path(a) for a in adapters]
        with self._decode_lock:
            result = compare_adapters(host, upload.path, paths, folder / "rows", language=language or None,
                                      beam=int(beam))  # fmt: skip
        reference = (reference or "").strip()
        scores: list[Score | None] = []
        for row, name in zip(result.rows, [None, *adapters], strict=True):
            row.adapter = name
            if row.error:
                row.error = self._scrub(row.error, [upload])
            scores.append(score(reference, row.text, normaliser) if reference and not row.error else None)
        return result, scores

    def clone(self, files: list[str], recording: str | None, transcripts: str, name: str, steps: int,
              language: str | None, on_step: OnStep = None) -> tuple[str, Speaker]:  # fmt: skip
        """Train a USAT speaker on the uploads; returns (speaker id, speaker)."""
        name = (name or "").strip() or "my-voice"
        folder = self.workspace.request()
        paths = [p for p in (files or []) if p] + ([recording] if recording else [])
        if not paths:
            raise DemoError("no references: upload clips or record one")
        uploads = [self.intake(p, folder, self.config.clone_max_seconds, "reference") for p in paths]
        total = sum(u.seconds for u in uploads)
        if not self.config.clone_min_seconds <= total <= self.config.clone_max_seconds:
            raise DemoError(
                f"{total:.1f} s of references; give {self.config.clone_min_seconds:g}-"
                f"{self.config.clone_max_seconds:g} s"
            )
        base = self.tts()
        lines = [t.strip() for t in (transcripts or "").splitlines() if t.strip()]
        try:
            if lines:
                if len(lines) != len(uploads):
                    raise DemoError(f"{len(lines)} transcript line(s) for {len(uploads)} clip(s): one line per clip")
                if len(uploads) < 2:
                    raise DemoError("one clip with a transcript: give at least 2 clips, or leave the transcripts "
                                    "empty and Whisper cuts the recording into sentences")  # fmt: skip
                refs = [Reference(u.path, t, u.name) for u, t in zip(uploads, lines, strict=True)]
            else:
                with self._decode_lock:
                    refs = transcribe_references(
                        [u.path for u in uploads], self.asr(self.config.asr_models[0]), folder / "clips",
                        base.sampling_rate, language=language or None, names=[u.name for u in uploads],
                    )  # fmt: skip
                if len(refs) < 2:
                    raise DemoError("Whisper found one sentence in the references; record a little more")
            opts = CloneOptions(name=name, output=folder / "speaker", steps=int(steps), progress=False)
            report = clone(self._copy(base), refs, opts, on_step=on_step)
            host = self._copy(base)  # the voice you hear is the one saved, loaded as synthesize --speaker does
            vector = load_speaker(host, opts.output)
            arrays = load_references(refs, host.sampling_rate)
        except SpeechPeftError as e:
            raise DemoError(self.workspace.scrub(str(e), uploads)) from None
        speaker = Speaker(name, host, vector, arrays, report)
        key = uuid.uuid4().hex
        self._speakers[key] = speaker
        while len(self._speakers) > self.config.max_speakers:
            self._speakers.popitem(last=False)
        return key, speaker

    def speak(self, key: str | None, text: str) -> tuple[int, np.ndarray, dict[str, Any]]:
        """(rate, waveform, similarity) of ``text`` in a cloned voice; similarity names its verifier."""
        if not key or key not in self._speakers:
            raise DemoError("no cloned voice in this session (or it was evicted): train one first")
        text = (text or "").strip()
        if not text:
            raise DemoError("type something to say")
        speaker = self._speakers[key]
        self._speakers.move_to_end(key)
        base = self.tts()
        bare_speaker = 0 if base.config.num_speakers > 1 else None
        try:
            wave = speaker.host.synthesize(text, speaker.vector)
            bare = base.synthesize(text, bare_speaker)
        except SpeechPeftError as e:
            raise DemoError(str(e)) from None
        rate, encoder = speaker.host.sampling_rate, self.encoder()
        cloned = speaker_similarity(encoder, [wave], rate, speaker.references, rate)
        unadapted = speaker_similarity(encoder, [bare], rate, speaker.references, rate)
        return rate, wave, {"verifier": cloned["verifier"], "cloned": cloned["cosine"], "base": unadapted["cosine"]}

    def close(self) -> None:
        self.workspace.close()

    @staticmethod
    def _copy(base: VitsHost) -> VitsHost:
        return VitsHost(copy.deepcopy(base.model), base.front, list(base.missing))


@dataclass(frozen=True)
class Score:
    metric: str
    rate: float
    diff: list[tuple[str, str]]  # (unit, op), speechpeft.eval.metrics.aligned_units


def score(reference: str, text: str, normaliser: str, metric: str = "wer") -> Score:
    """WER (or CER) of ``text`` against ``reference``, with the aligned units for a diff.

    Raises:
        SpeechPeftError: unknown normaliser, or a reference with no words after normalising.
    """
    normalise = make_normaliser(normaliser)
    rate = error_rate([reference], [text], metric, normalise).rate
    return Score(metric, rate, aligned_units(reference, text, metric, normalise))


def one_line(action: Callable[[], Any], workspace: Workspace) -> tuple[Any, str | None]:
    """Run ``action``; (result, None), or (None, its one-line error). Unexpected errors are logged whole."""
    try:
        return action(), None
    except DemoError as e:
        return None, str(e)
    except SpeechPeftError as e:
        return None, workspace.scrub(str(e))
    except Exception as e:  # a bug: the page gets one line, the server log the traceback
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, workspace.scrub(f"internal error ({type(e).__name__}): {first}")
