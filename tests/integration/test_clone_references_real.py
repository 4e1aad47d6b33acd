"""One untranscribed recording becomes clone references: the real whisper-base cuts it into sentences."""

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, REAL_MODEL, requires_real_model

from speechpeft.eval import error_rate, make_normaliser
from speechpeft.models import load_whisper
from speechpeft.train.references import transcribe_references

pytestmark = [pytest.mark.integration, requires_real_model]


def test_a_joined_librivox_recording_is_cut_into_transcribed_clips(tmp_path):
    clips = DATA / "librivox"
    texts = json.loads((clips / "transcripts.json").read_text())
    names = sorted(texts)
    gap = np.zeros(8000, np.float32)
    audio = np.concatenate([p for n in names for p in (sf.read(clips / n, dtype="float32")[0], gap)])
    sf.write(tmp_path / "recording.flac", audio, 16_000)
    host = load_whisper(REAL_MODEL, device="cpu")
    refs = transcribe_references([tmp_path / "recording.flac"], host, tmp_path / "clips", 22_050, language="en",
                                 names=["my recording"])  # fmt: skip
    assert len(refs) >= 3
    for ref in refs:
        clip, rate = sf.read(ref.audio)
        assert rate == 22_050 and len(clip) >= 1.5 * rate and ref.where.startswith("my recording [")
    spoken = " ".join(texts[n] for n in names)
    wer = error_rate([spoken], [" ".join(r.text for r in refs)], "wer", make_normaliser("whisper_en")).rate
    assert wer <= 0.10, wer
    total = sum(len(sf.read(r.audio)[0]) for r in refs) / 22_050
    assert total >= 0.8 * len(audio) / 16_000  # the clips keep most of the recording
