"""The decoding options openai-whisper and faster-whisper users rely on, as one value a host takes.

Semantics follow openai-whisper's ``transcribe``: a window is decoded at the first temperature;
when its output compresses too well (gzip ratio above ``compression_ratio_threshold``: repetition)
or its mean token log-probability is below ``logprob_threshold``, it is decoded again at the next
temperature. A window whose no-speech probability is above ``no_speech_threshold`` while its
log-probability is below ``logprob_threshold`` is taken as silence and gives no text.

speechpeft's default stays one deterministic pass (``temperatures=(0.0,)``, no thresholds): that
is what its throughput figures measure. With more than one temperature, every threshold left
unset takes openai-whisper's default (2.4, -1.0, 0.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import SpeechPeftError

OPENAI_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
OPENAI_COMPRESSION_RATIO = 2.4
OPENAI_LOGPROB = -1.0
OPENAI_NO_SPEECH = 0.6


@dataclass(frozen=True)
class DecodeOptions:
    temperatures: tuple[float, ...] = (0.0,)  # one: no fallback; 0 is greedy (or beam search)
    compression_ratio_threshold: float | None = None
    logprob_threshold: float | None = None
    no_speech_threshold: float | None = None
    initial_prompt: str | None = None  # text the first window is conditioned on (names, spelling)
    condition_on_previous_text: bool = False  # long-form: each window sees the previous one's text
    word_timestamps: bool = False  # words with start/end, from cross-attention alignment
    seed: int = 0  # sampling at temperature > 0 draws from torch's RNG, seeded per batch

    def __post_init__(self):
        if not self.temperatures:
            raise SpeechPeftError("--temperature needs at least one value, e.g. 0 or 0,0.2,0.4,0.6,0.8,1.0")
        for t in self.temperatures:
            if not math.isfinite(t) or t < 0:
                raise SpeechPeftError(f"--temperature values must be >= 0, got {t:g}")
        ratio = self.compression_ratio_threshold
        if ratio is not None and not ratio > 0:
            raise SpeechPeftError(f"--compression-ratio-threshold must be > 0, got {ratio:g}")
        if self.no_speech_threshold is not None and not 0 <= self.no_speech_threshold <= 1:
            raise SpeechPeftError(f"--no-speech-threshold must be within [0, 1], got {self.no_speech_threshold:g}")
        if self.initial_prompt is not None and not self.initial_prompt.strip():
            raise SpeechPeftError("--initial-prompt is empty")

    @property
    def fallback(self) -> bool:
        return len(self.temperatures) > 1

    @property
    def samples(self) -> bool:
        return any(t > 0 for t in self.temperatures)

    def resolved(self) -> DecodeOptions:
        """The options as decoding applies them: with fallback, unset thresholds take
        openai-whisper's defaults; a no-speech threshold always comes with a log-probability
        threshold (openai-whisper judges silence by both)."""
        out = self
        if self.fallback:
            out = replace(
                out,
                compression_ratio_threshold=_or(out.compression_ratio_threshold, OPENAI_COMPRESSION_RATIO),
                logprob_threshold=_or(out.logprob_threshold, OPENAI_LOGPROB),
                no_speech_threshold=_or(out.no_speech_threshold, OPENAI_NO_SPEECH),
            )
        if out.no_speech_threshold is not None and out.logprob_threshold is None:
            out = replace(out, logprob_threshold=OPENAI_LOGPROB)
        return out

    def describe(self) -> dict:
        """What a transcript's JSON records of how it was decoded."""
        r = self.resolved()
        return {
            "temperature": list(r.temperatures),
            "compression_ratio_threshold": r.compression_ratio_threshold,
            "logprob_threshold": r.logprob_threshold,
            "no_speech_threshold": r.no_speech_threshold,
            "initial_prompt": r.initial_prompt,
            "condition_on_previous_text": r.condition_on_previous_text,
            "word_timestamps": r.word_timestamps,
            **({"seed": r.seed} if r.samples else {}),
        }


def parse_temperatures(text: str) -> tuple[float, ...]:
    """``"0"`` or ``"0,0.2,0.4"`` -> the temperatures.

    Raises:
        SpeechPeftError: a value is not a number.
    """
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SpeechPeftError(f"--temperature takes comma-separated numbers, e.g. 0,0.2,0.4; got {text!r}") from None


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
