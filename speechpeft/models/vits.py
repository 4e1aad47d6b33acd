"""The VITS host: loading, synthesis, and the training forward transformers does not provide.

transformers' ``VitsModel`` raises ``NotImplementedError`` when given labels, so the adaptation
loss is assembled here from its submodules, as the VITS paper trains it (without the
adversarial parts): the posterior encoder turns the target's linear spectrogram into z; the
flow maps z to z_p; monotonic alignment search aligns z_p with the text prior; the loss is the
KL divergence between posterior and aligned prior plus the duration predictor's loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import inject, register_presets
from ..errors import SpeechPeftError
from .mas import monotonic_alignment

_FLOW = r"flow\.flows\.\d+\.conv_pre|duration_predictor\.(conv_pre|conv_1)"
_PHONEME = r"text_encoder\.encoder\.layers\.\d+\.attention\.out_proj"
PRESETS = {
    # USAT's flow adapter: every coupling layer of the flow, and the duration predictor's input
    "usat_flow": _FLOW,
    # USAT's phoneme adapter: the text encoder's attention output
    "usat_phoneme": _PHONEME,
    "usat": f"{_FLOW}|{_PHONEME}",
}
register_presets("vits", PRESETS)


@dataclass
class VitsHost:
    """A ``VitsModel`` with its tokenizer (None for tiny test models built from a config)."""

    model: nn.Module
    tokenizer: Any = None

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def sampling_rate(self) -> int:
        return int(self.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        """Audio samples per spectrogram frame: the decoder's total upsampling."""
        return int(np.prod(self.config.upsample_rates))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str], where: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (B, T) for ``texts``.

        Raises:
            SpeechPeftError: a text has letters the tokenizer cannot spell (it would drop them
                silently), or nothing left to say; the message names ``where[i]``.
        """
        tok = self.tokenizer
        if tok is None:
            raise SpeechPeftError("this VITS host has no tokenizer (a model built from a config)")
        vocab = set(tok.get_vocab())
        for i, text in enumerate(texts):
            name = where[i] if where else f"text #{i}"
            if not tok.phonemize:  # character vocabularies: letters outside it would vanish
                normal = tok.normalize_text(text) if tok.normalize else text
                bad = sorted({c for c in normal if c.isalnum() and c not in vocab})
                if bad:
                    raise SpeechPeftError(
                        f"{name}: this model's tokenizer cannot spell {''.join(bad)!r} (in {text[:40]!r})"
                    )
            if not tok(text).input_ids:
                raise SpeechPeftError(f"{name}: nothing to say after the tokenizer's normalisation: {text[:40]!r}")
        enc = tok(list(texts), padding=True, return_tensors="pt")
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def inject(self, config: Any) -> list[str]:
        """Inject an adapter; ``config.targets`` may name a preset (usat, usat_flow, usat_phoneme)."""
        return inject(self.model, config)

    def spectrogram(self, arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear magnitude spectrograms (B, bins, frames), zero-padded, and their frame counts.

        The STFT matches the decoder: n_fft = 2 (bins - 1), hop = the decoder's upsampling, Hann window.

        Raises:
            SpeechPeftError: an array is empty or not 1-D.
        """
        n_fft = 2 * (self.config.spectrogram_bins - 1)
        hop = self.hop_length
        specs = []
        for i, a in enumerate(arrays):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 1 or a.size == 0:
                raise SpeechPeftError(f"audio #{i} must be non-empty mono (1-D), got shape {a.shape}")
            x = torch.from_numpy(a).to(self.device)
            x = nn.functional.pad(x[None, None], ((n_fft - hop) // 2, (n_fft - hop) // 2), mode="reflect")[0, 0]
            window = torch.hann_window(n_fft, device=self.device)
            stft = torch.stft(x, n_fft, hop_length=hop, window=window, center=False, return_complex=True)
            specs.append(torch.sqrt(stft.real**2 + stft.imag**2 + 1e-6))  # (bins, frames)
        lengths = torch.tensor([s.shape[1] for s in specs], device=self.device)
        out = torch.zeros(len(specs), specs[0].shape[0], int(lengths.max()), device=self.device)
        for i, s in enumerate(specs):
            out[i, :, : s.shape[1]] = s
        return out, lengths

    def speaker_conditioning(self, speaker: torch.Tensor | int | None, batch: int) -> torch.Tensor | None:
        """The global conditioning (B, emb, 1): a speaker-table id, a vector of the table's width, or None."""
        if self.config.speaker_embedding_size == 0:
            if speaker is not None:
                raise SpeechPeftError("this VITS model is single-speaker; it takes no speaker")
            return None
        if speaker is None:
            raise SpeechPeftError("this VITS model is multi-speaker; give a speaker id or vector")
        if isinstance(speaker, int):
            if not 0 <= speaker < self.config.num_speakers:
                raise SpeechPeftError(f"speaker id must be in 0..{self.config.num_speakers - 1}, got {speaker}")
            speaker = self.model.embed_speaker.weight[speaker]
        vec = speaker.reshape(-1).to(self.device)
        if vec.numel() != self.config.speaker_embedding_size:
            raise SpeechPeftError(
                f"speaker vector has {vec.numel()} values; this model's are {self.config.speaker_embedding_size}"
            )
        return vec.view(1, -1, 1).expand(batch, -1, -1)

    def loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        spectrogram: torch.Tensor,
        frames: torch.Tensor,
        speaker: torch.Tensor | int | None = None,
    ) -> dict[str, torch.Tensor]:
        """KL + duration loss of a batch: ``{"kl", "duration", "loss"}`` (loss = kl + duration).

        ``input_ids``/``attention_mask`` (B, T_text) from the tokenizer; ``spectrogram`` (B, bins,
        frames) and ``frames`` (B,) from ``spectrogram``. Every item needs at least as many frames
        as tokens.
        """
        m = self.model
        b = input_ids.shape[0]
        g = self.speaker_conditioning(speaker, b)
        x_mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        enc = m.text_encoder(input_ids=input_ids, padding_mask=x_mask, attention_mask=attention_mask)
        hidden = enc.last_hidden_state.transpose(1, 2)  # (B, H, T)
        m_p = enc.prior_means.transpose(1, 2)  # (B, C, T)
        logs_p = enc.prior_log_variances.transpose(1, 2)  # (B, C, T): log std, as VITS names it logs_p
        x_mask = x_mask.transpose(1, 2)  # (B, 1, T)
        f = spectrogram.shape[2]
        y_mask = (torch.arange(f, device=self.device)[None, :] < frames[:, None]).unsqueeze(1).float()  # (B, 1, F)
        z, _, logs_q = m.posterior_encoder(spectrogram, y_mask, g)  # (B, C, F)
        z_p = m.flow(z, y_mask, g)  # (B, C, F)

        with torch.no_grad():  # log N(z_p[:, :, j]; m_p[:, :, i], exp(logs_p)) for every (i, j)
            inv_var = torch.exp(-2 * logs_p)  # (B, C, T)
            lp1 = torch.sum(-0.5 * math.log(2 * math.pi) - logs_p, dim=1, keepdim=True)  # (B, 1, T)
            lp2 = torch.matmul(-0.5 * (z_p**2).transpose(1, 2), inv_var)  # (B, F, T)
            lp3 = torch.matmul(z_p.transpose(1, 2), m_p * inv_var)  # (B, F, T)
            lp4 = torch.sum(-0.5 * (m_p**2) * inv_var, dim=1, keepdim=True)  # (B, 1, T)
            scores = (lp1 + lp2 + lp3 + lp4).transpose(1, 2)  # (B, T, F)
            attn = monotonic_alignment(scores, attention_mask.sum(1), frames)  # (B, T, F)

        durations = attn.sum(2).unsqueeze(1)  # (B, 1, T) frames per token
        dp = m.duration_predictor
        if self.config.use_stochastic_duration_prediction:
            nll = dp(hidden, x_mask, g, durations=durations, reverse=False)  # (B,)
            duration = nll.sum() / x_mask.sum()
        else:
            log_target = torch.log(durations + 1e-6) * x_mask
            duration = torch.sum((dp(hidden, x_mask, g) - log_target) ** 2) / x_mask.sum()

        m_p_frames = torch.matmul(m_p, attn)  # (B, C, F)
        logs_p_frames = torch.matmul(logs_p, attn)  # (B, C, F)
        kl = logs_p_frames - logs_q - 0.5 + 0.5 * (z_p - m_p_frames) ** 2 * torch.exp(-2 * logs_p_frames)
        kl = torch.sum(kl * y_mask) / y_mask.sum()
        return {"kl": kl, "duration": duration, "loss": kl + duration}

    def synthesize(self, text: str, speaker: torch.Tensor | int | None = None, seed: int | None = 0) -> np.ndarray:
        """Waveform (float32, at ``sampling_rate``) of ``text``; ``speaker`` is a table id or a vector.

        Raises:
            SpeechPeftError: text the tokenizer cannot spell, or a speaker that does not fit the model.
        """
        ids, _ = self.tokenize([text])
        return self.synthesize_ids(ids, speaker, seed)

    @torch.no_grad()
    def synthesize_ids(
        self, input_ids: torch.Tensor, speaker: torch.Tensor | int | None = None, seed: int | None = 0
    ) -> np.ndarray:
        """Waveform (float32, model rate) for one tokenised text (1, T)."""
        m = self.model
        g = self.speaker_conditioning(speaker, 1)
        if seed is not None:
            torch.manual_seed(seed)
        was_training = m.training
        m.eval()
        try:
            if g is None:
                out = m(input_ids=input_ids.to(self.device))
            else:  # VitsModel takes only a table id; run its inference with a free vector
                out = _forward_with_vector(m, input_ids.to(self.device), g)
        finally:
            m.train(was_training)
        return out.waveform[0].float().cpu().numpy()


def _forward_with_vector(model: nn.Module, input_ids: torch.Tensor, g: torch.Tensor) -> Any:
    """VitsModel.forward with the speaker table bypassed: the table's lookup returns ``g``."""
    table = model.embed_speaker

    class _Fixed(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return g[:, :, 0].expand(ids.shape[0], -1)

    model.embed_speaker = _Fixed()
    try:
        return model(input_ids=input_ids, speaker_id=0)
    finally:
        model.embed_speaker = table


def load_vits(name_or_path: str, device: str | torch.device | None = None) -> VitsHost:
    """Load a VITS model and its tokenizer by hub id or local path (fp32).

    Raises:
        SpeechPeftError: the model cannot be found or loaded.
    """
    from transformers import VitsModel, VitsTokenizer

    try:
        model = VitsModel.from_pretrained(name_or_path, dtype=torch.float32)
        tokenizer = VitsTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load VITS model {name_or_path!r}: {first}") from None
    model.to(torch.device(device) if device else torch.device("cpu")).eval()
    return VitsHost(model, tokenizer)
