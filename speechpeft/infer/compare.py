"""The same audio through the bare model and several adapters at once, for side-by-side reading.

Every row is one job of ``transcribe_files``, so a comparison decodes exactly as
``speechpeft transcribe`` would: low-rank adapters share one mixed batch through the adapter
bank, other kinds take turns. Scoring the rows against a reference is the caller's
(``speechpeft.eval.error_rate`` and ``aligned_units``, as ``speechpeft evaluate`` scores).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpeechPeftError
from ..fs import link_or_copy
from ..models import ASRHost
from .inputs import Job
from .transcribe import TranscribeOptions, transcribe_files

MAX_ROWS = 8


@dataclass
class CompareRow:
    adapter: str | None  # None: the bare model
    text: str = ""
    error: str | None = None  # one line, when this row failed


@dataclass
class Comparison:
    rows: list[CompareRow]
    wall_seconds: float
    mixed_batch: bool  # True when every row was decoded in one batch


def compare_adapters(
    host: ASRHost,
    audio: str | Path,
    adapters: Sequence[str | None],
    work_dir: str | Path,
    *,
    language: str | None = None,
    beam: int = 1,
) -> Comparison:
    """Decode ``audio`` once per entry of ``adapters`` (None: the bare model) in one call.

    ``work_dir`` receives one hard link of the audio per row and the rows' JSON transcripts.

    Raises:
        SpeechPeftError: no rows, or too many. A row whose adapter fails (unreadable, made for
            another base) carries its one-line error instead.
    """
    if not adapters or len(adapters) > MAX_ROWS:
        raise SpeechPeftError(f"compare takes 1 to {MAX_ROWS} rows, got {len(adapters)}")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    source = Path(audio)
    jobs = []
    for i, adapter in enumerate(adapters):
        row_audio = work / f"row{i}{source.suffix}"
        if not row_audio.exists():
            link_or_copy(source, row_audio)
        jobs.append(Job(row_audio, None if adapter is None else str(adapter), f"row{i}"))
    opts = TranscribeOptions(
        language=language, beam=beam, batch_size=len(jobs), formats=("json",), output_dir=work / "out",
        overwrite=True, progress=False,
    )  # fmt: skip
    outcome = transcribe_files(jobs, opts, host=host)
    failed = dict(outcome.failures)
    rows = []
    for job, adapter in zip(jobs, adapters, strict=True):
        row = CompareRow(adapter)
        if job.where in failed:
            row.error = failed[job.where]
        else:
            row.text = json.loads((opts.output_dir / f"{job.audio.stem}.json").read_text("utf-8"))["text"]
        rows.append(row)
    return Comparison(rows, outcome.wall_seconds, outcome.mixed_batch)
