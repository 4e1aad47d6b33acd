"""Normalisers and corpus-pooled error rates."""

import pytest

from speechpeft.errors import SpeechPeftError
from speechpeft.eval import error_rate, has_opencc, make_normaliser


def test_zh_chars_removes_punctuation_full_width_too_and_whitespace():
    z = make_normaliser("zh_chars")
    assert z("你好，世界！ 「小猫」…… ＡＢＣ１２３。") == "你好世界小猫abc123"


@pytest.mark.skipif(not has_opencc(), reason="opencc is optional; install speechpeft[zh] for t2s")
def test_zh_chars_converts_traditional_to_simplified():
    assert make_normaliser("zh_chars")("媽媽說年輕人") == "妈妈说年轻人"


def test_error_rate_is_pooled_over_the_corpus_not_averaged():
    z = make_normaliser("zh_chars")
    r = error_rate(["你好", "我们早上在院子里踢足球"], ["你", "我们早上在院子里踢足球"], "cer", z)
    assert (r.deletions, r.reference_units) == (1, 13)
    assert r.rate == pytest.approx(1 / 13)  # an average of per-utterance rates would be 0.25


def test_wer_with_whisper_english_normaliser_and_empty_references():
    en = make_normaliser("whisper_en", {"colour": "color"})
    r = error_rate(["The colour is red.", "[laughter]"], ["the color is red", "yes please"], "wer", en)
    assert (r.substitutions, r.deletions, r.reference_units) == (0, 0, 4)
    assert r.insertions == 2  # the reference that normalises to nothing counts its hypothesis as insertions
    with pytest.raises(SpeechPeftError, match="normaliser"):
        make_normaliser("nope")
    with pytest.raises(SpeechPeftError, match="no reference"):
        error_rate(["!"], ["x"], "cer", make_normaliser("zh_chars"))
