"""The wav2vec 2.0 CTC host: a language the model never heard, with a vocabulary of its own.

Works on transformers' ``Wav2Vec2ForCTC``, loaded by hub id or path. A bare pretraining
checkpoint (xls-r, mms-300m: no CTC head, no tokenizer) gets a character vocabulary built from
the training transcripts (``|`` between words, ``[UNK]``, ``[PAD]`` as the CTC blank) and a new
head sized to it, trained whole beside the adapter and stored in the adapter's file; the
vocabulary is saved beside it as a real ``Wav2Vec2CTCTokenizer``. A checkpoint that already has
a CTC tokenizer keeps it, and training text it cannot spell is refused by line.

Decoding is greedy CTC. The feature encoder (the conv stack) is always frozen.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import (
    adapter_condition,
    adapter_layers,
    inject,
    load_adapter,
    read_adapter,
    register_presets,
    unload_adapter,
)
from ..errors import SpeechPeftError
from .decoding import DecodeOptions
from .host import Segment, Transcript, default_device, register_host

DEFAULTS = DecodeOptions().describe()

_LAYER = r"(wav2vec2\.)?encoder\.layers\.\d+\."
PRESETS = {
    "attn": _LAYER + r"attention\.(q_proj|k_proj|v_proj|out_proj)",
    "attn_qv": _LAYER + r"attention\.(q_proj|v_proj)",
    "all_linear": _LAYER
    + r"(attention\.(q_proj|k_proj|v_proj|out_proj)|feed_forward\.(intermediate_dense|output_dense))",
}
register_presets("wav2vec2", PRESETS)

HEAD = "lm_head"
PAD, UNK, WORD = "[PAD]", "[UNK]", "|"
MAX_WINDOW_SECONDS = 60.0  # attention is quadratic in length; longer files are decoded in pieces


def min_samples(config: Any, frames: int = 1) -> int:
    """The fewest input samples from which the conv feature encoder makes ``frames`` frames."""
    need = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
        need = (need - 1) * stride + kernel
    return need


def build_vocabulary(texts: Sequence[str]) -> dict[str, int]:
    """``[PAD]`` (the CTC blank), ``[UNK]``, ``|`` (between words), then every other character
    of ``texts``, sorted."""
    chars = sorted({c for t in texts for c in t} - {" ", WORD})
    return {PAD: 0, UNK: 1, WORD: 2, **{c: i + 3 for i, c in enumerate(chars)}}


def make_tokenizer(vocab: dict[str, int]) -> Any:
    """A ``Wav2Vec2CTCTokenizer`` over ``vocab``."""
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(
            str(path),
            unk_token=UNK,
            pad_token=PAD,
            word_delimiter_token=WORD,
            bos_token=None,
            eos_token=None,
            do_lower_case=False,
        )


class _Wav2Vec2Audio:
    """What both wav2vec 2.0 hosts (CTC here, pretraining in wav2vec2_pretrain.py) tell alike:
    device, sampling rate, and the window (the longest input taken in one piece)."""

    model: nn.Module
    feature_extractor: Any
    _window: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def window_seconds(self) -> float:
        return self._window

    @property
    def max_window_seconds(self) -> float:
        return MAX_WINDOW_SECONDS

    def set_window(self, seconds: float) -> None:
        """Take utterances of at most ``seconds`` in one piece (longer ones are decoded in pieces)."""
        if not 0 < seconds <= MAX_WINDOW_SECONDS:
            raise SpeechPeftError(f"window_seconds must be in (0, {MAX_WINDOW_SECONDS:g}], got {seconds!r}")
        self._window = float(seconds)


@dataclass
class Wav2Vec2Host(_Wav2Vec2Audio):
    """A ``Wav2Vec2ForCTC`` with its feature extractor and, once it has one, its CTC tokenizer."""

    model: nn.Module
    feature_extractor: Any
    tokenizer: Any = None  # None: a bare pretraining checkpoint, until prepare_training builds one
    _window: float = 30.0
    new_modules: list[str] = field(default_factory=list)  # made for this run: trained whole, stored
    _base: tuple[Any, nn.Module] | None = field(default=None, repr=False)  # tokenizer and head before an adapter

    # --- what every host tells (device, rate, window: see _Wav2Vec2Audio) -----------------------

    @property
    def english_spelling(self) -> None:
        return None

    @property
    def min_seconds(self) -> float:
        """The shortest input the conv feature encoder turns into one frame."""
        return self._min_samples() / self.sampling_rate

    def inject(self, config: Any) -> list[str]:
        """Inject an adapter; ``config.targets`` may name a preset (attn, attn_qv, all_linear)."""
        return inject(self.model, config)

    # --- vocabulary and head -----------------------------------------------------------------

    def prepare_training(self, texts: Sequence[str]) -> None:
        """Without a tokenizer, build one from ``texts`` and a new CTC head sized to it."""
        if self.tokenizer is not None:
            return
        self._use_tokenizer(make_tokenizer(build_vocabulary(texts)), new_head=True)
        self.new_modules = [HEAD]

    def _use_tokenizer(self, tokenizer: Any, new_head: bool) -> None:
        config = self.model.config
        size = len(tokenizer)
        if new_head or self.model.lm_head.out_features != size:
            hidden = getattr(config, "output_hidden_size", None) or config.hidden_size
            head = nn.Linear(hidden, size, device=self.device, dtype=self.model.lm_head.weight.dtype)
            self.model.lm_head = head
        config.vocab_size = size
        config.pad_token_id = tokenizer.pad_token_id  # Wav2Vec2ForCTC's CTC blank
        self.tokenizer = tokenizer

    def save_companions(self, folder: Path) -> None:
        """Write the tokenizer and feature extractor into ``folder`` (beside an adapter)."""
        self._require_tokenizer().save_pretrained(str(folder))
        self.feature_extractor.save_pretrained(str(folder))

    def save_processor(self, folder: Path) -> None:
        """Tokenizer and feature extractor beside a merged model: ``Wav2Vec2Processor.from_pretrained`` reads them."""
        self.save_companions(folder)

    def check_text(self, text: str, language: str | None) -> None:
        """Raise SpeechPeftError if ``text`` holds a character the vocabulary lacks."""
        vocab = self._require_tokenizer().get_vocab()
        for c in text.replace(" ", WORD):
            if c not in vocab:
                raise SpeechPeftError(
                    f"character {c!r} (U+{ord(c):04X}) is not in the model's vocabulary of {len(vocab)} symbols"
                )

    # --- adapters from files -------------------------------------------------------------------

    def attach_adapter(self, path: str | Path) -> list[str]:
        """Load an adapter and, when it brought its own vocabulary and head, those too."""
        af = read_adapter(path)
        if af.modules:
            from transformers import Wav2Vec2CTCTokenizer

            if not (Path(path) / "vocab.json").is_file():
                raise SpeechPeftError(f"adapter '{path}' stores a CTC head but no vocab.json beside it")
            self._base = (self.tokenizer, self.model.lm_head)
            self._use_tokenizer(Wav2Vec2CTCTokenizer.from_pretrained(str(path)), new_head=True)
        try:
            return load_adapter(self.model, path)
        except BaseException:
            self.detach_adapter()
            raise

    def detach_adapter(self) -> None:
        """Remove the adapter and put the base's own tokenizer and head back."""
        if adapter_layers(self.model):
            unload_adapter(self.model, merge=False)
        if self._base is not None:
            tokenizer, head = self._base
            self.model.lm_head, self.tokenizer, self._base = head, tokenizer, None
            self.model.config.vocab_size = head.out_features
            if tokenizer is not None:
                self.model.config.pad_token_id = tokenizer.pad_token_id

    # --- training ------------------------------------------------------------------------------

    def inputs(self, arrays: Sequence[np.ndarray], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """``input_values`` (and ``attention_mask`` where the checkpoint wants one), padded to the
        longest array (or to ``pad_to`` samples, when longer)."""
        rate = self.sampling_rate
        for i, a in enumerate(arrays):
            self._check_audio(a, i)
        fe = self.feature_extractor
        out = fe(
            [np.asarray(a, dtype=np.float32) for a in arrays],
            sampling_rate=rate,
            padding="max_length" if pad_to else True,
            max_length=max(pad_to, max(len(a) for a in arrays)) if pad_to else None,
            return_attention_mask=bool(fe.return_attention_mask),
            return_tensors="pt",
        )
        batch = {"input_values": out.input_values.to(self.device)}
        if fe.return_attention_mask:
            batch["attention_mask"] = out.attention_mask.to(self.device)
        return batch

    def batch(
        self, arrays: Sequence[np.ndarray], texts: Sequence[str], language: str | None, pad_to: int | None = None
    ) -> dict[str, Any]:
        """A training batch: the inputs (padded to ``pad_to`` samples when given), and character
        labels padded with -100."""
        tok = self._require_tokenizer()
        ids = [tok(t).input_ids for t in texts]
        labels = torch.full((len(ids), max(1, max(map(len, ids)))), -100, dtype=torch.long)
        for i, seq in enumerate(ids):
            labels[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {**self.inputs(arrays, pad_to), "labels": labels.to(self.device)}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """CTC loss, averaged over target lengths and the batch."""
        return self.model(**batch).loss

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """The utterances the loss averages over (each already divided by its target length)."""
        return int(batch["labels"].shape[0])

    def max_new_tokens(self, seconds: float, per_second: float) -> None:
        return None  # CTC emits one label per frame: nothing to cap

    # --- decoding --------------------------------------------------------------------------

    @torch.no_grad()
    def transcribe(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        beam: int = 1,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        **_: Any,
    ) -> list[str]:
        """Greedy CTC transcripts of utterances (any length up to the window); adapters stay active."""
        if beam != 1:
            raise SpeechPeftError("wav2vec2 decoding is greedy CTC; beam search needs a language model (use beam 1)")
        tok = self._require_tokenizer()
        was_training = self.model.training
        self.model.eval()
        out: list[str] = []
        try:
            with adapter_condition(self.model, language=language):
                for start in range(0, len(arrays), batch_size):
                    part = arrays[start : start + batch_size]
                    inputs = self.inputs(part)
                    logits = self.model(**inputs).logits  # (B, frames, vocab)
                    lengths = self._frames([len(a) for a in part])
                    best = logits.argmax(-1).cpu()
                    out += [tok.decode(best[i, : lengths[i]].tolist()).strip() for i in range(len(part))]
        finally:
            self.model.train(was_training)
        return out

    def transcribe_segments(
        self,
        arrays: Sequence[np.ndarray],
        language: str | None = None,
        task: str = "transcribe",
        beam: int = 1,
        progress: Callable[[float], None] | None = None,
        adapter_ids: Sequence[int] | None = None,
    ) -> list[list[Segment]]:
        """Files of any length, decoded in window-sized pieces; one segment per non-empty piece."""
        return [t.segments for t in self.transcribe_long(arrays, language, task, beam, progress, adapter_ids)]

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
        """``transcribe_segments`` as ``Transcript``s. A CTC model reads one label per frame, greedily:
        it has no language to detect and takes none of Whisper's decoding options.

        Raises:
            SpeechPeftError: a decoding option other than the defaults, translation, or adapter ids.
        """
        asked = [k for k, v in (decode.describe() if decode else {}).items() if v != DEFAULTS.get(k)]
        if asked:
            raise SpeechPeftError(
                f"a CTC model decodes greedily, one label per frame: {asked[0]} needs a Whisper model"
            )
        if task != "transcribe":
            raise SpeechPeftError("a CTC model only transcribes; --task translate needs Whisper")
        if adapter_ids is not None:
            raise SpeechPeftError("a wav2vec2 host decodes one adapter at a time (no adapter bank)")
        rate, piece = self.sampling_rate, int(self._window * self.sampling_rate)
        pieces = [(i, s) for i, a in enumerate(arrays) for s in range(0, len(a), piece)]
        out: list[list[Segment]] = [[] for _ in arrays]
        for i, s in pieces:
            chunk = arrays[i][s : s + piece]
            if len(chunk) < self._min_samples():
                continue  # a tail shorter than one frame holds no speech to read
            (text,) = self.transcribe([chunk], language=language)
            if text:
                out[i].append(Segment(s / rate, (s + len(chunk)) / rate, text))
            if progress is not None:
                progress((s + len(chunk)) / rate)
        return [Transcript(segments, language) for segments in out]

    # --- helpers ---------------------------------------------------------------------------

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise SpeechPeftError(
                "this wav2vec2 checkpoint has no CTC vocabulary; train one with `speechpeft finetune` "
                "or load an adapter that brings one"
            )
        return self.tokenizer

    def _frames(self, samples: Sequence[int]) -> list[int]:
        lengths = self.model._get_feat_extract_output_lengths(torch.tensor(list(samples)))
        return [int(n) for n in lengths]

    def _min_samples(self) -> int:
        return min_samples(self.model.config)

    def _check_audio(self, a: np.ndarray, index: int) -> None:
        a = np.asarray(a)
        rate = self.sampling_rate
        if a.ndim != 1:
            raise SpeechPeftError(f"audio #{index} must be mono (1-D), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise SpeechPeftError(f"audio #{index} holds NaN or inf samples")
        if a.size < self._min_samples():
            raise SpeechPeftError(
                f"audio #{index} is {a.size / rate:.3f} s, shorter than the {self.min_seconds:.3f} s "
                "the conv feature encoder needs for one frame"
            )
        if math.isfinite(self._window) and a.size > self._window * rate + 1:
            raise SpeechPeftError(f"audio #{index} is {a.size / rate:.1f} s, longer than the {self._window:g} s window")


def load_wav2vec2(name_or_path: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Load a wav2vec 2.0 checkpoint as a CTC host, by hub id or local path.

    A checkpoint without a CTC tokenizer (a pretraining one) loads with a placeholder head until
    ``prepare_training`` sizes one to a vocabulary, or an adapter brings its own.

    Raises:
        SpeechPeftError: the checkpoint cannot be found or read.
    """
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC
    from transformers.utils import logging as hf_logging

    device = torch.device(device) if device is not None else default_device()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "lm_head newly initialized" is expected for a pretraining checkpoint
    try:
        model = Wav2Vec2ForCTC.from_pretrained(name_or_path, dtype=dtype or torch.float32)
        try:
            fe = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
        except OSError:
            fe = Wav2Vec2FeatureExtractor(return_attention_mask=model.config.feat_extract_norm == "layer")
        try:
            tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(name_or_path)
        except (OSError, TypeError, ValueError):
            tokenizer = None
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(f"cannot load wav2vec2 model {name_or_path!r}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.ctc_loss_reduction = "mean"
    model.config.ctc_zero_infinity = True  # an utterance too fast for its frames adds nothing, not inf
    model.freeze_feature_encoder()
    model.to(device).eval()
    host = Wav2Vec2Host(model, fe)
    if tokenizer is not None:
        host._use_tokenizer(tokenizer, new_head=False)
    return host


register_host("wav2vec2", load_wav2vec2)
