"""Length-bucketed batching: utterances of similar duration share a batch, order is seeded."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .manifest import Utterance


def bucketed_batches(
    utts: Sequence[Utterance], batch_size: int, seed: int, epoch: int, bucket_batches: int = 8
) -> list[list[int]]:
    """Batches of indices into ``utts`` for one epoch.

    Indices are shuffled, cut into buckets of ``bucket_batches * batch_size``, sorted by duration
    within each bucket, cut into batches, and the batches shuffled. The order depends only on
    ``(seed, epoch)``, so a resumed run sees exactly the batches the interrupted one would have.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(utts)))
    rng.shuffle(order)
    span = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: utts[i].duration)
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(utts: Sequence[Utterance], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: longest first, so the slowest batch comes while the bar is fresh."""
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
