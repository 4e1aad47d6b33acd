"""Loading VITS voices the way Piper ships them: type-2 HiFi-GAN blocks, espeak-ng phoneme ids,
training-side modules missing; and completing such a voice from its own speech (tiny models)."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from tiny import make_tiny_vits_dir

from speechpeft.cli import main
from speechpeft.errors import SpeechPeftError
from speechpeft.models.vits_build import TRAINING_SIDE, ResBlock2, load_vits, use_resblocks_type2

PHONEME_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ".": [4], ",": [5], "?": [6], "ˈ": [7], "ˌ": [8], "ː": [9]}
PHONEME_MAP.update({c: [10 + i] for i, c in enumerate("abdefhijklmnoprstuvwzæðŋɐɑɔəɚɛɜɡɪɹɾʃʊʌʒʔθᵻ")})


def need_espeak():
    if shutil.which("espeak-ng"):
        return
    message = "espeak-ng phonemes need espeak-ng: apt-get install -y espeak-ng (.ci/run installs it)"
    if os.environ.get("SPEECHPEFT_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def piper_like_voice(path, drop_training_side=True, seed=0):
    """A tiny voice in Piper's layout: type-2 blocks, phonemes.json, and (by default) no posterior side."""
    from transformers import VitsConfig, VitsModel

    config = VitsConfig(
        vocab_size=len(PHONEME_MAP) + 10, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, window_size=2,
        ffn_dim=64, flow_size=16, spectrogram_bins=33, upsample_initial_channel=32, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [2, 6]],
        prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2,
        wavenet_kernel_size=3, duration_predictor_filter_channels=32, duration_predictor_flow_bins=4,
        depth_separable_num_layers=2, sampling_rate=16_000,
    )  # fmt: skip
    config.resblock_type = "2"
    torch.manual_seed(seed)
    model = VitsModel(config)
    use_resblocks_type2(model)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if drop_training_side:
        state = {k: v for k, v in state.items() if not TRAINING_SIDE.fullmatch(k)}
    save_file(state, str(path / "model.safetensors"))
    config.save_pretrained(path)
    spec = {"espeak_voice": "en-us", "bos": "^", "eos": "$", "pad": "_", "phoneme_id_map": PHONEME_MAP}
    (path / "phonemes.json").write_text(json.dumps(spec, ensure_ascii=False))
    return path, model


def test_type2_blocks_load_and_compute_one_dilated_conv_per_dilation(tmp_path):
    path, model = piper_like_voice(tmp_path / "v", drop_training_side=False)
    host = load_vits(str(path))
    blocks = host.model.decoder.resblocks
    assert len(blocks) == 4 and all(isinstance(b, ResBlock2) for b in blocks) and host.missing == []
    block = blocks[3]  # kernel 5, dilations (2, 6)
    assert [c.dilation[0] for c in block.convs1] == [2, 6] and not hasattr(block, "convs2")
    x = torch.randn(1, block.convs1[0].in_channels, 40)
    y = x
    for conv in block.convs1:  # type 2, by hand
        y = y + torch.nn.functional.conv1d(
            torch.nn.functional.leaky_relu(y, 0.1), conv.weight, conv.bias, dilation=conv.dilation, padding=conv.padding
        )
    torch.testing.assert_close(block(x), y)
    torch.testing.assert_close(block.convs1[1].weight, model.decoder.resblocks[3].convs1[1].weight)


def test_a_type2_file_under_a_type1_config_is_refused_in_one_line(tmp_path):
    path, _ = piper_like_voice(tmp_path / "v")
    config = json.loads((path / "config.json").read_text())
    config["resblock_type"] = "1"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpeechPeftError, match=r"model.safetensors: 'decoder.resblocks.0.convs2.0.\w+' does not fit"):
        load_vits(str(path))


def test_infer_is_transformers_forward_and_returns_what_the_decoder_got(tmp_path):
    host = load_vits(str(make_tiny_vits_dir(tmp_path / "b", num_speakers=1)))
    ids, mask = host.tokenize(["a small cat"])
    torch.manual_seed(3)
    ref = host.model(input_ids=ids, attention_mask=mask)
    out = host.infer(ids, mask, seed=3)
    torch.testing.assert_close(out.waveform, ref.waveform)
    torch.testing.assert_close(out.z, ref.spectrogram)
    assert int(out.durations.sum()) == int(out.frames[0]) == out.z.shape[2]
    assert int(out.samples[0]) == out.waveform.shape[1]


def test_phonemes_are_espeak_ipa_wrapped_in_bos_pads_and_eos(tmp_path):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    host = load_vits(str(path))
    phones = host.front.phonemes("Hello there.")
    cli = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", "Hello there."], capture_output=True, text=True)
    assert phones == cli.stdout.strip() + "."  # espeak-ng's IPA, with the punctuation kept as Piper keeps it
    ids, mask = host.tokenize(["Hello there."])
    row = ids[0].tolist()
    assert row[:2] == [1, 0] and row[-1] == 2 and row[2:-1:2] == [PHONEME_MAP[c][0] for c in phones]
    assert set(row[3:-1:2]) == {0} and mask.all()
    wave = host.synthesize("Hello there.")
    assert wave.dtype == np.float32 and wave.size > 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("你好", "this en-us voice reads Latin script; '你好' in '你好' would be spelt out"),
        ("Hello Привет", "'Привет' in 'Hello Привет' would be spelt out"),
        ("Bach", "this voice has no id for phoneme(s) 'x'"),
        ("...", "nothing to say"),
    ],
)
def test_text_the_voice_cannot_read_is_a_one_line_error(tmp_path, text, message):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    out = tmp_path / "o.wav"
    code = main(["synthesize", "--base", str(path), text, "-o", str(out), "--no-progress"])
    assert code == 2 and not out.exists()
    with pytest.raises(SpeechPeftError, match=re.escape(message)):
        load_vits(str(path)).tokenize([text])


def test_clone_refuses_a_voice_without_posterior_naming_the_command(tmp_path, capsys):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    host = load_vits(str(path))
    assert any(k.startswith("posterior_encoder.") for k in host.missing)
    assert any(k.startswith("duration_predictor.post_flows.") for k in host.missing)
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(3):
        t = np.arange(24_000) / 16_000
        sf.write(refs / f"{i}.wav", (0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32), 16_000)
    (refs / "m.jsonl").write_text(
        "".join(json.dumps({"audio_filepath": f"{i}.wav", "text": "hello"}) + "\n" for i in range(3))
    )
    out = tmp_path / "spk"
    code = main(["clone", "--base", str(path), "--manifest", str(refs / "m.jsonl"), "--name", "x", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no posterior encoder" in err and "speechpeft tts complete-base --base" in err
    assert "Traceback" not in err and not out.exists()


def test_complete_base_fits_the_posterior_and_leaves_inference_untouched(tmp_path, capsys):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    texts = tmp_path / "texts.txt"
    lines = ["Hello there.", "A small cat sat down.", "It is raining today.", "Thank you so much."]
    lines += ["Good night, see you soon.", "Where are my shoes?", "The bus was late."]
    texts.write_text("\n".join(lines) + "\n")
    before = load_vits(str(path)).synthesize("Where is the cat?", seed=5)
    out = tmp_path / "done"
    args = ["tts", "complete-base", "--base", str(path), "-o", str(out), "--texts", str(texts)]
    assert main([*args, "--sentences", "5", "--held-out", "2", "--steps", "60", "--no-progress"]) == 0
    report = json.loads((out / "complete_base.json").read_text())
    held = report["held_out"]
    assert held["after"]["posterior_nll"] < held["before"]["posterior_nll"] - 0.5
    assert held["after"]["z_relative_error"] < held["before"]["z_relative_error"]
    assert held["after"]["duration_nll"] < held["before"]["duration_nll"]
    assert "z relative error" in capsys.readouterr().out
    done = load_vits(str(out))
    assert done.missing == [] and (out / "phonemes.json").is_file()
    np.testing.assert_array_equal(done.synthesize("Where is the cat?", seed=5), before)


def test_complete_base_resampled_copies_teach_the_posterior_other_pitches(tmp_path, capsys):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    texts = tmp_path / "texts.txt"
    lines = ["Hello there.", "A small cat sat down.", "It is raining today.", "Thank you so much."]
    texts.write_text("\n".join([*lines, "Good night, see you soon.", "Where are my shoes?"]) + "\n")
    out, plain = tmp_path / "done", tmp_path / "plain"
    common = ["tts", "complete-base", "--base", str(path), "--texts", str(texts), "--no-progress"]
    common += ["--sentences", "4", "--held-out", "2", "--steps", "60"]
    args = [*common, "-o", str(out)]
    torch.manual_seed(0)  # the missing posterior starts from the same random weights in both
    assert main([*common, "-o", str(plain)]) == 0
    torch.manual_seed(0)
    assert main([*args, "--augment", "2"]) == 0
    report = json.loads((out / "complete_base.json").read_text())
    held, without = report["held_out"], json.loads((plain / "complete_base.json").read_text())["held_out"]
    assert report["resampled_copies"] == 2 and report["resampling_shift"] == 0.25
    assert held["before"]["z_relative_error_resampled"] == without["before"]["z_relative_error_resampled"]
    # the same steps without the copies leave the posterior worse at reading other pitches
    assert held["after"]["z_relative_error_resampled"] < without["after"]["z_relative_error_resampled"]
    assert "resampled copies" in capsys.readouterr().out
    code = main([*args, "--overwrite", "--shift", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "shift must be in (0, 1], got 0.0" in err and "Traceback" not in err


def test_complete_base_needs_enough_texts_and_writes_nothing(tmp_path, capsys):
    need_espeak()
    path, _ = piper_like_voice(tmp_path / "v")
    (tmp_path / "t.txt").write_text("Hello there.\n")
    out = tmp_path / "done"
    code = main(["tts", "complete-base", "--base", str(path), "-o", str(out), "--texts", str(tmp_path / "t.txt")])
    assert code == 2 and "complete-base needs 252 sentences" in capsys.readouterr().err and not out.exists()
