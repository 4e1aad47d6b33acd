"""The VITS host on tiny random models built from VitsConfig: training loss, synthesis, speakers."""

import numpy as np
import pytest
import torch

from speechpeft.errors import SpeechPeftError
from speechpeft.models.vits import VitsHost


def tiny_vits(num_speakers=1, stochastic=True, seed=0):
    from transformers import VitsConfig, VitsModel

    config = VitsConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, window_size=2, ffn_dim=64,
        flow_size=16, spectrogram_bins=33, upsample_initial_channel=32, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2,
        wavenet_kernel_size=3, duration_predictor_filter_channels=32, duration_predictor_flow_bins=4,
        depth_separable_num_layers=2, num_speakers=num_speakers, speaker_embedding_size=8 if num_speakers > 1 else 0,
        use_stochastic_duration_prediction=stochastic, sampling_rate=16_000,
    )  # fmt: skip
    torch.manual_seed(seed)
    return VitsHost(VitsModel(config))


def batch(host, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    audio = [np.sin(np.arange(n) * f).astype(np.float32) * 0.3 for n, f in ((1600, 0.05), (1200, 0.11))]
    spec, frames = host.spectrogram(audio)
    return ids, mask, spec, frames


@pytest.mark.parametrize("stochastic", [True, False])
@pytest.mark.parametrize("speakers", [1, 3])
def test_training_loss_is_finite_differentiable_and_falls(stochastic, speakers):
    host = tiny_vits(speakers, stochastic)
    ids, mask, spec, frames = batch(host)
    assert spec.shape == (2, 33, 100) and frames.tolist() == [100, 75]  # hop 16
    speaker = 1 if speakers > 1 else None
    params = [p for n, p in host.model.named_parameters() if not n.startswith("decoder.")]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)  # the posterior sample and the duration noise
        np.random.seed(0)  # transformers' VITS text encoder draws its LayerDrop from numpy
        out = host.loss(ids, mask, spec, frames, speaker)
        assert all(torch.isfinite(v) for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]


def test_synthesis_gives_audio_at_the_decoder_rate_with_a_table_id_or_a_free_vector():
    host = tiny_vits(num_speakers=3)
    ids = torch.randint(1, 40, (1, 5))
    by_id = host.synthesize_ids(ids, speaker=2)
    by_vector = host.synthesize_ids(ids, speaker=host.model.embed_speaker.weight[2].detach().clone())
    assert by_id.ndim == 1 and by_id.size % host.hop_length == 0 and np.isfinite(by_id).all()
    np.testing.assert_allclose(by_id, by_vector, atol=1e-6)
    with pytest.raises(SpeechPeftError, match="speaker id must be in 0..2"):
        host.synthesize_ids(ids, speaker=5)
    with pytest.raises(SpeechPeftError, match="speaker vector has 4 values; this model's are 8"):
        host.synthesize_ids(ids, speaker=torch.zeros(4))


class _Fixed(torch.nn.Module):
    """Returns fixed outputs, so the loss can be worked out by hand."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def test_kl_and_duration_losses_equal_a_hand_computation():
    """One channel, two tokens with prior means 0 and 10 (std 1), four frames whose z lie near
    0, 0, 0 and 10: the alignment must give durations (3, 1). With posterior log-std -1:
    KL per frame = logs_p - logs_q - 1/2 + (z - m)^2 / 2 = 1/2 + (z - m)^2 / 2, averaged over frames.
    A deterministic duration predictor saying log-durations (1.0, 0.5): mean squared error against
    (log 3, log 1)."""
    from types import SimpleNamespace

    host = tiny_vits(num_speakers=1, stochastic=False)
    m_p, logs_p = torch.tensor([[[0.0], [10.0]]]), torch.zeros(1, 2, 1)  # (B, T, C)
    z = torch.tensor([[[0.1, -0.2, 0.3, 9.5]]])  # (B, C, F)
    logs_q = torch.full((1, 1, 4), -1.0)
    host.model.text_encoder = _Fixed(
        lambda **kw: SimpleNamespace(last_hidden_state=torch.zeros(1, 2, 32), prior_means=m_p,
                                     prior_log_variances=logs_p)
    )  # fmt: skip
    host.model.posterior_encoder = _Fixed(lambda spec, mask, g: (z, z, logs_q))
    host.model.flow = _Fixed(lambda z_, mask, g: z_)  # z_p = z
    host.model.duration_predictor = _Fixed(lambda hidden, mask, g: torch.tensor([[[1.0, 0.5]]]))
    out = host.loss(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long),
                    torch.zeros(1, 33, 4), torch.tensor([4]))  # fmt: skip
    kl = sum(0.5 + 0.5 * d**2 for d in (0.1, -0.2, 0.3, -0.5)) / 4
    duration = ((1.0 - np.log(3)) ** 2 + 0.5**2) / 2
    assert out["kl"].item() == pytest.approx(kl, abs=1e-5)  # 0.54875
    assert out["duration"].item() == pytest.approx(duration, abs=1e-5)
    assert out["loss"].item() == pytest.approx(kl + duration, abs=1e-5)
