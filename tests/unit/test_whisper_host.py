"""WhisperHost input checks and presets, without the real model."""

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from speechpeft import S2LoRAConfig
from speechpeft.errors import SpeechPeftError
from speechpeft.models.whisper import WhisperHost


class Processor:
    feature_extractor = WhisperFeatureExtractor(feature_size=80)


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, dtype=np.float32), "audio #0 is empty"),
        (np.full(1600, np.nan, dtype=np.float32), "NaN or inf"),
        (np.zeros((2, 1600), dtype=np.float32), "must be mono"),
        (np.zeros(31 * 16000, dtype=np.float32), "31.0 s"),
    ],
)
def test_bad_audio_is_a_one_line_error(tiny_whisper, audio, message):
    host = WhisperHost(tiny_whisper(), Processor())
    with pytest.raises(SpeechPeftError, match=message) as e:
        host.features([audio])
    assert "\n" not in str(e.value)


def test_other_sampling_rate_and_missing_processor_are_clear(tiny_whisper):
    host = WhisperHost(tiny_whisper(), Processor())
    with pytest.raises(SpeechPeftError, match="44100 Hz but the model expects 16000 Hz"):
        host.features([np.zeros(100, dtype=np.float32)], sampling_rate=44100)
    with pytest.raises(SpeechPeftError, match="no processor"):
        WhisperHost(tiny_whisper()).transcribe([np.zeros(100, dtype=np.float32)])


def test_features_are_log_mel_on_the_model_device(tiny_whisper):
    host = WhisperHost(tiny_whisper(), Processor())
    feats = host.features([np.random.default_rng(0).standard_normal(8000).astype(np.float32)] * 2)
    assert feats.shape == (2, 80, 100) and feats.dtype == torch.float32  # padded to the model's 1 s window


def test_host_inject_resolves_presets_and_loss_is_differentiable(tiny_whisper, tiny_batch):
    host = WhisperHost(tiny_whisper())
    names = host.inject(S2LoRAConfig(rank=4, targets="attn_qv"))
    assert len(names) == 12
    loss = host.loss(tiny_batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_short_window_slices_positions_pads_features_and_restores(tiny_whisper_dir):
    from speechpeft import load_whisper

    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    audio = [np.random.default_rng(1).standard_normal(24_000).astype(np.float32) * 0.1]  # 1.5 s
    full = host.features(audio)
    assert host.window_seconds == 3 and full.shape == (1, 80, 300)
    with torch.no_grad():
        before = host.model(input_features=full, decoder_input_ids=torch.tensor([[257, 259]])).logits
    table = host.model.model.encoder.embed_positions.weight.detach().clone()

    host.set_window(1)
    short = host.features([audio[0][:8000]])
    assert short.shape == (1, 80, 100) and host.window_seconds == 1
    assert torch.equal(host.model.model.encoder.embed_positions.weight, table[:50])
    assert len(host.transcribe([audio[0][:8000]], language="zh", max_new_tokens=4)) == 1
    with pytest.raises(SpeechPeftError, match="longer than the 1 s encoder window"):
        host.features(audio)

    host.set_window(3)
    with torch.no_grad():
        after = host.model(input_features=host.features(audio), decoder_input_ids=torch.tensor([[257, 259]])).logits
    assert torch.equal(after, before)
    with pytest.raises(SpeechPeftError, match=r"window_seconds must be in \(0, 3\]"):
        host.set_window(4)


def test_cached_token_suppression_decodes_exactly_like_transformers(tiny_whisper_dir):
    from speechpeft.models import whisper as hostmod
    from speechpeft.models import whisper_generate

    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(16_000 * n).astype(np.float32) * 0.1 for n in (1, 2, 4)]  # the 4 s one is long-form
    results, calls = [], []
    original_call = whisper_generate.CachedSuppress.__call__

    def spy(self, input_ids, scores):
        calls.append(1)
        return original_call(self, input_ids, scores)

    for cached in (True, False):
        host = hostmod.load_whisper(str(tiny_whisper_dir), device="cpu")
        host.model.generation_config.suppress_tokens = list(range(60, 140))  # bytes the random model would emit
        if not cached:
            del host.model._retrieve_logit_processors  # the class's own method again
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(whisper_generate.CachedSuppress, "__call__", spy)
            results.append(host.transcribe_segments(arrays, language="en"))
        assert bool(calls) == cached
        calls.clear()
    assert results[0] == results[1]
    host.model.generation_config.suppress_tokens = []
    assert host.transcribe_segments(arrays, language="en") != results[0]  # the suppression mattered


def test_load_host_picks_the_host_from_the_checkpoints_model_type(tiny_whisper_dir, tmp_path):
    from tiny import make_tiny_vits_dir

    from speechpeft.errors import SpeechPeftError
    from speechpeft.models import WhisperHost, load_host, registered_hosts

    host = load_host(str(tiny_whisper_dir), device="cpu")
    assert isinstance(host, WhisperHost) and host.sampling_rate == 16_000 and "whisper" in registered_hosts()
    assert host.max_new_tokens(2.0, 12.0) == 40 and host.max_new_tokens(600.0, 12.0) == 96 - 4  # decoder's limit
    vits = make_tiny_vits_dir(tmp_path / "vits", num_speakers=1)
    with pytest.raises(SpeechPeftError, match=r"is a 'vits' model; speechpeft serves wav2vec2, whisper"):
        load_host(str(vits))
    with pytest.raises(SpeechPeftError, match=r"cannot load model '.*nowhere'"):
        load_host(str(tmp_path / "nowhere"))
