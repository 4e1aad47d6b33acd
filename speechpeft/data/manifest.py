"""JSONL manifests: one utterance per line, validated with file:line in every error.

Fields: ``audio_filepath`` (relative to the manifest's folder, or absolute), ``text``,
``duration`` (seconds), and optional ``language``, ``speaker`` and ``adapter``. Every JSONL file
the package reads (training and test sets, transcribe's adapter maps, clone's references) goes
through ``read_manifest``; callers say which fields they need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpeechPeftError


class ManifestError(SpeechPeftError):
    """A manifest line is malformed or misses a required field."""


@dataclass(frozen=True)
class Utterance:
    audio: Path  # absolute
    text: str
    duration: float | None  # None only where the caller did not require it
    language: str | None = None
    speaker: str | None = None
    where: str = ""  # "manifest.jsonl:LINE", for errors about this entry
    adapter: str | None = None  # transcribe's adapter maps: a folder, or "none"


REQUIRED = ("audio_filepath", "text", "duration")
KNOWN = set(REQUIRED) | {"language", "speaker", "adapter"}


def read_manifest(
    path: str | Path, require_text: bool = True, require_duration: bool = True, require: tuple[str, ...] = ()
) -> list[Utterance]:
    """Every utterance of a JSONL manifest; blank lines are skipped. ``require_text=False``
    reads untranscribed audio lists (``text`` may be absent; it is then empty);
    ``require_duration=False`` lists whose durations come from the audio (then None unless
    given); ``require`` names further fields that must be present (e.g. ``adapter``).

    Raises:
        ManifestError: the file is missing or empty, or a line is not a JSON object, lacks a
            required field, or has a field of the wrong type.
    """
    path = Path(path)
    out = [
        _parse(line, where, path.parent, require_text, require_duration, require) for line, where in jsonl_lines(path)
    ]
    if not out:
        raise ManifestError(f"manifest '{path}' holds no utterances")
    return out


MAX_LINE_BYTES = 1 << 20  # one utterance per line; a longer line is a broken file, not a transcript


def jsonl_lines(path: Path) -> list[tuple[str, str]]:
    """The non-blank lines of a UTF-8 JSONL file with their ``file:line`` (a BOM and CRLF are fine).

    Raises:
        ManifestError: the file is missing or not a file, a line is not UTF-8, or a line is
            longer than MAX_LINE_BYTES.
    """
    if not path.is_file():
        raise ManifestError(f"manifest '{path}' does not exist" if not path.exists() else f"'{path}' is not a file")
    out = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if len(raw) > MAX_LINE_BYTES:
                raise ManifestError(f"{where}: the line is {len(raw) / 2**20:.1f} MiB; a line holds one utterance")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{where}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
            if line.strip():
                out.append((line, where))
    return out


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict.

    Raises:
        ManifestError: not valid JSON, or not an object; the message starts with ``where``.
    """
    try:
        row = json.loads(line, object_pairs_hook=lambda pairs: _no_duplicates(pairs, where))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _no_duplicates(pairs: list[tuple[str, object]], where: str) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:  # json keeps the last silently; which one the user meant is unknowable
            raise ManifestError(f"{where}: key {key!r} appears twice")
        seen[key] = value
    return seen


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def read_audio_set(path: str | Path) -> list[Utterance]:
    """Untranscribed audio: a folder (every audio file below it, sorted) or a manifest whose lines
    need no ``text``. Durations of a folder's files come from their headers.

    Raises:
        ManifestError: nothing to read, or a manifest line that is malformed.
        AudioError: a file in the folder whose header cannot be read.
    """
    from .audio import audio_duration

    path = Path(path)
    if not path.is_dir():
        return read_manifest(path, require_text=False)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ManifestError(f"'{path}' holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [Utterance(f.resolve(), "", audio_duration(f, str(f)), where=str(f)) for f in files]


def _parse(
    line: str, where: str, folder: Path, require_text: bool, require_duration: bool, require: tuple[str, ...]
) -> Utterance:
    row = json_object(line, where)
    if not require_text:
        row.setdefault("text", "")
    if not require_duration:
        row.setdefault("duration", None)
    for key in REQUIRED + require:
        if key not in row:
            hint = ' (use "none" for the bare model)' if key == "adapter" else ""
            raise ManifestError(f"{where}: missing required field {key!r}{hint}")
    if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"]:
        raise ManifestError(f"{where}: 'audio_filepath' must be a non-empty string")
    if not isinstance(row["text"], str):
        raise ManifestError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
    dur = row["duration"]
    bad_duration = isinstance(dur, bool) or not isinstance(dur, (int, float)) or dur <= 0
    if (dur is not None or require_duration) and bad_duration:
        raise ManifestError(f"{where}: 'duration' must be a positive number of seconds, got {dur!r}")
    for key in ("language", "speaker", "adapter"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string")
    audio = Path(row["audio_filepath"])
    return Utterance(
        audio=audio if audio.is_absolute() else (folder / audio).resolve(),
        text=row["text"],
        duration=None if dur is None else float(dur),
        language=row.get("language"),
        speaker=row.get("speaker"),
        where=where,
        adapter=row.get("adapter"),
    )
