"""What the training loop, evaluation and recipes ask of a speech model: the host protocol, and a
registry that picks a host from the checkpoint's ``config.model_type`` (as transformers' Auto
classes do), so that ``model.name`` alone decides which host serves a recipe.

A host wraps a transformers model with what it needs to train and decode: its sampling rate, the
longest input it takes in one piece, how to turn audio and text into a batch, its loss, and how to
transcribe. Whisper registers itself in ``models/whisper.py``; nothing outside a host's own file
asks which host it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import SpeechPeftError


class Word(NamedTuple):
    """One word with its time span in seconds from the start of the audio (``--word-timestamps``)."""

    start: float
    end: float
    word: str  # as decoded, with its leading space where the language spaces its words


class Segment(NamedTuple):
    """A stretch of decoded text with its time span in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()  # filled when word timestamps are asked for
    temperature: float | None = None  # the temperature that produced it, under temperature fallback

    def shifted(self, seconds: float) -> Segment:
        """The same segment ``seconds`` later (a chunk's offset in its file)."""
        words = tuple(Word(w.start + seconds, w.end + seconds, w.word) for w in self.words)
        return self._replace(start=self.start + seconds, end=self.end + seconds, words=words)


class Transcript(NamedTuple):
    """One file's decoding: its segments, and the language (detected, with its probability, or forced)."""

    segments: list[Segment]
    language: str | None = None
    language_probability: float | None = None  # None when the language was given, not detected


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ASRHost(Protocol):
    """A speech recogniser the loop can adapt, evaluate and decode with."""

    model: nn.Module

    @property
    def sampling_rate(self) -> int:
        """Audio samples per second the model expects (inputs are resampled to it)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def window_seconds(self) -> float:
        """The longest utterance the model takes in one piece, as now set."""

    @property
    def max_window_seconds(self) -> float:
        """The longest window ``set_window`` accepts (Whisper: 30 s)."""

    @property
    def english_spelling(self) -> Mapping[str, str] | None:
        """British -> American spellings for the English normaliser, where the model brings them."""

    @property
    def min_seconds(self) -> float:
        """The shortest input the model's input layer takes (0 where any non-empty one will do)."""

    new_modules: Sequence[str]  # modules this host made for the run (a new CTC head): trained whole, stored

    def set_window(self, seconds: float) -> None:
        """Use inputs of at most ``seconds`` (shorter is faster where the model pads to a window).

        Raises:
            SpeechPeftError: ``seconds`` outside (0, max_window_seconds].
        """

    def inject(self, config: Any) -> list[str]:
        """Inject an adapter; the host's target presets may be named."""

    def prepare_training(self, texts: Sequence[str]) -> None:
        """Get ready to learn ``texts`` (a CTC host builds its vocabulary and head from them)."""

    def save_companions(self, folder: Path) -> None:
        """Write what an adapter of this host needs beside its weights (a vocabulary) into ``folder``."""

    def save_processor(self, folder: Path) -> None:
        """Write what transformers needs beside a merged model to run it (processor, tokenizer)."""

    def attach_adapter(self, path: str | Path) -> list[str]:
        """Load an adapter folder into the model, with whatever the host keeps beside it."""

    def detach_adapter(self) -> None:
        """Remove the adapter, leaving the host as loaded."""

    def check_text(self, text: str, language: str | None) -> None:
        """Raise SpeechPeftError (without a location; the caller adds it) if ``text`` cannot be a
        training target: too long for the decoder, or characters the vocabulary lacks."""

    def batch(
        self, arrays: Sequence[np.ndarray], texts: Sequence[str], language: str | None, pad_to: int | None = None
    ) -> dict[str, Any]:
        """A training batch for audio (at ``sampling_rate``) and transcripts. ``pad_to``: pad the
        audio to at least this many samples (a process's shard of a batch under torchrun is padded
        as the whole batch would be, so that every utterance is computed as in one process)."""

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The supervised loss of a batch (mean over its tokens or frames)."""

    def loss_units(self, batch: dict[str, Any]) -> int:
        """How many units ``loss`` averages over (label tokens, utterances): the weight of this
        batch when the shards of one batch are combined across processes."""

    def transcribe(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        beam: int = 1,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Transcripts of utterances no longer than ``window_seconds``; adapters stay active."""

    def transcribe_segments(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
    ) -> list[list[Segment]]:
        """Timed segments of files of any length (``speechpeft transcribe``)."""

    def transcribe_long(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
        decode: Any = None,
    ) -> list[Transcript]:
        """``transcribe_segments`` with decoding options (``models.decoding.DecodeOptions``) and, per
        file, the language (detected or given)."""

    def max_new_tokens(self, seconds: float, per_second: float) -> int | None:
        """The decoding cap for an utterance of ``seconds``: 16 + ``per_second`` x seconds, within
        the decoder's limit (None for models that emit one label per frame, like CTC)."""


_HOSTS: dict[str, Callable[..., ASRHost]] = {}
_PRETRAIN_HOSTS: dict[str, Callable[..., Any]] = {}


def register_host(model_type: str, loader: Callable[..., ASRHost]) -> None:
    """Serve checkpoints whose ``config.model_type`` is ``model_type`` with ``loader(name, device=)``."""
    _HOSTS[model_type] = loader


def registered_hosts() -> list[str]:
    return sorted(_HOSTS)


def register_pretrain_host(model_type: str, loader: Callable[..., Any]) -> None:
    """Serve self-supervised continued pretraining of ``model_type`` checkpoints with
    ``loader(name, device=, settings=)`` (see ``models.wav2vec2_pretrain``)."""
    _PRETRAIN_HOSTS[model_type] = loader


def load_pretrain_host(name_or_path: str, device: str | torch.device | None = None, settings: Any = None) -> Any:
    """The registered pretraining host for a checkpoint, chosen by its ``config.model_type``.

    Raises:
        SpeechPeftError: the checkpoint cannot be found, or its model type has no pretraining objective here.
    """
    model_type = model_type_of(name_or_path)
    loader = _PRETRAIN_HOSTS.get(model_type)
    if loader is None:
        served = ", ".join(sorted(_PRETRAIN_HOSTS))
        raise SpeechPeftError(f"{name_or_path!r} is a {model_type!r} model; continued pretraining serves {served}")
    return loader(name_or_path, device=device, settings=settings)


def model_type_of(name_or_path: str) -> str:
    """``config.model_type`` of a hub id or a local checkpoint folder, read from its config.json.

    Raises:
        SpeechPeftError: no config can be found or read (offline and not cached, or a bad path).
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path).model_type
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load model {name_or_path!r}: {first}") from None


def load_host(name_or_path: str, device: str | torch.device | None = None) -> ASRHost:
    """The registered host for a checkpoint, chosen by its ``config.model_type``, loaded.

    Raises:
        SpeechPeftError: the checkpoint cannot be found, or no host serves its model type.
    """
    model_type = model_type_of(name_or_path)
    loader = _HOSTS.get(model_type)
    if loader is None:
        raise SpeechPeftError(
            f"{name_or_path!r} is a {model_type!r} model; speechpeft serves {', '.join(registered_hosts())}"
        )
    return loader(name_or_path, device=device)
