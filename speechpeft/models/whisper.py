"""The Whisper host: loading, target presets, the training loss and a short-form transcribe helper.

Works on transformers' ``WhisperForConditionalGeneration`` with adapters attached or not.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import adapter_condition, adapter_layers, inject, load_adapter, register_presets, unload_adapter
from ..errors import SpeechPeftError
from .decoding import DecodeOptions
from .host import Segment, Transcript, default_device, register_host
from .whisper_generate import (
    cache_suppression,
    follow_batch_reductions,
    quiet_generate_notices,
    reduction_hook,
    report_decodes,
    retry_hook,
)
from .whisper_longform import decode_long

_BLOCK = r"(model\.)?(encoder|decoder)\.layers\.\d+\."
_ATTN = r"(model\.)?(encoder\.layers\.\d+\.self_attn|decoder\.layers\.\d+\.(self_attn|encoder_attn))"
PRESETS = {
    # q/k/v/out of encoder self-, decoder self- and cross-attention
    "attn": _ATTN + r"\.(q_proj|k_proj|v_proj|out_proj)",
    # the LoRA paper's choice: queries and values only
    "attn_qv": _ATTN + r"\.(q_proj|v_proj)",
    # every linear layer of every block; not proj_out, which is tied to the token embeddings
    "all_linear": _BLOCK + r"((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
}
register_presets("whisper", PRESETS)


quiet_generate_notices()

SAMPLING_RATE = 16_000
PROMPT_TOKENS = 4  # <|startoftranscript|><|lang|><|task|><|notimestamps|>
FRAMES_PER_SECOND = 100  # mel frames: 10 ms hop
POSITIONS_PER_SECOND = 50  # one encoder position per 2 mel frames


@dataclass
class WhisperHost:
    """A Whisper model with its processor (None for tiny test models built from a config)."""

    model: nn.Module
    processor: Any = None
    _full_positions: torch.Tensor | None = field(default=None, repr=False)  # kept by set_window

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sampling_rate(self) -> int:
        fe = self.processor.feature_extractor if self.processor is not None else None
        return int(fe.sampling_rate) if fe is not None else SAMPLING_RATE

    @property
    def english_spelling(self) -> Any:
        tok = self.processor.tokenizer if self.processor is not None else None
        return getattr(tok, "english_spelling_normalizer", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.model.encoder.conv1.weight.dtype

    @property
    def window_seconds(self) -> float:
        """The encoder window: 30 s for Whisper as trained, less in short-window mode."""
        return self.model.config.max_source_positions / POSITIONS_PER_SECOND

    @property
    def max_window_seconds(self) -> float:
        """The window the model was trained with (30 s for Whisper), whatever ``set_window`` chose."""
        if self._full_positions is None:
            return self.window_seconds
        return self._full_positions.shape[0] / POSITIONS_PER_SECOND

    def set_window(self, seconds: float) -> None:
        """Use an encoder window of ``seconds`` (≤ the model's own) for training and decoding.

        Whisper pads every input to 30 s; for short utterances most encoder work is padding. A
        shorter window slices the encoder's positional embeddings and pads mel features to match.
        The model was pre-trained on 30 s only, so measure accuracy before relying on it.

        Raises:
            SpeechPeftError: ``seconds`` is not positive or exceeds the model's original window.
        """
        enc = self.model.model.encoder
        if self._full_positions is None:
            self._full_positions = enc.embed_positions.weight.detach().clone()
        full, d_model = self._full_positions.shape
        positions = int(round(seconds * POSITIONS_PER_SECOND))
        if not 0 < positions <= full:
            raise SpeechPeftError(f"window_seconds must be in (0, {full / POSITIONS_PER_SECOND:g}], got {seconds!r}")
        table = nn.Embedding(positions, d_model, device=self._full_positions.device, dtype=self._full_positions.dtype)
        with torch.no_grad():
            table.weight.copy_(self._full_positions[:positions])  # (positions, d_model)
        table.requires_grad_(False)
        enc.embed_positions = table
        enc.max_source_positions = positions
        self.model.config.max_source_positions = positions  # the encoder checks mel length against it

    def inject(self, config: Any) -> list[str]:
        """Inject an adapter; ``config.targets`` may name a preset (attn, attn_qv, all_linear)."""
        return inject(self.model, config)

    # --- what the host protocol asks that Whisper needs nothing for ------------------------

    min_seconds = 0.0  # any non-empty input: it is padded to the window
    new_modules = ()  # the decoder and its vocabulary stay Whisper's

    def prepare_training(self, texts: Sequence[str]) -> None:
        pass

    def save_companions(self, folder: Any) -> None:
        pass

    def save_processor(self, folder: Any) -> None:
        """The processor (feature extractor + tokenizer) beside a merged model."""
        self._processor().save_pretrained(str(folder))

    def attach_adapter(self, path: Any) -> list[str]:
        """Load an adapter folder into the model (``adapters.load_adapter``)."""
        return load_adapter(self.model, path)

    def detach_adapter(self) -> None:
        """Remove the adapter without merging it."""
        if adapter_layers(self.model):
            unload_adapter(self.model, merge=False)

    # --- training --------------------------------------------------------------------------

    def features(self, arrays: Sequence[np.ndarray], sampling_rate: int = SAMPLING_RATE) -> torch.Tensor:
        """Log-mel features (B, n_mels, frames), padded to the encoder window (30 s unless set).

        Raises:
            SpeechPeftError: an array is empty, not 1-D, non-finite, longer than 30 s, or at
                another sampling rate than the model's.
        """
        fe = self._processor().feature_extractor
        if sampling_rate != fe.sampling_rate:
            raise SpeechPeftError(
                f"audio is at {sampling_rate} Hz but the model expects {fe.sampling_rate} Hz; resample first"
            )
        window = self.window_seconds
        for i, a in enumerate(arrays):
            _check_audio(a, i, sampling_rate, window)
        samples = int(round(window * sampling_rate))
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        out = fe(arrays, sampling_rate=sampling_rate, return_tensors="pt", padding="max_length", max_length=samples)
        return out.input_features.to(self.device, self.dtype)

    def labels(self, texts: Sequence[str], language: str | None, task: str = "transcribe") -> torch.Tensor:
        """Target token ids (B, L): Whisper's prefix tokens, the text, end-of-text; -100 pads.

        The decoder-start token is left out: the model prepends it when shifting labels right.

        Raises:
            SpeechPeftError: a text is longer than the decoder can take.
        """
        tok = self._processor().tokenizer
        tok.set_prefix_tokens(
            language=_language_code(language) if language else None, task=task, predict_timestamps=False
        )
        ids = tok(list(texts)).input_ids
        start = self.model.config.decoder_start_token_id
        ids = [seq[1:] if seq and seq[0] == start else seq for seq in ids]
        limit = self.model.config.max_target_positions - 1  # the decoder-start token takes one position
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                raise SpeechPeftError(
                    f"text #{i} is {len(seq)} tokens with Whisper's prefix, more than the decoder's {limit}"
                )
        out = torch.full((len(ids), max(map(len, ids))), -100, dtype=torch.long)
        for i, seq in enumerate(ids):
            out[i, : len(seq)] = torch.tensor(seq)
        return out.to(self.device)

    def batch(
        self,
        arrays: Sequence[np.ndarray],
        texts: Sequence[str],
        language: str | None,
        pad_to: int | None = None,
        task: str = "transcribe",
    ) -> dict[str, torch.Tensor]:
        """A training batch: ``input_features`` and ``labels``. (``pad_to`` changes nothing:
        every input is padded to the encoder window already.)"""
        return {"input_features": self.features(arrays), "labels": self.labels(texts, language, task)}

    def check_text(self, text: str, language: str | None) -> None:
        """Raise SpeechPeftError if ``text`` with Whisper's prefix is longer than the decoder takes."""
        try:
            self.labels([text], language)
        except SpeechPeftError as e:
            raise SpeechPeftError(str(e).removeprefix("text #0 ")) from None

    def max_new_tokens(self, seconds: float, per_second: float) -> int:
        """16 + ``per_second`` x seconds, within what the decoder holds after its 4 prompt tokens."""
        limit = self.model.config.max_target_positions - PROMPT_TOKENS
        return min(limit, int(16 + per_second * seconds))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of ``batch["labels"]`` given ``batch["input_features"]``."""
        out = self.model(input_features=batch["input_features"], labels=batch["labels"])
        return out.loss

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """The label tokens the cross-entropy averages over."""
        return int((batch["labels"] != -100).sum())

    # --- decoding --------------------------------------------------------------------------

    @torch.no_grad()
    def transcribe(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        sampling_rate: int = SAMPLING_RATE,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        adapter_ids: Sequence[int] | None = None,
    ) -> list[str]:
        """Transcribe (or translate) short utterances (≤ 30 s each); adapters stay active.

        ``language`` (a code such as ``"zh"`` or a name such as ``"chinese"``) is forced through
        ``generate(language=...)``, the current transformers way; None lets Whisper detect it.
        ``max_new_tokens`` caps each output (None: the model's limit), which bounds the cost of
        the repetition loops an unadapted model can fall into. ``adapter_ids`` (one per array)
        picks each utterance's adapter from a bank (``adapters.bank.load_bank``) in one batch.

        Raises:
            SpeechPeftError: bad audio (see ``features``), unknown language or task, beam < 1.
        """
        kwargs = self._decode_kwargs(language, task, beam)
        _check_ids(adapter_ids, len(arrays))
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = max_new_tokens
        was_training = self.model.training
        self.model.eval()
        texts: list[str] = []
        try:
            for start in range(0, len(arrays), batch_size):
                feats = self.features(arrays[start : start + batch_size], sampling_rate)
                with self._adapters_for(adapter_ids, start, batch_size), self._condition(kwargs):
                    ids = self.model.generate(input_features=feats, **kwargs)
                texts += [t.strip() for t in self._processor().batch_decode(ids, skip_special_tokens=True)]
        finally:
            self.model.train(was_training)
        return texts

    @torch.no_grad()
    def transcribe_segments(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
    ) -> list[list[Segment]]:
        """Timed segments for audio of any length: ``transcribe_long``'s, with default options."""
        return [t.segments for t in self.transcribe_long(arrays, language, task, beam, progress, adapter_ids)]

    @torch.no_grad()
    def transcribe_long(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
        decode: DecodeOptions | None = None,
    ) -> list[Transcript]:
        """One ``Transcript`` per array (16 kHz mono, any length); adapters stay active.

        Whisper predicts timestamp tokens. Audio longer than the encoder window is decoded by
        transformers' sequential long-form algorithm: decode one window, move to the last
        predicted timestamp, repeat. Several arrays are decoded as one batch. ``progress`` is
        called with the seconds of this batch decoded so far. ``decode`` adds openai-whisper's
        options (``models.decoding``): temperature fallback, no-speech skipping, an initial
        prompt, conditioning on previous text, word timestamps. Without ``language``, each file's
        language is detected on its first window and reported with its probability.

        Raises:
            SpeechPeftError: bad audio (empty, non-finite, not 1-D), unknown language or task, beam < 1.
        """
        decode = (decode or DecodeOptions()).resolved()
        kwargs = self._decode_kwargs(language, task, beam)
        _check_ids(adapter_ids, len(arrays))
        for i, a in enumerate(arrays):
            _check_audio(a, i, SAMPLING_RATE, math.inf)
        return decode_long(self, [np.asarray(a, dtype=np.float32) for a in arrays], kwargs, task, progress,
                           adapter_ids, decode)  # fmt: skip

    def _condition(self, kwargs: dict[str, Any]) -> Any:
        """What the adapter needs for this call (Master-ASR: the language, as a Whisper code)."""
        return adapter_condition(self.model, language=kwargs.get("language"))

    def _adapters_for(self, ids: Sequence[int] | None, start: int, size: int) -> Any:
        if ids is None:
            return contextlib.nullcontext()
        return self.mixed_adapters(list(ids)[start : start + size])

    @contextlib.contextmanager
    def mixed_adapters(self, ids: Sequence[int]) -> Iterator[None]:
        """Decode a batch where row i uses bank adapter ``ids[i]`` (-1: none); see ``adapters.bank``.

        transformers' Whisper generate drops finished items from its batch between passes, and
        temperature fallback re-runs some rows as a smaller batch; the bank's ids follow both
        (``whisper_generate``), so every row keeps its own adapter. Beam rows repeat their
        utterance's id. The ids are the calling thread's.
        """
        from ..adapters.bank import bank_ids, set_bank_ids

        follow_batch_reductions(self.model)
        report_decodes(self.model)
        full = torch.as_tensor(list(ids), dtype=torch.int64, device=self.device)
        current = [full]

        def kept(rows) -> None:  # long-form dropped finished files: rows index the whole batch
            current[0] = full[torch.as_tensor(rows, dtype=torch.int64, device=full.device)]
            set_bank_ids(self.model, current[0])

        def retried(rows: list[int]) -> None:  # temperature fallback re-runs rows of the current batch
            set_bank_ids(self.model, current[0][torch.as_tensor(rows, dtype=torch.int64, device=full.device)])

        with bank_ids(self.model, full), reduction_hook(kept), retry_hook(retried):
            yield

    def _decode_kwargs(self, language: str | None, task: str, beam: int) -> dict[str, Any]:
        if task not in ("transcribe", "translate"):
            raise SpeechPeftError(f"task must be 'transcribe' or 'translate', got {task!r}")
        if beam < 1:
            raise SpeechPeftError(f"beam must be >= 1, got {beam}")
        kwargs: dict[str, Any] = {"task": task, "num_beams": beam, "do_sample": False}
        if language:
            kwargs["language"] = _language_code(language)
        return kwargs

    def _processor(self) -> Any:
        if self.processor is None:
            raise SpeechPeftError(
                "this Whisper host has no processor (a model built from a config); load one by hub id or path"
            )
        return self.processor


def _check_ids(ids: Sequence[int] | None, n: int) -> None:
    if ids is not None and len(ids) != n:
        raise SpeechPeftError(f"adapter_ids has {len(ids)} entries for {n} utterances; give one per utterance")


def _check_audio(a: np.ndarray, index: int, sampling_rate: int, window: float) -> None:
    a = np.asarray(a)
    if a.ndim != 1:
        raise SpeechPeftError(f"audio #{index} must be mono (1-D), got shape {a.shape}")
    if a.size == 0:
        raise SpeechPeftError(f"audio #{index} is empty")
    if not np.isfinite(a).all():
        raise SpeechPeftError(f"audio #{index} holds NaN or inf samples")
    if math.isfinite(window) and a.size > window * sampling_rate:
        raise SpeechPeftError(
            f"audio #{index} is {a.size / sampling_rate:.1f} s, longer than the {window:g} s encoder window "
            "(long-form goes through `speechpeft transcribe`)"
        )


def _language_code(language: str) -> str:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    key = language.strip().lower().strip("<|>")
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise SpeechPeftError(
        f"unknown Whisper language {language!r}; use a code such as 'en' or 'zh', or a name such as 'chinese'"
    )


def load_whisper(
    name_or_path: str = "openai/whisper-base",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> WhisperHost:
    """Load a Whisper model and processor by hub id or local path.

    ``dtype`` defaults to float32 (on CPU, fp16 is ~3.5x slower; on GPU, train with autocast).

    Raises:
        SpeechPeftError: the model cannot be found (offline and not cached, or a bad path).
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    device = torch.device(device) if device is not None else default_device()
    try:
        model = WhisperForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype or torch.float32)
        processor = WhisperProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load Whisper model {name_or_path!r}: {first}") from None
    model.to(device).eval()
    cache_suppression(model)
    return WhisperHost(model, processor)


register_host("whisper", load_whisper)


def whisper_languages() -> dict[str, str]:
    """Whisper's languages, code -> English name (``{"en": "english", "zh": "chinese", ...}``)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)
