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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import inject, register_presets
from ..errors import SpeechPeftError
from .mas import monotonic_alignment

_FLOW = r"flow\.flows\.\d+\.conv_pre|duration_predictor\.(conv_pre|conv_1)"
_PHONEME = r"text_encoder\.encoder\.layers\.\d+\.attention\.out_proj"
# decoder-side adapters (the opt-in "usat-decoder" clone variant): HiFi-GAN's input conv and
# every residual-block conv, trained by mel reconstruction; the single-speaker decoder knows one timbre
_DECODER = r"decoder\.(conv_pre|resblocks\.\d+\.convs[12]\.\d+)"
# posterior-side adapters (the opt-in "usat-posterior" variant): a posterior encoder completed on
# the base voice alone maps other voices to z's its decoder does not render intelligibly; these let
# the mel reconstruction move the target's z to ones it does
_POSTERIOR = r"posterior_encoder\.(conv_pre|conv_proj|wavenet\.res_skip_layers\.\d+)"
PRESETS = {
    # USAT's flow adapter: every coupling layer of the flow, and the duration predictor's input
    "usat_flow": _FLOW,
    # USAT's phoneme adapter: the text encoder's attention output
    "usat_phoneme": _PHONEME,
    "usat": f"{_FLOW}|{_PHONEME}",
    "usat_decoder": _DECODER,
    "usat_with_decoder": f"{_FLOW}|{_PHONEME}|{_DECODER}",
    "usat_with_posterior": f"{_FLOW}|{_PHONEME}|{_DECODER}|{_POSTERIOR}",
}
register_presets("vits", PRESETS)


@dataclass
class VitsHost:
    """A ``VitsModel`` with its text front end (None for tiny test models built from a config).

    ``missing`` names the training-side tensors the voice's file lacked (an inference export);
    until ``speechpeft tts complete-base`` has trained them, ``loss`` would fit to noise.
    """

    model: nn.Module
    front: Any = None
    missing: list[str] = field(default_factory=list)
    # an instant base's verifier embedding -> conditioning vector (models.vits_speaker), or None
    projection: nn.Module | None = None

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
        """``input_ids`` and ``attention_mask`` (B, T) for ``texts``, zero-padded.

        Raises:
            SpeechPeftError: a text the front end cannot read (letters it cannot spell, phonemes the
                voice has no id for, another language), or nothing left to say; the message names ``where[i]``.
        """
        if self.front is None:
            raise SpeechPeftError("this VITS host has no tokenizer (a model built from a config)")
        rows = [self.front.ids(t, where[i] if where else f"text #{i}") for i, t in enumerate(texts)]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

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
        """The global conditioning (B, emb, 1): a speaker-table id, a vector of the table's width (or one
        per item, (B, emb)), or None (a single voice; on an instant base, the voice unconditioned)."""
        if self.config.speaker_embedding_size == 0:
            if speaker is not None:
                raise SpeechPeftError("this VITS model is single-speaker; it takes no speaker")
            return None
        if speaker is None:
            if self.config.num_speakers <= 1:  # a conditioned single voice (an instant base): the voice itself
                return None
            raise SpeechPeftError("this VITS model is multi-speaker; give a speaker id or vector")
        if isinstance(speaker, int):
            if not 0 <= speaker < self.config.num_speakers:
                raise SpeechPeftError(f"speaker id must be in 0..{self.config.num_speakers - 1}, got {speaker}")
            speaker = self.model.embed_speaker.weight[speaker]
        width = self.config.speaker_embedding_size
        if speaker.dim() == 2 and speaker.shape == (batch, width):  # one vector per item
            return speaker.to(self.device).unsqueeze(-1)
        vec = speaker.reshape(-1).to(self.device)
        if vec.numel() != width:
            raise SpeechPeftError(f"speaker vector has {vec.numel()} values; this model's are {width}")
        return vec.view(1, -1, 1).expand(batch, -1, -1)

    def loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        spectrogram: torch.Tensor,
        frames: torch.Tensor,
        speaker: torch.Tensor | int | None = None,
        posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
        keep_z: bool = False,
    ) -> dict[str, torch.Tensor]:
        """KL + duration loss of a batch: ``{"kl", "duration", "loss"}`` (loss = kl + duration).

        ``input_ids``/``attention_mask`` (B, T_text) from the tokenizer; ``spectrogram`` (B, bins,
        frames) and ``frames`` (B,) from ``spectrogram``. Every item needs at least as many frames
        as tokens. ``posterior`` (mean, log std), each (B, C, F), replaces the posterior encoder
        where it is frozen and takes no speaker (then ``spectrogram`` may be None). ``keep_z`` adds
        ``"z"``, the posterior sample the flow received (B, C, F).
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
        f = int(frames.max())
        y_mask = (torch.arange(f, device=self.device)[None, :] < frames[:, None]).unsqueeze(1).float()  # (B, 1, F)
        if posterior is None:
            z, _, logs_q = m.posterior_encoder(spectrogram[:, :, :f], y_mask, g)  # (B, C, F)
        else:
            mean, logs_q = (t[:, :, :f] for t in posterior)
            z = (mean + torch.randn_like(mean) * torch.exp(logs_q)) * y_mask
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
        return {"kl": kl, "duration": duration, "loss": kl + duration, **({"z": z} if keep_z else {})}

    @torch.no_grad()
    def posterior(self, spectrogram: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior encoder's (mean, log std), each (B, C, F), of a single-speaker voice."""
        f = spectrogram.shape[2]
        y_mask = (torch.arange(f, device=self.device)[None, :] < frames[:, None]).unsqueeze(1).float()
        _, mean, log_std = self.model.posterior_encoder(spectrogram, y_mask, None)
        return mean, log_std

    def synthesize(self, text: str, speaker: torch.Tensor | int | None = None, seed: int | None = 0) -> np.ndarray:
        """Waveform (float32, at ``sampling_rate``) of ``text``; ``speaker`` is a table id or a vector.

        Raises:
            SpeechPeftError: text the front end cannot read, or a speaker that does not fit the model.
        """
        ids, _ = self.tokenize([text])
        return self.synthesize_ids(ids, speaker, seed)

    def synthesize_ids(
        self, input_ids: torch.Tensor, speaker: torch.Tensor | int | None = None, seed: int | None = 0
    ) -> np.ndarray:
        """Waveform (float32, model rate) for one tokenised text (1, T)."""
        out = self.infer(input_ids, speaker=speaker, seed=seed)
        return out.waveform[0, : int(out.samples[0])].float().cpu().numpy()

    @torch.no_grad()
    def infer(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        speaker: torch.Tensor | int | None = None,
        seed: int | None = 0,
        noise_scale: float | None = None,
        noise_scale_duration: float | None = None,
        length_scale: float | None = None,
        decode: bool = True,
    ) -> Synthesis:
        """VITS inference that keeps what the decoder was given: the latent z and the durations.

        The same computation as ``VitsModel.forward`` (text encoder, stochastic duration predictor
        in reverse, prior expanded by the durations and sampled, the flow in reverse, the decoder),
        but the speaker may be a free vector, and the intermediate results are returned: they are
        the teacher that fits a posterior encoder to an inference-only voice. Noise scales default
        to the config's (Piper: 0.667, 0.8, length 1).
        """
        m, c = self.model, self.config
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        b = input_ids.shape[0]
        g = self.speaker_conditioning(speaker, b)
        if seed is not None:
            torch.manual_seed(seed)
        ns = c.noise_scale if noise_scale is None else noise_scale
        nw = c.noise_scale_duration if noise_scale_duration is None else noise_scale_duration
        ls = 1.0 / c.speaking_rate if length_scale is None else length_scale
        was_training = m.training
        m.eval()
        try:
            x_mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
            enc = m.text_encoder(input_ids=input_ids, padding_mask=x_mask, attention_mask=attention_mask)
            hidden = enc.last_hidden_state.transpose(1, 2)  # (B, H, T)
            x_mask = x_mask.transpose(1, 2)  # (B, 1, T)
            if c.use_stochastic_duration_prediction:
                log_w = m.duration_predictor(hidden, x_mask, g, reverse=True, noise_scale=nw)
            else:
                log_w = m.duration_predictor(hidden, x_mask, g)
            durations = torch.ceil(torch.exp(log_w) * x_mask * ls)[:, 0]  # (B, T) frames per token
            frames = torch.clamp_min(durations.sum(1), 1).long()  # (B,)
            f = int(frames.max())
            y_mask = (torch.arange(f, device=self.device)[None] < frames[:, None]).unsqueeze(1).float()  # (B, 1, F)
            attn = alignment_from_durations(durations, f) * y_mask  # (B, T, F)
            # (B, F, C) viewed as (B, C, F), as transformers lays it out: randn_like follows the strides,
            # so the same seed gives the same noise as VitsModel.forward
            m_p = torch.matmul(attn.transpose(1, 2), enc.prior_means).transpose(1, 2)
            logs_p = torch.matmul(attn.transpose(1, 2), enc.prior_log_variances).transpose(1, 2)
            z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * ns
            z = m.flow(z_p, y_mask, g, reverse=True) * y_mask  # what the decoder hears
            wave = m.decoder(z, g)[:, 0] if decode else None  # (B, samples)
        finally:
            m.train(was_training)
        return Synthesis(wave, frames * self.hop_length, z, frames, durations)


@dataclass
class Synthesis:
    """One batch of VITS inference: waveforms (B, S) and their valid ``samples`` (B,); the latent
    ``z`` (B, C, F) the decoder received, valid for ``frames`` (B,); ``durations`` (B, T) in frames."""

    waveform: torch.Tensor | None
    samples: torch.Tensor
    z: torch.Tensor
    frames: torch.Tensor
    durations: torch.Tensor


def alignment_from_durations(durations: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, F) 0/1: token i covers frames [sum(d[:i]), sum(d[:i+1]))."""
    end = torch.cumsum(durations, 1)  # (B, T)
    start = end - durations
    j = torch.arange(frames, device=durations.device, dtype=durations.dtype)[None, None]  # (1, 1, F)
    return ((j >= start[..., None]) & (j < end[..., None])).to(durations.dtype)
