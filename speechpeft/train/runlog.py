"""The run's ``metrics.jsonl`` and the up-front audio check that fails before training starts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import Utterance, check_audio_file
from ..fs import atomic_write_text


class MetricsLog:
    """Append-only JSON lines; on resume, rows after the checkpoint's step are dropped.

    The rows are kept in memory as well, so that under torchrun every process reads the same log
    while rank 0 alone writes it (``write=False`` elsewhere).
    """

    def __init__(self, path: Path, fresh: bool, write: bool = True):
        self.path, self.write = path, write
        if fresh or not path.exists():
            self._rows: list[dict[str, Any]] = []
            if write:
                atomic_write_text(path, "")
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            self._rows = [json.loads(line) for line in lines if line.strip()]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows]

    def first(self, event: str) -> dict[str, Any] | None:
        return next((dict(r) for r in self._rows if r.get("event") == event), None)

    def append(self, row: dict[str, Any]) -> None:
        row = json.loads(json.dumps(row, ensure_ascii=False))  # what a reader of the file gets
        self._rows.append(row)
        if self.write:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """Keep what the checkpoint at ``step`` already covered; the resumed run redoes the rest."""
        keep = [r for r in self._rows if r.get("event") == "zero_shot" or r.get("step", 0) <= step]
        self._rows = [r for r in keep if r.get("event") != "test"]
        if self.write:
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._rows))


def check_audio_headers(utts: Sequence[Utterance], max_seconds: float | None = None) -> None:
    """Open every audio header before training, so a bad file fails in seconds, not hours.

    Raises:
        AudioError: a file is missing, a directory, unreadable, empty or longer than
            ``max_seconds`` (naming file:line).
    """
    for u in utts:
        check_audio_file(u.audio, u.where, max_seconds)
