"""Which files to transcribe with which adapter: command-line paths, ``--adapter``, ``--adapter-map``.

An adapter map is one of:

- JSON: ``{"PATTERN": "ADAPTER_DIR", ...}``;
- CSV: rows ``PATTERN,ADAPTER_DIR`` (an optional header row ``pattern,adapter``);
- JSONL manifest: lines with ``audio_filepath`` and ``adapter``; its files are transcribed when
  no AUDIO is given on the command line.

A PATTERN is a path or a glob, matched against the path as given, its absolute form and its
file name; the first matching rule wins. ADAPTER_DIR is relative to the map's folder;
``none`` (or null, or empty) means the bare model. Files that match no rule use the bare model.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from ..data.manifest import read_manifest
from ..errors import SpeechPeftError

BARE = {"", "none", "null", "base"}


@dataclass(frozen=True)
class Job:
    """One file to transcribe, and the adapter directory to use (None: the bare model)."""

    audio: Path
    adapter: str | None
    where: str  # for messages: the path as given, or "map.jsonl:LINE"


@dataclass(frozen=True)
class AdapterMap:
    rules: list[tuple[str, str | None]]  # (pattern, adapter) in file order
    jobs: list[Job]  # files named by a JSONL manifest map, else empty

    def adapter_for(self, path: str) -> str | None:
        names = {path, str(Path(path).resolve()), Path(path).name}
        for pattern, adapter in self.rules:
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                return adapter
        return None


def read_adapter_map(path: str | Path) -> AdapterMap:
    """Parse a JSON, CSV or JSONL adapter map.

    Raises:
        SpeechPeftError: the file is missing or malformed; the message names the file and line or key.
    """
    path = Path(path)
    if not path.is_file():
        raise SpeechPeftError(f"adapter map '{path}' " + ("is not a file" if path.exists() else "does not exist"))
    kind = path.suffix.lower()
    if kind == ".jsonl":
        jobs = _manifest_jobs(path)
        return AdapterMap([(str(j.audio), j.adapter) for j in jobs], jobs)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SpeechPeftError(f"cannot read adapter map '{path}' ({e})") from None
    if kind == ".json":
        rules = _json_rules(text, path)
        return AdapterMap(rules, [])
    if kind == ".csv":
        return AdapterMap(_csv_rules(text, path), [])
    raise SpeechPeftError(f"adapter map '{path}': unknown format {kind or '(no suffix)'!r}; use .json, .csv or .jsonl")


def jobs_from_args(audio: list[str], adapter: str | None = None, adapter_map: str | None = None) -> list[Job]:
    """The jobs a command line asks for.

    Raises:
        SpeechPeftError: both ``adapter`` and ``adapter_map``, a bad map, or no audio at all.
    """
    if adapter and adapter_map:
        raise SpeechPeftError("give --adapter or --adapter-map, not both")
    amap = read_adapter_map(adapter_map) if adapter_map else None
    if not audio:
        if amap is not None and amap.jobs:
            return list(amap.jobs)
        raise SpeechPeftError("no audio given (name files, or an --adapter-map manifest listing them)")
    if amap is not None:
        return [Job(Path(a), amap.adapter_for(a), a) for a in audio]
    return [Job(Path(a), adapter, a) for a in audio]


def _adapter(value: object, folder: Path, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpeechPeftError(f"{where}: adapter must be a directory path string, got {type(value).__name__}")
    if value.strip().lower() in BARE:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else folder / p)


def _json_rules(text: str, path: Path) -> list[tuple[str, str | None]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpeechPeftError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not data:
        raise SpeechPeftError(f"{path}: expected a non-empty JSON object of pattern -> adapter directory")
    return [(str(k), _adapter(v, path.parent, f"{path}: key {k!r}")) for k, v in data.items()]


def _csv_rules(text: str, path: Path) -> list[tuple[str, str | None]]:
    rules = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise SpeechPeftError(f"{path}:{lineno}: expected 2 columns (pattern,adapter), got {len(row)}")
        pattern, adapter = (c.strip() for c in row)
        if lineno == 1 and adapter.lower() == "adapter":
            continue  # header
        if not pattern:
            raise SpeechPeftError(f"{path}:{lineno}: empty pattern")
        rules.append((pattern, _adapter(adapter, path.parent, f"{path}:{lineno}")))
    if not rules:
        raise SpeechPeftError(f"adapter map '{path}' holds no rules")
    return rules


def _manifest_jobs(path: Path) -> list[Job]:
    rows = read_manifest(path, require_text=False, require_duration=False, require=("adapter",))
    return [Job(u.audio, _adapter(u.adapter, path.parent, u.where), u.where) for u in rows]
