"""TTS metrics: speaker similarity, intelligibility, and what a speaker costs to store.

- Speaker similarity: cosine between the speaker-encoder embedding of each synthesized
  utterance and the mean embedding of held-out real references of the target speaker. The
  verifier's name is part of every result: similarities from different verifiers do not compare.
- Intelligibility: CER/WER of Whisper's transcript of the synthesized speech against the text.
- Bytes per speaker: the size of the speaker directory on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from .metrics import error_rate
from .normalise import make_normaliser


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    return audio if rate == target else soxr.resample(audio, rate, target, quality="HQ").astype(np.float32)


def speaker_similarity(encoder: Any, synthesized: Sequence[np.ndarray], rate: int, references: Sequence[np.ndarray],
                       reference_rate: int) -> dict[str, Any]:  # fmt: skip
    """Mean cosine of synthesized utterances to the references' speaker embedding, with the per-utterance values."""
    target = encoder.embed_speaker([resample(a, reference_rate, encoder.sampling_rate) for a in references])
    synth = encoder.embed([resample(a, rate, encoder.sampling_rate) for a in synthesized])
    values = [float(v) for v in synth @ target]
    return {"verifier": encoder.name, "cosine": float(np.mean(values)), "per_utterance": values}


def intelligibility(whisper: Any, synthesized: Sequence[np.ndarray], rate: int, texts: Sequence[str],
                    language: str, metric: str = "wer", normaliser: str = "basic") -> dict[str, Any]:  # fmt: skip
    """Whisper's error rate on the synthesized speech, pooled over the utterances."""
    hyps = whisper.transcribe([resample(a, rate, 16_000) for a in synthesized], language=language)
    result = error_rate(list(texts), hyps, metric, make_normaliser(normaliser)).as_dict()
    return {"asr": getattr(whisper.model.config, "_name_or_path", "whisper"), "metric": metric, **result,
            "hypotheses": hyps}  # fmt: skip


def speaker_bytes(folder: str | Path) -> int:
    """Bytes on disk of a speaker directory (every file in it)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
