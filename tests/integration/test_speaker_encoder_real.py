"""Speaker similarity with resemblyzer's real pretrained weights on real recordings."""

import importlib.util
import itertools

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA

from speechpeft.errors import SpeechPeftError
from speechpeft.models.speaker_encoder import cosine, load_speaker_encoder

pytestmark = pytest.mark.integration
if importlib.util.find_spec("resemblyzer") is None:  # .ci/run installs it
    pytest.skip("resemblyzer's weights are not installed (pip install --no-deps resemblyzer)", allow_module_level=True)


def read(folder):
    return [sf.read(p, dtype="float32")[0] for p in sorted((DATA / folder).glob("*.flac"))]


def test_same_real_speaker_scores_higher_than_different_real_speakers():
    enc = load_speaker_encoder("resemblyzer")
    reader = enc.embed(read("librivox"))  # five clips of one LibriVox reader
    others = enc.embed(read("speakers"))  # two other real speakers (pocketsphinx-testdata)
    for i in range(len(reader)):
        same = np.mean([cosine(reader[i], reader[j]) for j in range(len(reader)) if j != i])
        different = max(cosine(reader[i], o) for o in others)
        assert same > different + 0.05, (i, same, different)
    pairs = [cosine(a, b) for a, b in itertools.combinations(reader, 2)]
    assert min(pairs) > 0.7  # resemblyzer's own scale: same speaker ~0.75-0.9


def test_silent_reference_is_a_one_line_error():
    enc = load_speaker_encoder("resemblyzer")
    with pytest.raises(SpeechPeftError, match="reference #0 is silent or empty"):
        enc.embed([np.zeros(16_000, np.float32)])
