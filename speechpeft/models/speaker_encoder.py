"""Speaker encoders: audio -> a unit-length speaker embedding. Pluggable by name.

The first is resemblyzer's pretrained GE2E encoder (3-layer LSTM over 40 mel bands, 256-d). Its
weights ship inside the ``resemblyzer`` wheel; they are loaded here into this project's own
module (``torch.load(weights_only=True)``), so resemblyzer itself, which pulls in webrtcvad and
librosa, is never imported. Install it with ``pip install --no-deps resemblyzer``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SpeechPeftError

_ENCODERS: dict[str, Callable[[], SpeakerEncoder]] = {}


def register_speaker_encoder(name: str, factory: Callable[[], SpeakerEncoder]) -> None:
    """Make an encoder available to ``load_speaker_encoder(name)`` (e.g. an ECAPA or WavLM verifier)."""
    _ENCODERS[name] = factory


def load_speaker_encoder(name: str = "resemblyzer") -> SpeakerEncoder:
    """The speaker encoder called ``name``.

    Raises:
        SpeechPeftError: unknown name (the message lists the known ones), or its weights are missing.
    """
    if name not in _ENCODERS:
        raise SpeechPeftError(f"unknown speaker encoder {name!r}; known: {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[name]()


class SpeakerEncoder(nn.Module):
    """Interface: ``name``, ``sampling_rate``, ``embed(arrays) -> (N, D)`` unit vectors."""

    name: str = ""
    sampling_rate: int = 16_000

    def embed(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def embed_speaker(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """One unit vector for a speaker: the normalised mean of the utterance embeddings."""
        mean = self.embed(arrays).mean(0)
        return mean / mean.norm()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).item())


class ResemblyzerEncoder(SpeakerEncoder):
    """GE2E speaker encoder with resemblyzer's pretrained weights: 1.6 s partials, mean of their embeddings."""

    name = "resemblyzer-ge2e-256"
    N_MELS, N_FFT, HOP, PARTIAL_FRAMES, PARTIALS_PER_SECOND, MIN_COVERAGE = 40, 400, 160, 160, 1.3, 0.75
    TARGET_DBFS = -30.0  # quiet audio is raised to this level first, as resemblyzer does

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self.lstm = nn.LSTM(self.N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        path = Path(weights) if weights else _resemblyzer_weights()
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        self.eval()
        from transformers.audio_utils import mel_filter_bank, window_function

        self._mel = mel_filter_bank(  # librosa's defaults, which the weights were trained with
            num_frequency_bins=self.N_FFT // 2 + 1, num_mel_filters=self.N_MELS, min_frequency=0.0,
            max_frequency=self.sampling_rate / 2, sampling_rate=self.sampling_rate, norm="slaney", mel_scale="slaney",
        )  # fmt: skip
        self._window = window_function(self.N_FFT, "hann")

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames, 40), not log: what the encoder was trained on."""
        from transformers.audio_utils import spectrogram

        spec = spectrogram(
            wav, self._window, frame_length=self.N_FFT, hop_length=self.HOP, power=2.0, center=True,
            pad_mode="constant", mel_filters=self._mel,
        )  # fmt: skip
        return spec.T.astype(np.float32)  # (frames, 40)

    @torch.no_grad()
    def embed(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 256) unit vectors for 16 kHz mono arrays.

        Raises:
            SpeechPeftError: an array is empty or silent.
        """
        out = []
        for i, wav in enumerate(arrays):
            wav = np.asarray(wav, dtype=np.float32)
            rms = float(np.sqrt(np.mean(wav**2))) if wav.size else 0.0
            if rms < 1e-5:
                raise SpeechPeftError(f"reference #{i} is silent or empty; the speaker encoder needs speech")
            gain = 10 ** ((self.TARGET_DBFS - 20 * np.log10(rms)) / 20)
            wav = wav * max(1.0, gain)
            mels = self._partials(wav)  # (P, 160, 40)
            h = self.lstm(torch.from_numpy(mels))[1][0][-1]  # (P, 256): the last layer's final state
            partial = torch.relu(self.linear(h))
            partial = partial / partial.norm(dim=1, keepdim=True)
            mean = partial.mean(0)
            out.append(mean / mean.norm())
        return torch.stack(out)

    def _partials(self, wav: np.ndarray) -> np.ndarray:
        frames = int(np.ceil((len(wav) + 1) / self.HOP))
        step = int(round(self.sampling_rate / self.PARTIALS_PER_SECOND / self.HOP))
        starts = list(range(0, max(1, frames - self.PARTIAL_FRAMES + step + 1), step))
        last = starts[-1]
        if len(starts) > 1 and (len(wav) - last * self.HOP) / (self.PARTIAL_FRAMES * self.HOP) < self.MIN_COVERAGE:
            starts = starts[:-1]
        need = (starts[-1] + self.PARTIAL_FRAMES) * self.HOP
        wav = np.pad(wav, (0, max(0, need - len(wav))))
        mel = self.mel(wav)
        return np.stack([mel[s : s + self.PARTIAL_FRAMES] for s in starts])


@functools.lru_cache(maxsize=1)
def _resemblyzer_weights() -> Path:
    spec = importlib.util.find_spec("resemblyzer")  # finds the package without importing it
    folders = (spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / "pretrained.pt" if folders else None
    if path is None or not path.is_file():
        raise SpeechPeftError(
            "resemblyzer's pretrained speaker encoder is not installed: pip install --no-deps resemblyzer"
        )
    return path


register_speaker_encoder("resemblyzer", ResemblyzerEncoder)
