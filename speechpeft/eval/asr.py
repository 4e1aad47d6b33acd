"""Decode a manifest's utterances with any host (models.host.ASRHost) and score them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..data import Utterance, load_audio, sorted_batches
from ..distributed import World
from .metrics import ErrorRate, error_rate
from .normalise import Normaliser


def transcribe_utterances(
    host: Any,
    utts: Sequence[Utterance],
    language: str | None,
    beam: int = 1,
    batch_size: int = 16,
    max_tokens_per_second: float = 12.0,
    desc: str = "decode",
    progress: bool = True,
    world: World | None = None,
) -> list[str]:
    """Hypotheses for ``utts`` in their order, decoded longest-first in batches.

    ``language`` is forced on every utterance when given; when None, each utterance's own
    ``language`` (from its manifest) is used, or detected where it has none.

    Each batch may emit at most ``16 + max_tokens_per_second x longest duration`` tokens (for
    hosts that generate tokens), which bounds repetition loops without touching normal output.

    ``world``: under torchrun, each process decodes every ``size``-th batch, and every process
    returns all hypotheses, the same as one process would decode them.
    """
    rate = host.sampling_rate
    window = host.window_seconds
    world = world or World()
    hyps: list[str] = [""] * len(utts)
    batches = world.shard(sorted_batches(utts, batch_size))  # whole batches: decoded as in one process
    total = sum(utts[i].duration for batch in batches for i in batch)
    fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]"
    with tqdm(total=total, desc=desc, bar_format=fmt, disable=not progress, leave=False) as bar:
        for batch in batches:
            arrays = [load_audio(utts[i].audio, rate, utts[i].where, max_seconds=window) for i in batch]
            cap = host.max_new_tokens(max(len(a) for a in arrays) / rate, max_tokens_per_second)
            lang = language or utts[batch[0]].language  # sorted_batches keeps one language per batch
            texts = host.transcribe(arrays, language=lang, beam=beam, batch_size=len(batch), max_new_tokens=cap)
            for i, text in zip(batch, texts, strict=True):
                hyps[i] = text
            # summed in another order than the total: never past it by a rounding error
            bar.update(min(sum(utts[i].duration for i in batch), total - bar.n))
    if world.enabled:  # every process gets every hypothesis, so all score (and select) alike
        for shard in world.gather({i: hyps[i] for batch in batches for i in batch}):
            for i, text in shard.items():
                hyps[i] = text
    return hyps


def score_utterances(utts: Sequence[Utterance], hyps: Sequence[str], metric: str, normalise: Normaliser) -> ErrorRate:
    """Corpus-pooled error rate of ``hyps`` against the utterances' texts."""
    return error_rate([u.text for u in utts], hyps, metric, normalise)
