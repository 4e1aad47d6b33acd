"""Corpus-pooled error rates (CER/WER) with jiwer: total edits over total reference units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from ..errors import SpeechPeftError
from .normalise import Normaliser


@dataclass(frozen=True)
class ErrorRate:
    metric: str  # "cer" or "wer"
    rate: float  # (S + D + I) / N, pooled over the corpus
    substitutions: int
    deletions: int
    insertions: int
    reference_units: int  # N: characters or words of the normalised references
    utterances: int

    def as_dict(self) -> dict:
        return asdict(self)


def units(text: str, metric: str) -> list[str]:
    return list(text) if metric == "cer" else text.split()


def error_rate(refs: Sequence[str], hyps: Sequence[str], metric: str, normalise: Normaliser) -> ErrorRate:
    """Corpus-pooled CER or WER after normalising both sides.

    A reference that normalises to nothing contributes its hypothesis' units as insertions
    (jiwer refuses empty references).

    Raises:
        SpeechPeftError: unknown metric, unequal lengths, or no reference units at all.
    """
    if metric not in ("cer", "wer"):
        raise SpeechPeftError(f"metric must be 'cer' or 'wer', got {metric!r}")
    if len(refs) != len(hyps):
        raise SpeechPeftError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps, strict=True)]
    scored = [(r, h) for r, h in pairs if units(r, metric)]
    extra_ins = sum(len(units(h, metric)) for r, h in pairs if not units(r, metric))
    if not scored:
        raise SpeechPeftError("no reference has any characters or words after normalisation")
    r, h = [p[0] for p in scored], [p[1] for p in scored]
    out = jiwer.process_characters(r, h) if metric == "cer" else jiwer.process_words(r, h)
    n = out.hits + out.substitutions + out.deletions
    edits = out.substitutions + out.deletions + out.insertions + extra_ins
    return ErrorRate(metric, edits / n, out.substitutions, out.deletions, out.insertions + extra_ins, n, len(pairs))
