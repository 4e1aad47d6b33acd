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
    within each bucket, cut into batches, and the batches shuffled. When the utterances carry
    more than one language, this is done per language, so that every batch has one language
    (a Whisper prompt, or a Master-ASR assembly, is per batch). The order depends only on
    ``(seed, epoch)``, so a resumed run sees exactly the batches the interrupted one would have.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(utts)))
    rng.shuffle(order)
    span = batch_size * bucket_batches
    batches = []
    for group in _by_language(utts, order):
        for start in range(0, len(group), span):
            bucket = sorted(group[start : start + span], key=lambda i: utts[i].duration)
            batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def _by_language(utts: Sequence[Utterance], order: list[int]) -> list[list[int]]:
    """``order`` split by language (first-seen order), or whole when there is one language."""
    groups: dict[str | None, list[int]] = {}
    for i in order:
        groups.setdefault(utts[i].language, []).append(i)
    return list(groups.values())


def sorted_batches(utts: Sequence[Utterance], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: longest first, so the slowest batch comes while the bar is fresh;
    one language per batch when the utterances carry several."""
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    return [group[i : i + batch_size] for group in _by_language(utts, order) for i in range(0, len(group), batch_size)]
