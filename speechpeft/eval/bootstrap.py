"""Bootstrap confidence intervals for pooled error rates, and a paired bootstrap test.

A pooled error rate is a ratio, sum(edits) / sum(reference units), so resampling must keep each
utterance's edits and units together (``paired=True``). Resampling whole speakers ("blocks")
instead of utterances gives the wider, more honest interval when utterances of one speaker are
correlated. Intervals are percentile intervals from scipy.stats.bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap

N_RESAMPLES = 9999


def _ratio(edits: np.ndarray, units: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return edits.sum(axis=axis) / units.sum(axis=axis)


def rate_ci(
    edits: Sequence[float], units: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of sum(edits)/sum(units), resampling rows; None below 2 rows."""
    e, n = np.asarray(edits, dtype=float), np.asarray(units, dtype=float)
    if e.size < 2:
        return None
    res = bootstrap(
        (e, n), _ratio, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def blocks(edits: Sequence[int], units: Sequence[int], keys: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """Sum edits and units per key (e.g. per speaker), keys in first-seen order."""
    sums: dict[str, list[int]] = {}
    for e, n, k in zip(edits, units, keys, strict=True):
        acc = sums.setdefault(k, [0, 0])
        acc[0] += e
        acc[1] += n
    return [v[0] for v in sums.values()], [v[1] for v in sums.values()], list(sums)


def paired_test(
    edits_a: Sequence[int], edits_b: Sequence[int], units: Sequence[int], confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap over utterances of delta = rate(A) - rate(B) on the same references.

    Returns the observed delta, its percentile interval and a two-sided p-value,
    ``2 * min(P(delta* <= 0), P(delta* >= 0))`` over the bootstrap distribution: small when the
    resampled deltas almost never cross zero.
    """
    a, b, n = (np.asarray(x, dtype=float) for x in (edits_a, edits_b, units))

    def delta(ea: np.ndarray, eb: np.ndarray, nn: np.ndarray, axis: int = -1) -> np.ndarray:
        return _ratio(ea, nn, axis) - _ratio(eb, nn, axis)

    observed = float(delta(a, b, n))
    if a.size < 2:
        return {"delta": observed, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    res = bootstrap(
        (a, b, n), delta, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    dist = res.bootstrap_distribution
    p = min(1.0, 2 * min(float(np.mean(dist <= 0)), float(np.mean(dist >= 0))))
    return {
        "delta": observed,
        "ci_low": float(res.confidence_interval.low),
        "ci_high": float(res.confidence_interval.high),
        "p_value": p,
        "resamples": N_RESAMPLES,
    }
