"""wav2vec 2.0's self-supervised objective, for continued pretraining on untranscribed audio.

Works on transformers' ``Wav2Vec2ForPreTraining``. One step, as in wav2vec 2.0 (Baevski et al.,
2020): spans of the latent frames are masked (``_compute_mask_indices``), the transformer sees
the masked sequence, and for each masked frame it must pick the quantized latent of that frame
among distractors drawn from other masked frames of the same utterance
(``_sample_negative_indices``). The loss is that contrastive loss plus a diversity loss that keeps
the codebooks in use, both per masked frame. The Gumbel-softmax temperature of the quantizer is
annealed from 2 to 0.5 (x 0.999995 per update in the paper).

The output of continued pretraining is a ``save_pretrained`` folder that a CTC recipe names as
its ``model.name``: the CTC host then builds its vocabulary and head on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SpeechPeftError
from .host import default_device, register_pretrain_host
from .wav2vec2 import _Wav2Vec2Audio, min_samples

QUANTIZER_KEYS = ("quantizer.", "project_q.")
INPUT_LAYER = ("wav2vec2.feature_extractor.",)  # the conv feature encoder


@dataclass(frozen=True)
class PretrainSettings:
    mask_time_prob: float = 0.65  # fraction of frames that start a masked span (wav2vec 2.0: 0.65)
    mask_time_length: int = 10  # frames per masked span
    num_negatives: int = 100  # distractors per masked frame
    diversity_weight: float = 0.1  # weight of the codebook diversity loss
    max_temperature: float = 2.0  # Gumbel-softmax temperature at update 0 ...
    min_temperature: float = 0.5  # ... never below this ...
    temperature_decay: float = 0.999995  # ... multiplied by this every update


@dataclass
class PretrainStep:
    """One batch's objective: ``loss`` (per masked frame) and the figures a run logs."""

    loss: torch.Tensor
    contrastive: float
    diversity: float
    accuracy: float  # masked frames whose true quantized latent scored above every distractor
    perplexity: float  # codebook perplexity (of num_codevector_groups x num_codevectors_per_group)
    masked: int


@dataclass
class Wav2Vec2PretrainHost(_Wav2Vec2Audio):
    """A ``Wav2Vec2ForPreTraining`` with its feature extractor."""

    model: nn.Module
    feature_extractor: Any
    settings: PretrainSettings = PretrainSettings()
    _window: float = 30.0

    @property
    def min_seconds(self) -> float:
        """The shortest input that yields enough frames for one masked span and its neighbours."""
        frames = self.settings.mask_time_length + 1
        return self._samples_for(frames) / self.sampling_rate

    @property
    def input_layer(self) -> tuple[str, ...]:
        """Parameter-name prefixes of the conv feature encoder, which continued pretraining keeps frozen."""
        return INPUT_LAYER

    def train_input_layer(self) -> None:
        """Let the conv feature encoder train too (a model pretrained from scratch)."""
        self.model.wav2vec2.feature_extractor._requires_grad = True  # transformers' own switch for it

    def set_temperature(self, step: int) -> float:
        """The Gumbel temperature for update ``step`` (0-based), set on the quantizer."""
        s = self.settings
        t = max(s.max_temperature * s.temperature_decay**step, s.min_temperature)
        self.model.set_gumbel_temperature(t)
        return t

    def inputs(self, arrays: Sequence[np.ndarray], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """``input_values``, ``lengths`` (and ``attention_mask`` where the checkpoint wants one),
        padded to the longest array, or to ``pad_to`` samples when longer."""
        fe = self.feature_extractor
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.ndim != 1 or not np.isfinite(a).all():
                raise SpeechPeftError(f"audio #{i} must be mono and finite")
            if a.size < self._samples_for(self.settings.mask_time_length + 1):
                raise SpeechPeftError(
                    f"audio #{i} is {a.size / self.sampling_rate:.3f} s, shorter than the {self.min_seconds:.3f} s "
                    "continued pretraining needs for one masked span"
                )
        longest = max(len(a) for a in arrays)
        padding = {"padding": "max_length", "max_length": max(pad_to, longest)} if pad_to else {"padding": True}
        out = fe([np.asarray(a, dtype=np.float32) for a in arrays], sampling_rate=self.sampling_rate,
                 return_attention_mask=True, return_tensors="pt", **padding)  # fmt: skip
        batch = {"input_values": out.input_values.to(self.device), "lengths": out.attention_mask.sum(-1)}
        if fe.return_attention_mask:
            batch["attention_mask"] = out.attention_mask.to(self.device)
        return batch

    def step(
        self, arrays: Sequence[np.ndarray], rng: np.random.RandomState | None = None, pad_to: int | None = None
    ) -> PretrainStep:
        """The objective on one batch. Masks and distractors come from numpy's global RNG (what
        the checkpoints save), or from ``rng`` (a fixed draw, for comparable dev figures).
        ``pad_to``: as ``inputs``."""
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

        s, model = self.settings, self.model
        batch = self.inputs(arrays, pad_to)
        n, samples = batch["input_values"].shape
        frames = int(model._get_feat_extract_output_lengths(samples))
        valid = model._get_feat_extract_output_lengths(batch["lengths"])  # (B,) frames holding audio
        frame_mask = (torch.arange(frames)[None, :] < valid[:, None]).long()  # (B, frames)
        saved = None
        if rng is not None:  # the mask helpers draw from np.random: swap a fixed stream in
            saved = np.random.get_state()
            np.random.set_state(rng.get_state())
        try:
            mask = _compute_mask_indices((n, frames), s.mask_time_prob, s.mask_time_length,
                                         attention_mask=frame_mask, min_masks=2)  # fmt: skip
            negatives = _sample_negative_indices((n, frames), s.num_negatives, mask)
        finally:
            if saved is not None:
                np.random.set_state(saved)
        mask_t = torch.from_numpy(mask).to(self.device)
        out = model(
            batch["input_values"],
            attention_mask=batch.get("attention_mask"),
            mask_time_indices=mask_t,
            sampled_negative_indices=torch.from_numpy(negatives).to(self.device),
        )
        masked = int(mask_t.sum())
        accuracy = self._accuracy(out, negatives, mask_t)
        return PretrainStep(
            loss=out.loss / masked,
            contrastive=float(out.contrastive_loss.detach()) / masked,
            diversity=float(out.diversity_loss.detach()) / masked,
            accuracy=accuracy,
            perplexity=float(out.codevector_perplexity.detach()),
            masked=masked,
        )

    @torch.no_grad()
    def _accuracy(self, out: Any, negatives: np.ndarray, mask: torch.Tensor) -> float:
        """Recompute the contrastive logits the model scored and count the wins of the true latent."""
        quantized = out.projected_quantized_states  # (B, T, D)
        b, t, d = quantized.shape
        idx = torch.from_numpy(negatives).to(quantized.device).long().view(-1)
        distractors = quantized.reshape(-1, d)[idx].view(b, t, -1, d).permute(2, 0, 1, 3)  # (K, B, T, D)
        logits = self.model.compute_contrastive_logits(
            quantized[None], distractors, out.projected_states, self.model.config.contrastive_logits_temperature
        )  # (K + 1, B, T)
        same = (quantized[None] == distractors).all(-1)  # a distractor equal to the target does not count
        logits[1:][same] = float("-inf")
        wins = logits.argmax(0) == 0  # (B, T)
        return float(wins[mask.bool()].float().mean())

    def save_pretrained(self, folder: Path) -> None:
        """The model (adapters merged in beforehand) and its feature extractor, as transformers writes them."""
        self.model.save_pretrained(str(folder))
        self.feature_extractor.save_pretrained(str(folder))

    def _samples_for(self, frames: int) -> int:
        return min_samples(self.model.config, frames)


def load_wav2vec2_pretraining(name_or_path: str, device: str | torch.device | None = None,
                              settings: PretrainSettings | None = None) -> Wav2Vec2PretrainHost:  # fmt: skip
    """A wav2vec 2.0 pretraining checkpoint (with its quantizer), by hub id or path.

    Raises:
        SpeechPeftError: the checkpoint cannot be read, or it has no quantizer (a CTC fine-tuned
            model lost it: continued pretraining needs the pretraining checkpoint).
    """
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
    from transformers.utils import logging as hf_logging

    device = torch.device(device) if device is not None else default_device()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = Wav2Vec2ForPreTraining.from_pretrained(name_or_path, output_loading_info=True)
        try:
            fe = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
        except OSError:
            fe = Wav2Vec2FeatureExtractor(return_attention_mask=model.config.feat_extract_norm == "layer")
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load wav2vec2 model {name_or_path!r}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", []) if k.startswith(QUANTIZER_KEYS)]
    if missing:
        raise SpeechPeftError(
            f"{name_or_path!r} has no quantizer ({missing[0]} and {len(missing) - 1} more are missing): continued "
            "pretraining needs a pretraining checkpoint such as facebook/wav2vec2-xls-r-300m, not a CTC fine-tune"
        )
    model.freeze_feature_encoder()
    model.to(device).eval()
    return Wav2Vec2PretrainHost(model, fe, settings or PretrainSettings())


register_pretrain_host("wav2vec2", load_wav2vec2_pretraining)
