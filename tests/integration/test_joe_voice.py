"""The real pretrained joe VITS voice (Piper en_US-joe-medium in transformers' layout, from ../shared):
it speaks intelligibly through `speechpeft synthesize`, and `tts complete-base` fits its posterior."""

import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from conftest import ROOT, requires_real_model

from speechpeft.cli import main
from speechpeft.eval import error_rate, make_normaliser

JOE = Path(os.environ.get("SPEECHPEFT_JOE", ROOT.parent / "shared" / "models" / "piper-joe-vits"))
pytestmark = [
    pytest.mark.integration,
    requires_real_model,
    pytest.mark.skipif(not (JOE / "model.safetensors").is_file(), reason=f"the joe voice is not at {JOE}"),
    pytest.mark.skipif(  # CI (SPEECHPEFT_REQUIRE_TOOLS) installs espeak-ng: there its absence fails instead
        shutil.which("espeak-ng") is None and not os.environ.get("SPEECHPEFT_REQUIRE_TOOLS"),
        reason="needs espeak-ng (apt-get install espeak-ng)",
    ),
]
SENTENCES = [
    "The museum opens at nine and closes at five.",
    "Please call me when you get home.",
    "We watched the sun go down over the hills.",
]


def test_joe_speaks_intelligibly_at_22k(tmp_path, whisper_base):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES) + "\n")
    assert main(["synthesize", "--base", str(JOE), str(lines), "-o", str(tmp_path / "joe.wav"), "--no-progress"]) == 0
    waves = []
    for i in range(1, 4):
        audio, rate = sf.read(tmp_path / f"joe_{i:03d}.wav", dtype="float32")
        assert rate == 22_050 and 1.0 < len(audio) / rate < 6.0
        waves.append(audio)
    from speechpeft.eval.tts import resample

    hyps = whisper_base.transcribe([resample(a, 22_050, 16_000) for a in waves], language="en")
    assert error_rate(SENTENCES, hyps, "wer", make_normaliser("whisper_en")).rate <= 0.10, hyps


def test_completing_joe_fits_its_posterior_to_the_z_its_decoder_was_given(tmp_path, capsys):
    """A short completion (16 sentences, 120 steps): on held-out sentences of its own speech, the
    posterior mean moves toward the z the decoder received, and synthesis is unchanged."""
    from speechpeft.models.vits_build import load_vits

    before = load_vits(str(JOE)).synthesize(SENTENCES[0], seed=1)
    out = tmp_path / "joe-completed"
    args = ["tts", "complete-base", "--base", str(JOE), "-o", str(out), "--sentences", "16", "--held-out", "4"]
    assert main([*args, "--steps", "120", "--no-progress"]) == 0
    held = json.loads((out / "complete_base.json").read_text())["held_out"]
    assert held["after"]["z_relative_error"] < 0.8 * held["before"]["z_relative_error"], held
    assert held["after"]["posterior_nll"] < held["before"]["posterior_nll"] and held["after"]["duration_nll"] < 5
    done = load_vits(str(out))
    assert done.missing == []
    assert (done.synthesize(SENTENCES[0], seed=1) == before).all()
