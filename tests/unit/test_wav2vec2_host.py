"""The wav2vec 2.0 CTC host on tiny random checkpoints: loading by model_type, a vocabulary and
head of its own that travel with the adapter, greedy CTC decoding, and one-line refusals."""

import json

import numpy as np
import pytest
import torch
from tiny import TEXTS, make_tiny_wav2vec2_dir

from speechpeft import LoRAConfig, S2LoRAConfig
from speechpeft.adapters import adapter_layers, read_adapter
from speechpeft.errors import SpeechPeftError
from speechpeft.models import Wav2Vec2Host, load_host
from speechpeft.train.tuning import AdapterTuning


@pytest.fixture(scope="module")
def bare_dir(tmp_path_factory):
    """Like a pretraining checkpoint: no CTC tokenizer, a placeholder head."""
    return make_tiny_wav2vec2_dir(tmp_path_factory.mktemp("w2v-bare"))


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory):
    """A CTC checkpoint whose vocabulary spells TEXTS and nothing else."""
    return make_tiny_wav2vec2_dir(tmp_path_factory.mktemp("w2v-ctc"), texts=TEXTS)


def audio(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * 16_000)).astype(np.float32) * 0.1


def test_model_type_picks_the_host_and_the_presets_cover_the_layers(bare_dir):
    host = load_host(str(bare_dir), device="cpu")
    assert isinstance(host, Wav2Vec2Host) and host.tokenizer is None and host.sampling_rate == 16_000
    counts = {}
    for preset in ("attn", "attn_qv", "all_linear"):
        fresh = load_host(str(bare_dir), device="cpu")
        counts[preset] = len(fresh.inject(LoRAConfig(rank=2, targets=preset)))
    assert counts == {"attn": 8, "attn_qv": 4, "all_linear": 12}  # 2 layers: 4 / 2 / 6 per layer
    conv = host.model.wav2vec2.feature_extractor
    assert not any(p.requires_grad for p in conv.parameters())  # the feature encoder is frozen


def test_vocabulary_and_head_round_trip_through_the_adapter_folder(bare_dir, tmp_path):
    host = load_host(str(bare_dir), device="cpu")
    placeholder = host.model.lm_head.out_features
    host.prepare_training(TEXTS)
    vocab = host.tokenizer.get_vocab()
    assert (vocab["[PAD]"], vocab["[UNK]"], vocab["|"]) == (0, 1, 2) and vocab["上"] == 3 and "你" in vocab
    assert host.model.lm_head.out_features == len(vocab) != placeholder and host.new_modules == ["lm_head"]
    tuning = AdapterTuning(S2LoRAConfig(rank=4, targets="attn", init="b0"), host.new_modules, host.save_companions)
    tuning.attach(host.model)
    assert host.model.lm_head.weight.requires_grad and tuning.summary(host.model)["trainable"] > sum(
        p.numel() for p in host.model.lm_head.parameters()
    )
    with torch.no_grad():
        for layer in adapter_layers(host.model).values():
            for _, p in layer.adapter_parameters():
                p.add_(0.05 * torch.randn_like(p))
        host.model.lm_head.weight.mul_(3.0)
    arrays = [audio(1.0, 1), audio(0.7, 2)]
    expected = host.transcribe(arrays)
    logits = host.model(**host.inputs(arrays[:1])).logits
    tuning.save(host.model, tmp_path / "adapter", {"window_seconds": host.window_seconds})

    af = read_adapter(tmp_path / "adapter")
    assert sorted(af.modules) == ["lm_head.bias", "lm_head.weight"]
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["modules_to_save"] == ["lm_head"]
    assert json.loads((tmp_path / "adapter" / "vocab.json").read_text(encoding="utf-8")) == vocab

    fresh = load_host(str(bare_dir), device="cpu")
    fresh.attach_adapter(tmp_path / "adapter")
    assert fresh.tokenizer.get_vocab() == vocab
    assert torch.equal(fresh.model(**fresh.inputs(arrays[:1])).logits, logits)
    assert fresh.transcribe(arrays) == expected
    fresh.detach_adapter()  # the base's own head and (no) tokenizer come back
    assert not adapter_layers(fresh.model) and fresh.tokenizer is None
    assert fresh.model.lm_head.out_features == placeholder


def test_a_loaded_vocabulary_is_kept_and_refuses_characters_it_lacks(ctc_dir):
    host = load_host(str(ctc_dir), device="cpu")
    size = len(host.tokenizer)
    host.prepare_training(["whatever"])  # a checkpoint with a vocabulary keeps it
    assert len(host.tokenizer) == size and host.new_modules == []
    host.check_text("你好", None)
    with pytest.raises(SpeechPeftError, match=r"character 'ß' \(U\+00DF\) is not in the model's vocabulary"):
        host.check_text("你ß", None)


def test_audio_shorter_than_the_conv_stack_is_refused(bare_dir):
    host = load_host(str(bare_dir), device="cpu")
    host.prepare_training(TEXTS)
    assert host.min_seconds == pytest.approx(85 / 16_000)  # kernels 10, 4, 4 with strides 5, 4, 4
    assert len(host.transcribe([audio(85 / 16_000)])) == 1
    with pytest.raises(SpeechPeftError, match=r"audio #0 is 0\.005 s, shorter than the 0\.005 s the conv"):
        host.transcribe([audio(84 / 16_000)])


def test_greedy_ctc_collapses_repeats_and_drops_blanks(bare_dir):
    host = load_host(str(bare_dir), device="cpu")
    host.prepare_training(["ab ba"])
    vocab = host.tokenizer.get_vocab()
    frames = host._frames([16_000])[0]
    path = ([vocab["a"]] * 3 + [0] + [vocab["a"], vocab["b"]] + [vocab["|"]] * 2 + [vocab["b"]]) * 1
    path += [0] * (frames - len(path))
    with torch.no_grad():  # a head whose argmax follows `path` whatever the input: bias only
        host.model.lm_head.weight.zero_()
        host.model.lm_head.bias.zero_()
    original = host.model.lm_head.forward
    table = torch.full((frames, len(vocab)), -10.0)
    table[torch.arange(frames), torch.tensor(path)] = 10.0
    host.model.lm_head.forward = lambda h: table.expand(h.shape[0], -1, -1)[:, : h.shape[1]]
    try:
        assert host.transcribe([audio(1.0)]) == ["aab b"]
    finally:
        host.model.lm_head.forward = original
    with pytest.raises(SpeechPeftError, match="greedy CTC"):
        host.transcribe([audio(1.0)], beam=4)
