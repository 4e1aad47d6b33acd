"""The mel reconstruction loss VITS trains its decoder with: L1 between log-mel spectrograms.

Differentiable (torch.stft); the filter bank is transformers' Slaney mel, as librosa's defaults
and VITS's ``mel_spectrogram_torch`` use. VITS's sizes: 80 bands, FFT 1024, hop 256, window 1024.
"""

from __future__ import annotations

import torch
from torch import nn


class LogMel(nn.Module):
    def __init__(self, rate: int, n_fft: int = 1024, hop: int = 256, bands: int = 80):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=bands, min_frequency=0.0, max_frequency=rate / 2,
            sampling_rate=rate, norm="slaney", mel_scale="slaney",
        )  # fmt: skip
        self.register_buffer("bank", torch.tensor(bank, dtype=torch.float32).T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.n_fft, self.hop = n_fft, hop

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, bands, frames) natural-log mel magnitudes, floored at 1e-5."""
        pad = (self.n_fft - self.hop) // 2
        x = nn.functional.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)  # (B, bins, frames)
        return torch.log(torch.clamp(self.bank @ mag, min=1e-5))


def mel_l1(mel: LogMel, generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the log-mels of two (B, samples) batches of equal length."""
    return (mel(generated) - mel(real)).abs().mean()
