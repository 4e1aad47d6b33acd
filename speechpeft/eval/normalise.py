"""Text normalisers applied to references and hypotheses before scoring.

- ``zh_chars``: for Chinese CER. Traditional -> simplified (when opencc is installed), NFKC
  (full-width letters and digits -> ASCII), lower case, and every punctuation mark, symbol and
  whitespace removed, full-width ones included.
- ``whisper_en``: transformers' Whisper English normaliser (numbers, spellings, contractions).
- ``basic``: transformers' basic Whisper normaliser (lower case, symbols and brackets removed).
- ``none``: whitespace trimmed only.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Mapping

from ..errors import SpeechPeftError

Normaliser = Callable[[str], str]
NORMALISERS = ("zh_chars", "whisper_en", "basic", "none")


@functools.lru_cache(maxsize=1)
def _t2s() -> Callable[[str], str] | None:
    try:
        import opencc
    except ImportError:
        return None
    return opencc.OpenCC("t2s").convert


def has_opencc() -> bool:
    """Whether traditional -> simplified conversion is available for ``zh_chars``."""
    return _t2s() is not None


def zh_chars(text: str) -> str:
    convert = _t2s()
    if convert is not None:
        text = convert(text)
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "S", "Z", "C")))


def make_normaliser(name: str, english_spelling: Mapping[str, str] | None = None) -> Normaliser:
    """The normaliser called ``name`` (one of NORMALISERS).

    ``english_spelling`` is Whisper's British -> American mapping (the tokenizer's
    ``english_spelling_normalizer``); without it ``whisper_en`` still normalises everything else.

    Raises:
        SpeechPeftError: unknown name.
    """
    if name == "zh_chars":
        return zh_chars
    if name == "whisper_en":
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        return EnglishTextNormalizer(dict(english_spelling or {}))
    if name == "basic":
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        basic = BasicTextNormalizer()
        return lambda text: " ".join(basic(text).split())
    if name == "none":
        return str.strip
    raise SpeechPeftError(f"unknown normaliser {name!r}; choose one of {', '.join(NORMALISERS)}")
