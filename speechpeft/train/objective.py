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
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapters import adapter_condition
from ..data import Utterance, load_audio, sorted_batches
from ..errors import SpeechPeftError
from ..eval.asr import score_utterances, transcribe_utterances
from ..eval.metrics import pooled, utterance_counts
from ..eval.normalise import make_normaliser


class Objective(Protocol):
    label: str
    score: str  # the dev figure shown and (when select_best) minimised
    select_best: bool  # keep the best-on-dev trained state in <run>/adapter

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch at update ``step`` (0-based), and figures to log with it."""

    def evaluate(self, run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
        """Dev (or test) figures; holds ``score``."""


def _arrays(run: Any, utts: Sequence[Utterance]) -> list[np.ndarray]:
    rate = run.host.sampling_rate
    return [load_audio(u.audio, rate, u.where, max_seconds=run.host.window_seconds) for u in utts]


class Supervised:
    """Transcripts, through the host's loss; dev decoded and scored with the recipe's metric."""

    label = "supervised"
    select_best = True

    def __init__(self, metric: str):
        self.score = metric

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        language = batch_language(utts, run.recipe.eval.language)
        batch = run.host.batch(_arrays(run, utts), [u.text for u in utts], language)
        with adapter_condition(run.host.model, language=language):  # Master-ASR assembles per language
            return run.host.loss(batch), {}

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
        run.host, utts, ev.language, ev.beam, ev.batch_size, ev.max_tokens_per_second, desc, run.progress
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

    def loss(self, run: Any, utts: Sequence[Utterance], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        temperature = run.host.set_temperature(step)
        out = run.host.step(_arrays(run, utts))
        figures = {"contrastive": out.contrastive, "diversity": out.diversity, "accuracy": out.accuracy,
                   "perplexity": out.perplexity, "temperature": temperature}  # fmt: skip
        return out.loss, figures

    @torch.no_grad()
    def evaluate(self, run: Any, utts: Sequence[Utterance], desc: str) -> dict[str, Any]:
        """The objective on ``utts`` with masks and distractors drawn from a fixed seed, so that
        two evaluations differ only by the model; the run's own RNG streams are left untouched."""
        tick = time.time()
        rng = np.random.RandomState(self.seed)
        torch_state = torch.get_rng_state()  # the quantizer's Gumbel noise draws from torch
        torch.manual_seed(self.seed)
        totals = {"loss": 0.0, "contrastive": 0.0, "accuracy": 0.0, "perplexity": 0.0}
        frames = 0
        try:
            batches = sorted_batches(list(utts), self.batch_size)
            for batch in tqdm(batches, desc=desc, disable=not run.progress, leave=False):
                out = run.host.step(_arrays(run, [utts[i] for i in batch]), rng=rng)
                w = out.masked
                totals["loss"] += float(out.loss) * w
                totals["contrastive"] += out.contrastive * w
                totals["accuracy"] += out.accuracy * w
                totals["perplexity"] += out.perplexity * w
                frames += w
        finally:
            torch.set_rng_state(torch_state)
        result = {k: v / max(frames, 1) for k, v in totals.items()}
        return {**result, "masked_frames": frames, "seconds": round(time.time() - tick, 1)}
