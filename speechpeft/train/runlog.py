"""The run's ``metrics.jsonl`` and the up-front audio check that fails before training starts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import Utterance, check_audio_file
from ..fs import atomic_write_text


class MetricsLog:
    """Append-only JSON lines; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        if fresh or not path.exists():
            atomic_write_text(path, "")

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def first(self, event: str) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r.get("event") == event), None)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """Keep what the checkpoint at ``step`` already covered; the resumed run redoes the rest."""
        keep = [r for r in self.rows() if r.get("event") == "zero_shot" or r.get("step", 0) <= step]
        keep = [r for r in keep if r.get("event") != "test"]
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))


def check_audio_headers(utts: Sequence[Utterance], max_seconds: float | None = None) -> None:
    """Open every audio header before training, so a bad file fails in seconds, not hours.

    Raises:
        AudioError: a file is missing, a directory, unreadable, empty or longer than
            ``max_seconds`` (naming file:line).
    """
    for u in utts:
        check_audio_file(u.audio, u.where, max_seconds)
