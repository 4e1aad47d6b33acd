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
