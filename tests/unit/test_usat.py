"""USAT speaker adapters on tiny random VITS models: the three adapter invariants, size, errors."""

import numpy as np
import pytest
import torch
from test_vits_host import batch, tiny_vits

from speechpeft.adapters import USATConfig, adapter_parameters, load_adapter, merge_adapter, save_adapter
from speechpeft.errors import SpeechPeftError

CASES = {
    "single-stochastic": dict(num_speakers=1, stochastic=True),
    "multi-deterministic": dict(num_speakers=3, stochastic=False),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]


def objective(host, data, speaker):
    torch.manual_seed(0)  # the posterior sample and the stochastic duration noise
    np.random.seed(0)  # transformers' VITS text encoder draws its LayerDrop from numpy
    return host.loss(*data, speaker)


def test_output_unchanged_right_after_injection(case):
    host = tiny_vits(**case)
    data, speaker = batch(host), (1 if case["num_speakers"] > 1 else None)
    ids = data[0][:1]
    before, wave = objective(host, data, speaker), host.synthesize_ids(ids, speaker)
    names = host.inject(USATConfig(targets="usat"))
    assert any(".flow." in f".{n}" for n in names) and any("attention" in n for n in names)
    assert any(n.startswith("duration_predictor.") for n in names)
    after = objective(host, data, speaker)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (host.synthesize_ids(ids, speaker) == wave).all()


def test_only_adapter_parameters_change_and_loss_falls(case):
    host = tiny_vits(**case)
    data, speaker = batch(host), (1 if case["num_speakers"] > 1 else None)
    host.inject(USATConfig(targets="usat"))
    before = {n: p.detach().clone() for n, p in host.model.named_parameters()}
    adapter = {id(p) for p in adapter_parameters(host.model)}
    opt = torch.optim.Adam(host.model.parameters(), lr=1e-2)  # every parameter: freezing must hold
    losses = []
    for _ in range(10):
        out = objective(host, data, speaker)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    for name, p in host.model.named_parameters():
        assert torch.equal(p, before[name]) != (id(p) in adapter), name
    assert losses[-1] < losses[0]


def test_save_then_load_into_fresh_model_reproduces_outputs(case, tmp_path):
    host = tiny_vits(**case)
    data, speaker = batch(host), (1 if case["num_speakers"] > 1 else None)
    host.inject(USATConfig(targets="usat", bottleneck=4))
    with torch.no_grad():
        for p in adapter_parameters(host.model):
            p.add_(torch.randn_like(p) * 0.1)
    expected = objective(host, data, speaker)["loss"]
    save_adapter(host.model, tmp_path / "speaker")
    fresh = tiny_vits(**case)  # same base weights (same seed); the adapter must carry the rest
    torch.manual_seed(123)
    load_adapter(fresh.model, tmp_path / "speaker")
    assert torch.equal(objective(fresh, data, speaker)["loss"], expected)


def test_usat_cannot_be_merged_and_needs_flow_or_attention_targets():
    host = tiny_vits(num_speakers=3)
    host.inject(USATConfig(targets="usat"))
    with pytest.raises(SpeechPeftError, match="usat adapters are not linear"):
        merge_adapter(host.model)


def test_usat_on_a_full_size_vits_config_is_under_one_percent():
    from transformers import VitsConfig, VitsModel

    from speechpeft.models.vits import VitsHost

    host = VitsHost(VitsModel(VitsConfig(num_speakers=109, speaker_embedding_size=256)))  # the VCTK layout
    base = sum(p.numel() for p in host.model.parameters())
    host.inject(USATConfig(targets="usat"))
    added = sum(p.numel() for p in adapter_parameters(host.model))
    assert added / base <= 0.01, (added, base)
