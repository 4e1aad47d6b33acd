"""speechpeft's port of resemblyzer's GE2E encoder gives resemblyzer's own embeddings.

The reference vectors were computed by resemblyzer's VoiceEncoder on the same clips
(tests/data/speakers/make_resemblyzer_reference.py, run once with resemblyzer's dependencies).
"""

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA

from speechpeft.models.speaker_encoder import load_speaker_encoder

pytestmark = pytest.mark.integration
if importlib.util.find_spec("resemblyzer") is None:  # .ci/run installs it
    pytest.skip("resemblyzer's weights are not installed (pip install --no-deps resemblyzer)", allow_module_level=True)

REFERENCE = json.loads((DATA / "speakers" / "resemblyzer_reference.json").read_text(encoding="utf-8"))


def test_port_matches_resemblyzers_voice_encoder_on_every_clip():
    enc = load_speaker_encoder("resemblyzer")
    names = sorted(REFERENCE["embeddings"])
    ours = enc.embed([sf.read(DATA / name, dtype="float32")[0] for name in names])
    theirs = torch.tensor([REFERENCE["embeddings"][n] for n in names])
    cosines = torch.nn.functional.cosine_similarity(ours, theirs, dim=1)
    assert cosines.min() > 0.99999, dict(zip(names, cosines.tolist(), strict=True))
    assert (ours - theirs).abs().max() < 1e-4  # measured: 2e-7
    # and the reference is not trivially easy: different clips are far apart
    pair = float(np.dot(REFERENCE["embeddings"][names[0]], REFERENCE["embeddings"][names[-1]]))
    assert pair < 0.9
