"""Every adjustment speechpeft makes to transformers' Whisper generate, in one place, each
installed once per model and checked against the transformers versions it was written for:

- notices that users cannot act on are dropped;
- the suppress-tokens mask is built once per decode;
- the adapter bank's per-row ids follow the rows that long-form generate keeps as files finish.

None of them changes per request: what differs between requests (the ids of a mixed-adapter
batch) lives in the calling thread's state, so two threads decoding at once never see each
other's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import SpeechPeftError

TESTED_MAJORS = (5,)  # transformers major versions whose Whisper generate these were checked against
_local = threading.local()


def check_transformers() -> None:
    """Raise SpeechPeftError when transformers is a major version these adjustments were not checked on."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    if major not in TESTED_MAJORS:
        raise SpeechPeftError(
            f"mixed-adapter Whisper decoding was checked against transformers {', '.join(map(str, TESTED_MAJORS))}.x "
            f"and this is {transformers.__version__}; pin transformers<{TESTED_MAJORS[-1] + 1}"
        )


class _DropGenerateNotices(logging.Filter):
    """Notices from transformers' generate that users cannot act on: that max_new_tokens
    overrides the config's max_length (what `transcribe(max_new_tokens=...)` asks for), and a
    deprecation that transformers' own Whisper long-form code triggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "seem to have been set" not in text and "together with generation-related" not in text


def quiet_generate_notices() -> None:
    """Install the filter on transformers' generation logger (once)."""
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropGenerateNotices) for f in logger.filters):
        logger.addFilter(_DropGenerateNotices())


class CachedSuppress:
    """transformers' SuppressTokensLogitsProcessor, with its mask built once instead of by a
    `torch.isin` over the whole vocabulary at every decoding step (about 5 % of CPU decoding
    time for whisper-base). Same place in the processor list, same scores out."""

    def __init__(self, suppress_tokens: torch.Tensor):
        self.suppress_tokens = suppress_tokens
        self._mask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._mask is None or self._mask.shape[-1] != scores.shape[-1] or self._mask.device != scores.device:
            vocab = torch.arange(scores.shape[-1], device=scores.device)
            self._mask = torch.isin(vocab, self.suppress_tokens.to(scores.device))
        return scores.masked_fill(self._mask, -float("inf"))


def cache_suppression(model: nn.Module) -> None:
    """Make ``model``'s Whisper generate use `CachedSuppress`; a no-op where transformers differs."""
    from transformers.generation.logits_process import SuppressTokensLogitsProcessor

    original = getattr(model, "_retrieve_logit_processors", None)
    if original is None:
        return

    def retrieve(*args: Any, **kwargs: Any) -> Any:
        processors = original(*args, **kwargs)
        if not processors:
            return processors
        return [
            CachedSuppress(p.suppress_tokens) if type(p) is SuppressTokensLogitsProcessor else p for p in processors
        ]

    model._retrieve_logit_processors = retrieve


def follow_batch_reductions(model: nn.Module) -> None:
    """Wrap ``model._maybe_reduce_batch`` once: after transformers' long-form generate drops
    finished rows, the hook the calling thread registered (``reduction_hook``) gets the kept rows.

    Raises:
        SpeechPeftError: a transformers version this was not checked on, or one without the method.
    """
    if getattr(model, "_speechpeft_follows_reductions", False):
        return
    check_transformers()
    original = getattr(model, "_maybe_reduce_batch", None)
    if original is None:
        raise SpeechPeftError("this transformers' Whisper has no _maybe_reduce_batch; mixed-adapter long-form needs it")

    def reduce(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)  # (input_features, cur_bsz, batch_idx_map)
        hook = getattr(_local, "hook", None)
        if hook is not None:
            hook(out[2])
        return out

    model._maybe_reduce_batch = reduce
    model._speechpeft_follows_reductions = True


@contextlib.contextmanager
def reduction_hook(hook: Callable[[Any], None]) -> Iterator[None]:
    """Inside the block, this thread's long-form decodes report their kept rows to ``hook``."""
    previous = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous


# --- what a decode reports back: detected languages, and the temperature of each window ----------


class DecodeRecord:
    """What one long-form generate call reports through the patches below: the language detected
    for each row with its probability, and the temperature and window each segment came from
    (stamped on transformers' segment dicts as ``"temperature"`` and ``"window"``)."""

    def __init__(self) -> None:
        self.languages: list[tuple[int, float]] | None = None  # (language token id, probability) per row
        self.row_map: list[int] = []  # fallback round row -> row of the window's batch
        self.temperatures: dict[int, float] = {}  # row of the window's batch -> last temperature tried
        self.schedule: list[float] = []
        self.round: list[bool] = []
        self.rounds = 0


@contextlib.contextmanager
def decode_record() -> Iterator[DecodeRecord]:
    """Inside the block, this thread's Whisper decodes report into the yielded record."""
    previous = getattr(_local, "record", None)
    _local.record = record = DecodeRecord()
    try:
        yield record
    finally:
        _local.record = previous


@contextlib.contextmanager
def retry_hook(hook: Callable[[list[int]], None]) -> Iterator[None]:
    """Inside the block, a temperature-fallback retry reports which rows of the batch it re-runs
    (indices into the batch just decoded), before it decodes them as a smaller batch."""
    previous = getattr(_local, "retry", None)
    _local.retry = hook
    try:
        yield
    finally:
        _local.retry = previous


def report_decodes(model: nn.Module) -> None:
    """Install, once, the patches that fill ``decode_record`` and call ``retry_hook``: language
    detection that also keeps its probabilities, watchers on temperature fallback, and the
    window of each segment.

    Raises:
        SpeechPeftError: a transformers version these were not checked on, or one without the methods.
    """
    if getattr(model, "_speechpeft_reports", False):
        return
    check_transformers()
    names = ("detect_language", "generate_with_fallback", "_need_fallback", "_retrieve_segment")
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise SpeechPeftError(f"this transformers' Whisper has no {', '.join(missing)}; decoding options need them")
    model.detect_language = _detect_language_for(model)
    _wrap_fallback(model)
    model._speechpeft_reports = True


def _detect_language_for(model: nn.Module) -> Callable[..., torch.Tensor]:
    """transformers' ``detect_language`` (one decoder step on the first window, the most likely
    language token), keeping the probability of the language it picks."""

    def detect(input_features=None, encoder_outputs=None, generation_config=None, num_segment_frames=3000):
        generation_config = generation_config or model.generation_config
        if input_features is not None:
            inputs = {"input_features": input_features[:, :, :num_segment_frames]}
            batch = input_features.shape[0]
        else:
            inputs = {"encoder_outputs": encoder_outputs}
            batch = encoder_outputs[0].shape[0]
        start = torch.full((batch, 1), generation_config.decoder_start_token_id, dtype=torch.long, device=model.device)
        with torch.no_grad():
            logits = model(**inputs, decoder_input_ids=start, use_cache=False).logits[:, -1]
        ids = torch.tensor(sorted(generation_config.lang_to_id.values()), device=logits.device)
        probs = logits[:, ids].float().softmax(-1)
        best = probs.argmax(-1)
        record = getattr(_local, "record", None)
        if record is not None:
            record.languages = [(int(ids[b]), float(probs[i, b])) for i, b in enumerate(best.tolist())]
        return ids[best]

    return detect


def _wrap_fallback(model: nn.Module) -> None:
    with_fallback, need, retrieve = model.generate_with_fallback, model._need_fallback, model._retrieve_segment

    def generate_with_fallback(*args: Any, **kwargs: Any) -> Any:
        record = getattr(_local, "record", None)
        if record is not None:
            record.row_map = list(range(kwargs["cur_bsz"]))
            record.temperatures, record.schedule = {}, list(kwargs["temperatures"])
            record.round, record.rounds = [], 0
        return with_fallback(*args, **kwargs)

    def need_fallback(seek_sequence, seek_outputs, index, logits_processor, generation_config, vocab_size,
                      temperature):  # fmt: skip
        out = need(seek_sequence, seek_outputs, index, logits_processor, generation_config, vocab_size, temperature)
        record = getattr(_local, "record", None)
        if record is None or not record.row_map:
            return out
        record.temperatures[record.row_map[index]] = 0.0 if temperature is None else float(temperature)
        record.round.append(out[0])
        if index == len(seek_outputs) - 1:  # the round's last row: the retry batch is known
            rows = [i for i, again in enumerate(record.round) if again]
            record.rounds += 1
            record.round = []
            if rows and record.rounds < len(record.schedule):
                record.row_map = [record.row_map[i] for i in rows]
                hook = getattr(_local, "retry", None)
                if hook is not None:
                    hook(rows)
        return out

    def retrieve_segment(*args: Any, **kwargs: Any) -> Any:
        segments, offset = retrieve(*args, **kwargs)
        record = getattr(_local, "record", None)
        if record is not None:
            temperature = record.temperatures.get(kwargs["idx"])
            row = kwargs["prev_idx"]
            window = (int(round(float(kwargs["time_offset"][row]) * 100)), int(kwargs["seek_num_frames"][row]))
            for seg in segments:  # which temperature, and which window (first mel frame, frames) it came from
                seg["temperature"], seg["window"] = temperature, window
        return segments, offset

    model.generate_with_fallback = generate_with_fallback
    model._need_fallback = need_fallback
    model._retrieve_segment = retrieve_segment
