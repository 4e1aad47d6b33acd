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


@dataclass(frozen=True)
class Counts:
    """One utterance's edit counts against its normalised reference."""

    substitutions: int
    deletions: int
    insertions: int
    reference_units: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def units(text: str, metric: str) -> list[str]:
    return list(text) if metric == "cer" else text.split()


def utterance_counts(refs: Sequence[str], hyps: Sequence[str], metric: str, normalise: Normaliser) -> list[Counts]:
    """Edit counts per utterance after normalising both sides.

    A reference that normalises to nothing has N = 0 and counts its hypothesis' units as
    insertions (jiwer refuses empty references).

    Raises:
        SpeechPeftError: unknown metric or unequal lengths.
    """
    if metric not in ("cer", "wer"):
        raise SpeechPeftError(f"metric must be 'cer' or 'wer', got {metric!r}")
    if len(refs) != len(hyps):
        raise SpeechPeftError(f"{len(refs)} references but {len(hyps)} hypotheses")
    process = jiwer.process_characters if metric == "cer" else jiwer.process_words
    out = []
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalise(ref), normalise(hyp)
        if not units(r, metric):
            out.append(Counts(0, 0, len(units(h, metric)), 0))
            continue
        o = process(r, h)
        out.append(Counts(o.substitutions, o.deletions, o.insertions, o.hits + o.substitutions + o.deletions))
    return out


def pooled(counts: Sequence[Counts], metric: str) -> ErrorRate:
    """The corpus-pooled rate of per-utterance counts.

    Raises:
        SpeechPeftError: no reference has any unit.
    """
    n = sum(c.reference_units for c in counts)
    if n == 0:
        raise SpeechPeftError("no reference has any characters or words after normalisation")
    s, d, i = (sum(getattr(c, k) for c in counts) for k in ("substitutions", "deletions", "insertions"))
    return ErrorRate(metric, (s + d + i) / n, s, d, i, n, len(counts))


def error_rate(refs: Sequence[str], hyps: Sequence[str], metric: str, normalise: Normaliser) -> ErrorRate:
    """Corpus-pooled CER or WER after normalising both sides (see ``utterance_counts``)."""
    return pooled(utterance_counts(refs, hyps, metric, normalise), metric)


def aligned_units(ref: str, hyp: str, metric: str, normalise: Normaliser) -> list[tuple[str, str]]:
    """The hypothesis aligned to the reference, unit by unit, for showing a diff.

    Each item is ``(text, op)`` with op one of ``"equal"``, ``"substitute"`` (the hypothesis'
    unit, then the reference's in brackets), ``"insert"`` (in the hypothesis only) and
    ``"delete"`` (in the reference only); the counts agree with ``error_rate`` on the pair.

    Raises:
        SpeechPeftError: unknown metric.
    """
    if metric not in ("cer", "wer"):
        raise SpeechPeftError(f"metric must be 'cer' or 'wer', got {metric!r}")
    r, h = units(normalise(ref), metric), units(normalise(hyp), metric)
    if not r or not h:
        return [(u, "delete") for u in r] + [(u, "insert") for u in h]
    if metric == "cer":
        chunks = jiwer.process_characters("".join(r), "".join(h)).alignments[0]
    else:
        chunks = jiwer.process_words(" ".join(r), " ".join(h)).alignments[0]
    out: list[tuple[str, str]] = []
    for chunk in chunks:
        ref_part, hyp_part = r[chunk.ref_start_idx : chunk.ref_end_idx], h[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            out += [(u, "equal") for u in hyp_part]
        elif chunk.type == "substitute":
            out += [(f"{a} [{b}]", "substitute") for a, b in zip(hyp_part, ref_part, strict=True)]
        elif chunk.type == "insert":
            out += [(u, "insert") for u in hyp_part]
        else:
            out += [(u, "delete") for u in ref_part]
    return out
