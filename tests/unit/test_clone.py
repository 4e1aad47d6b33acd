"""speechpeft clone / synthesize on tiny random VITS models (single- and multi-speaker)."""

import json

import numpy as np
import pytest
import soundfile as sf
from tiny import make_clone_references, make_tiny_vits_dir

from speechpeft.cli import main


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return make_clone_references(tmp_path_factory.mktemp("refs"), n=20)


@pytest.mark.parametrize("speakers", [3, 1])
def test_clone_lowers_held_out_loss_quickly_and_stays_small_then_synthesizes(refs, tmp_path, capsys, speakers):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=speakers)
    out = tmp_path / "voice"
    args = ["clone", "--base", str(base), "--reference", str(refs.parent), "--manifest", str(refs)]
    assert main([*args, "--name", "kid", "-o", str(out), "--steps", "60", "--no-progress"]) == 0
    report = json.loads((out / "clone.json").read_text())
    assert report["references"] == 20 and len(report["held_out"]) == 4
    assert report["held_out_loss"]["after"] < report["held_out_loss"]["before"]
    assert report["speaker_vector"] == (speakers > 1)
    assert "held-out loss" in capsys.readouterr().out
    assert report["trainable_parameters"] <= 0.01 * report["base_parameters"]

    bare = ["--speaker-id", "0"] if speakers > 1 else []  # a multi-speaker base needs some speaker
    waves = []
    for i, speaker in enumerate((bare, ["--speaker", str(out)], ["--speaker", str(out)])):
        wav = tmp_path / f"out{i}.wav"
        assert main(["synthesize", "--base", str(base), *speaker, "hello cat", "-o", str(wav)]) == 0
        audio, rate = sf.read(wav)
        assert rate == 16_000 and audio.ndim == 1 and len(audio) > 0 and np.isfinite(audio).all()
        waves.append(audio)
    np.testing.assert_array_equal(waves[1], waves[2])  # seeded: the same speaker gives the same audio
    differs = len(waves[0]) != len(waves[1]) or np.abs(waves[0] - waves[1]).max() > 1e-3
    assert differs, "synthesize with --speaker sounds exactly like the base: the cloned speaker was ignored"


def test_host_synthesize_speaks_text_and_refuses_unspellable_text(tmp_path):
    from speechpeft.errors import SpeechPeftError
    from speechpeft.models.vits_build import load_vits

    host = load_vits(str(make_tiny_vits_dir(tmp_path / "base", num_speakers=1)))
    wave = host.synthesize("a cat")
    assert wave.dtype == np.float32 and wave.size % host.hop_length == 0 and wave.size > 0
    with pytest.raises(SpeechPeftError, match="text #0: this model's tokenizer cannot spell '24'"):
        host.synthesize("a cat 42")


def test_a_text_file_gives_numbered_wavs(tmp_path):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=1)
    (tmp_path / "lines.txt").write_text("hello there\n\ngood night\n")
    assert main(["synthesize", "--base", str(base), str(tmp_path / "lines.txt"), "-o", str(tmp_path / "s.wav")]) == 0
    assert sorted(p.name for p in tmp_path.glob("s_*.wav")) == ["s_001.wav", "s_002.wav"]


def bad_reference_run(tmp_path, refs, capsys, make_bad):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=3)
    folder = tmp_path / "r"
    folder.mkdir()
    rows = [json.loads(line) for line in refs.read_text().splitlines()][:4]
    for row in rows:
        (folder / row["audio_filepath"]).write_bytes((refs.parent / row["audio_filepath"]).read_bytes())
    manifest = folder / "refs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_bad(folder, manifest)
    args = ["clone", "--base", str(base), "--reference", str(folder), "--manifest", str(manifest)]
    code = main([*args, "--name", "x", "-o", str(tmp_path / "out"), "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("speechpeft:")]  # not transformers' load bars
    assert "Traceback" not in err and len(ours) <= 1
    return code, "\n".join(ours)


def _add(folder, manifest, name, audio, rate=16_000, text="hello"):
    sf.write(folder / name, audio, rate)
    with manifest.open("a") as f:
        f.write(json.dumps({"audio_filepath": name, "text": text}) + "\n")


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda f, m: _add(f, m, "quiet.wav", np.zeros(32_000, np.float32)), "quiet.wav: reference is silent"),
        (lambda f, m: _add(f, m, "short.wav", np.full(4000, 0.1, np.float32)), "reference lasts 0.25 s; at least 1 s"),
        (
            lambda f, m: (
                (f / "broken.wav").write_bytes(b"RIFF????WAVEjunk"),
                _add(f, m, "ok.wav", np.full(20000, 0.1, np.float32)),
                m.write_text(m.read_text() + json.dumps({"audio_filepath": "broken.wav", "text": "hi"}) + "\n"),
            ),
            "broken.wav",
        ),  # noqa: E501
        (
            lambda f, m: _add(f, m, "greek.wav", np.sin(np.arange(24_000) * 0.1).astype(np.float32), text="καλημέρα"),
            "cannot spell",
        ),  # noqa: E501
    ],
    ids=["silent", "too-short", "unreadable", "unspellable-text"],
)
def test_bad_references_are_one_line_errors_and_leave_nothing(tmp_path, refs, capsys, make_bad, message):
    code, err = bad_reference_run(tmp_path, refs, capsys, make_bad)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_reference_at_another_rate_is_resampled_not_refused(tmp_path, refs, capsys):
    def add_44k(folder, manifest):
        t = np.arange(44_100 * 2) / 44_100
        _add(folder, manifest, "hi_rate.wav", (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate=44_100)

    code, err = bad_reference_run(tmp_path, refs, capsys, add_44k)
    assert code == 0 and (tmp_path / "out" / "clone.json").is_file(), err


def test_a_manifest_alone_defines_the_references_and_folders_are_searched_recursively(tmp_path, refs, capsys):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=1)
    nested = tmp_path / "dataset"
    rows = [json.loads(line) for line in refs.read_text().splitlines()][:6]
    for i, row in enumerate(rows):  # audio in subfolders, as datasets ship it
        sub = nested / f"chapter{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / row["audio_filepath"]).write_bytes((refs.parent / row["audio_filepath"]).read_bytes())
        row["audio_filepath"] = f"chapter{i % 2}/{row['audio_filepath']}"
    manifest = nested / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--name", "k", "--steps", "2", "--no-progress"]
    assert main(["clone", "--base", str(base), "--manifest", str(manifest), "-o", str(tmp_path / "a"), *common]) == 0
    assert json.loads((tmp_path / "a" / "clone.json").read_text())["references"] == 6
    args = ["clone", "--base", str(base), "--reference", str(nested), "--manifest", str(manifest)]
    assert main([*args, "-o", str(tmp_path / "b"), *common]) == 0
    assert json.loads((tmp_path / "b" / "clone.json").read_text())["references"] == 6
    code = main(["clone", "--base", str(base), "-o", str(tmp_path / "c"), *common])
    assert code == 2 and "give the references" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_usat_decoder_trains_decoder_adapters_by_mel_and_synthesize_uses_them(tmp_path, refs):
    from safetensors.torch import load_file

    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=1)
    args = ["clone", "--base", str(base), "--manifest", str(refs), "--name", "k", "--no-progress"]
    outs = {}
    for variant in ("usat", "usat-decoder", "usat-posterior"):
        outs[variant] = tmp_path / variant
        assert main([*args, "-o", str(outs[variant]), "--steps", "4", "--variant", variant]) == 0
    tensors = load_file(str(outs["usat-decoder"] / "adapter_model.safetensors"))
    decoder = [k for k in tensors if k.startswith("decoder.") and k.endswith(".up.weight")]
    assert decoder and any(tensors[k].abs().sum() > 0 for k in decoder)  # trained away from the zero init
    assert not any(k.startswith("posterior_encoder.") for k in tensors)
    assert not any(k.startswith("decoder.") for k in load_file(str(outs["usat"] / "adapter_model.safetensors")))
    tensors = load_file(str(outs["usat-posterior"] / "adapter_model.safetensors"))
    posterior = [k for k in tensors if k.startswith("posterior_encoder.") and k.endswith(".up.weight")]
    assert posterior and all(tensors[k].abs().sum() > 0 for k in posterior)  # the reconstruction reaches them
    waves = []
    for variant, out in outs.items():
        wav = tmp_path / f"{variant}.wav"
        assert main(["synthesize", "--base", str(base), "--speaker", str(out), "hello cat", "-o", str(wav)]) == 0
        waves.append(sf.read(wav)[0])
    assert len(waves[0]) != len(waves[1]) or np.abs(waves[0] - waves[1]).max() > 1e-4
