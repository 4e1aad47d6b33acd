"""What a training run minimises, as a strategy the loop is handed (as ``Tuning`` is what it trains).

``Supervised`` learns transcripts through the host's own loss (Whisper's token cross-entropy, or
CTC) and is judged on dev by decoding: error rate, lower is better, and the best-on-dev state is
kept. ``ContrastivePretraining`` is wav2vec 2.0's self-supervised objective on untranscribed
audio; dev gets the same objective under a fixed draw of masks and distractors, logged (with the
contrastive accuracy and codebook perplexity) but not used to pick a checkpoint: continued
pretraining keeps its last state, as the papers do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapters import adapter_condition
from ..data import Utterance, load_audio, sorted_batches
from ..errors import SpeechPeftError
from ..eval.asr import score_utterances, transcribe_utterances
from ..eval.metrics import pooled, utterance_counts
from ..eval.normalise import make_normaliser


class BatchLoss(NamedTuple):
    """One micro-batch's loss: a mean over ``units`` (label tokens, utterances, masked frames), so
    that the shards of a batch on several processes combine into the whole batch's mean."""

    value: torch.Tensor
    units: float
    figures: dict[str, float]  # per-unit figures to log beside the loss


class Objective(Protocol):
    label: str
    score: str  # the dev figure shown and (when select_best) minimised
    select_best: bool  # keep the best-on-dev trained state in <run>/adapter

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> BatchLoss:
        """The loss of one micro-batch (this process's shard of it) at update ``step`` (0-based)."""

    def evaluate(self, run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
        """Dev (or test) figures; holds ``score``."""


def _arrays(run: Any, utts: Sequence[Utterance]) -> list[np.ndarray]:
    rate = run.host.sampling_rate
    return [load_audio(u.audio, rate, u.where, max_seconds=run.host.window_seconds) for u in utts]


def _batch_padding(run: Any, arrays: Sequence[np.ndarray]) -> int | None:
    """Under torchrun, the longest array of the whole batch (all shards), so that every shard is
    padded as one process would pad the batch; None in one process."""
    return run.world.max(max(len(a) for a in arrays)) if run.world.enabled else None


class Supervised:
    """Transcripts, through the host's loss; dev decoded and scored with the recipe's metric."""

    label = "supervised"
    select_best = True

    def __init__(self, metric: str):
        self.score = metric

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> BatchLoss:
        language = batch_language(utts, run.recipe.eval.language)
        arrays = _arrays(run, utts)
        batch = run.host.batch(arrays, [u.text for u in utts], language, pad_to=_batch_padding(run, arrays))
        with adapter_condition(run.host.model, language=language):  # Master-ASR assembles per language
            return BatchLoss(run.host.loss(batch), run.host.loss_units(batch), {})

    def evaluate(self, run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
        return decode_and_score(run, utts, desc)


def batch_language(utts: Sequence[Utterance], forced: str | None) -> str | None:
    """The language of a training batch: the recipe's ``eval.language`` when set, else the
    utterances' own (batches never mix languages; see ``data.bucketed_batches``)."""
    if forced:
        return forced
    languages = {u.language for u in utts}
    if len(languages) > 1:
        raise SpeechPeftError(f"{utts[0].where}: a batch mixes languages {sorted(map(str, languages))}")
    return languages.pop()


def decode_and_score(run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
    """Decode ``utts`` with the run's host and score them: the pooled rate, its counts, per-speaker rates."""
    ev = run.recipe.eval
    normalise = make_normaliser(ev.normaliser, run.host.english_spelling)
    tick = time.time()
    hyps = transcribe_utterances(
        run.host, utts, ev.language, ev.beam, ev.batch_size, ev.max_tokens_per_second, desc, run.progress, run.world
    )
    counts = utterance_counts([u.text for u in utts], hyps, ev.metric, normalise)
    result = pooled(counts, ev.metric).as_dict()
    out = {ev.metric: result["rate"], **result, "seconds": round(time.time() - tick, 1)}
    speakers = sorted({u.speaker for u in utts if u.speaker})
    if len(speakers) > 1:  # which voices an adapter helps is part of the result
        out["per_speaker"] = {
            s: round(pooled([c for c, u in zip(counts, utts, strict=True) if u.speaker == s], ev.metric).rate, 4)
            for s in speakers
        }
    out["window_seconds"] = run.host.window_seconds
    if ev.metric == "cer" and ev.normaliser != "zh_chars":
        out["wer"] = score_utterances(utts, hyps, "wer", normalise).rate
    return out


class ContrastivePretraining:
    """wav2vec 2.0's contrastive + diversity objective (``models.wav2vec2_pretrain``), with the
    Gumbel temperature annealed per update."""

    label = "continued pretraining"
    score = "loss"
    select_best = False

    def __init__(self, seed: int = 0, batch_size: int = 8):
        self.seed, self.batch_size = seed, batch_size

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> BatchLoss:
        temperature = run.host.set_temperature(step)
        arrays = _arrays(run, utts)
        out = run.host.step(arrays, pad_to=_batch_padding(run, arrays))
        figures = {"contrastive": out.contrastive, "diversity": out.diversity, "accuracy": out.accuracy,
                   "perplexity": out.perplexity, "temperature": temperature}  # fmt: skip
        return BatchLoss(out.loss, out.masked, figures)

    @torch.no_grad()
    def evaluate(self, run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
        """The objective on ``utts`` with masks and distractors drawn from a fixed seed per batch,
        so that two evaluations differ only by the model (and processes sharing the batches under
        torchrun give one process's figures); the run's own RNG streams are left untouched."""
        tick = time.time()
        torch_state = torch.get_rng_state()  # the quantizer's Gumbel noise draws from torch
        keys = ("loss", "contrastive", "accuracy", "perplexity")
        totals = dict.fromkeys(keys, 0.0)
        frames = 0
        try:
            batches = list(enumerate(sorted_batches(list(utts), self.batch_size)))
            for k, batch in tqdm(run.world.shard(batches), desc=desc, disable=not run.progress, leave=False):
                torch.manual_seed(self.seed + k)
                rng = np.random.RandomState(self.seed + k)
                out = run.host.step(_arrays(run, [utts[i] for i in batch]), rng=rng)
                w = out.masked
                values = (float(out.loss), out.contrastive, out.accuracy, out.perplexity)
                for key, value in zip(keys, values, strict=True):
                    totals[key] += value * w
                frames += w
        finally:
            torch.set_rng_state(torch_state)
        sums = run.world.sum([frames, *(totals[k] for k in keys)])
        frames = int(sums[0])
        result = {k: v / max(frames, 1) for k, v in zip(keys, sums[1:], strict=True)}
        return {**result, "masked_frames": frames, "seconds": round(time.time() - tick, 1)}
