"""Instant speaker adaptation on tiny random VITS models: conditioning that starts as a no-op,
training on several voices, and ``clone --variant instant`` (no training step)."""

import json

import numpy as np
import pytest
import torch
from tiny import make_clone_references, make_tiny_vits_dir

from speechpeft.cli import main
from speechpeft.models.speaker_encoder import SpeakerEncoder, register_speaker_encoder


class PitchEncoder(SpeakerEncoder):
    """A test verifier: the unit-normalised log spectrum in 16 bands (different pitches differ)."""

    name = "test-bands-16"  # as a verifier names itself in results; registered under another key

    def embed(self, arrays):
        rows = []
        for a in arrays:
            spec = np.abs(np.fft.rfft(a[:8000], 8000))[:2000]
            rows.append(np.log1p(spec.reshape(16, -1).mean(1)))
        e = torch.tensor(np.stack(rows), dtype=torch.float32)
        return e / e.norm(dim=1, keepdim=True)


register_speaker_encoder("test-bands", PitchEncoder)


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("voices")
    return {name: make_clone_references(root / name, n=10, pitch=f0) for name, f0 in (("low", 120), ("high", 240))}


def test_conditioning_is_a_no_op_until_trained(tmp_path):
    from speechpeft.models.vits import VitsHost
    from speechpeft.models.vits_build import load_vits
    from speechpeft.models.vits_speaker import add_conditioning, conditioning_layers

    host = load_vits(str(make_tiny_vits_dir(tmp_path / "base", num_speakers=1)))
    cond = VitsHost(add_conditioning(host.model, 8), host.front)
    assert {n.split(".")[0] for n in conditioning_layers(cond.model)} == {"flow", "decoder", "duration_predictor",
                                                                         "posterior_encoder"}  # fmt: skip
    ids, _ = host.tokenize(["hello cat"])
    bare = host.synthesize_ids(ids, None, seed=3)
    np.testing.assert_allclose(cond.synthesize_ids(ids, torch.randn(8), seed=3), bare, atol=1e-6)
    np.testing.assert_array_equal(cond.synthesize_ids(ids, None, seed=3), bare)  # no speaker: the voice itself


def test_train_instant_then_clone_instant_makes_a_voice_with_no_training_step(voices, tmp_path, capsys):
    from speechpeft.models.vits_build import load_vits
    from speechpeft.train.clone import Reference
    from speechpeft.train.instant import InstantOptions, train_instant

    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=1)
    refs = {n: [Reference(m.parent / r["audio_filepath"], r["text"], r["audio_filepath"])
                for r in map(json.loads, m.read_text().splitlines())] for n, m in voices.items()}  # fmt: skip
    out = tmp_path / "instant"
    opts = InstantOptions(output=out, steps=30, width=8, lr=3e-3, progress=False, verifier="test-bands")
    report = train_instant(load_vits(str(base)), refs, opts)
    held = report["held_out"]
    assert held["after"]["kl_duration"] + 45 * held["after"]["mel_l1"] < held["before"]["kl_duration"] + 45 * held[
        "before"]["mel_l1"]  # fmt: skip
    assert (out / "speaker_projection.safetensors").is_file() and json.loads((out / "instant.json").read_text())

    speaker = tmp_path / "low"
    args = ["clone", "--base", str(out), "--reference", str(voices["low"].parent), "--variant", "instant"]
    assert main([*args, "--name", "low", "-o", str(speaker), "--no-progress"]) == 0  # no manifest, no Whisper
    assert "no training step" in capsys.readouterr().out
    clone_report = json.loads((speaker / "clone.json").read_text())
    assert clone_report["trainable_parameters"] == 0 and clone_report["references"] == 10

    host = load_vits(str(out))
    from speechpeft.train.clone import load_speaker

    vector = load_speaker(host, speaker)
    arrays = [_wav(p) for p in sorted(voices["low"].parent.glob("*.wav"))]
    expected = host.projection(PitchEncoder().embed_speaker(arrays))
    torch.testing.assert_close(vector, expected.detach())
    ids, _ = host.tokenize(["hello cat"])
    cloned, bare = host.synthesize_ids(ids, vector), host.synthesize_ids(ids, None)
    assert len(cloned) != len(bare) or np.abs(cloned - bare).max() > 1e-4, "the instant speaker changed nothing"


def test_instant_needs_an_instant_base_and_two_voices(voices, tmp_path, capsys):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=1)
    args = ["clone", "--base", str(base), "--manifest", str(voices["low"]), "--variant", "instant"]
    assert main([*args, "--name", "x", "-o", str(tmp_path / "x"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "needs an instant base" in err and "Traceback" not in err
    one = ["tts", "train-instant", "--base", str(base), "--voice", f"low={voices['low']}", "-o", str(tmp_path / "i")]
    assert main(one) != 0
    assert "at least 2 voices, got 1" in capsys.readouterr().err
    assert main([*one[:-2], "--voice", "oops", "-o", str(tmp_path / "i")]) != 0
    assert "--voice 'oops': expected NAME=MANIFEST" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def _wav(path):
    import soundfile as sf

    audio, _ = sf.read(path, dtype="float32")
    return audio
