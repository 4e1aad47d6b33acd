"""The invariants every adapter kind must keep, on tiny random models built from configs: a
Whisper (seq2seq) and a wav2vec 2.0 CTC model, each with its hosts' target presets."""

import copy

import pytest
import torch

import speechpeft.models  # noqa: F401  (registers both hosts' target presets)
from speechpeft import (
    LoRAConfig,
    S2LoRAConfig,
    adapter_layers,
    inject,
    load_adapter,
    merge_adapter,
    save_adapter,
    unload_adapter,
    unmerge_adapter,
)
from speechpeft.adapters import adapter_parameters

CASES = {
    "lora-attn_qv": LoRAConfig(rank=4, alpha=8, targets="attn_qv"),
    "lora-all_linear": LoRAConfig(rank=4, alpha=8, targets="all_linear"),
    "s2lora-attn": S2LoRAConfig(rank=8, targets="attn"),
    "s2lora-all_linear": S2LoRAConfig(rank=8, targets="all_linear"),  # three basis shapes
    # a basis per projection, LoRA-like init (B = 0, λ = 1), its own λ learning rate
    "s2lora-leaf-b0": S2LoRAConfig(rank=8, targets="all_linear", share="leaf", init="b0", lam_lr=5.0),
    "s2lora-stack": S2LoRAConfig(rank=4, targets="attn", share="stack"),
}


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def train(model, batch, steps=3, lr=1e-2):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # all params: freezing must hold
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(params=sorted(CASES))
def config(request):
    return CASES[request.param]


@pytest.fixture(params=["whisper", "wav2vec2"])
def host(request, tiny_batch):
    """(build(seed) -> a tiny model, a batch it trains on) for each host."""
    if request.param == "whisper":
        from conftest import build_tiny_whisper

        return build_tiny_whisper, tiny_batch
    from tiny import build_tiny_wav2vec2, wav2vec2_batch

    return build_tiny_wav2vec2, wav2vec2_batch()


def test_output_unchanged_right_after_injection(host, config):
    tiny_whisper, tiny_batch = host
    model = tiny_whisper(seed=0)
    before = logits(model, tiny_batch)
    names = inject(model, config)
    assert names and len(adapter_layers(model)) == len(names)
    assert torch.equal(logits(model, tiny_batch), before)


def test_only_adapter_parameters_change_after_three_steps(host, config):
    tiny_whisper, tiny_batch = host
    model = tiny_whisper(seed=0)
    inject(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapter_ids = {id(p) for p in adapter_parameters(model)}
    train(model, tiny_batch)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (id(p) in adapter_ids), f"{name}: changed={changed}"
        assert p.requires_grad == (id(p) in adapter_ids), name


def test_save_then_load_into_fresh_model_with_another_seed(host, config, tmp_path):
    tiny_whisper, tiny_batch = host
    model = tiny_whisper(seed=0)
    base_state = copy.deepcopy(model.state_dict())
    inject(model, config)
    train(model, tiny_batch)
    expected = logits(model, tiny_batch)
    save_adapter(model, tmp_path / "adapter")

    torch.manual_seed(99)  # the fresh adapter's own init differs; loading must overwrite all of it
    fresh = tiny_whisper(seed=7)
    fresh.load_state_dict(base_state)
    load_adapter(fresh, tmp_path / "adapter")
    assert torch.equal(logits(fresh, tiny_batch), expected)


def test_merged_output_equals_unmerged(host, config):
    tiny_whisper, tiny_batch = host
    model = tiny_whisper(seed=0)
    base = logits(model, tiny_batch)
    inject(model, config)
    train(model, tiny_batch)
    unmerged = logits(model, tiny_batch)
    assert (unmerged - base).abs().max() > 1e-3  # the adapter does something
    merge_adapter(model)
    torch.testing.assert_close(logits(model, tiny_batch), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_adapter(model)
    torch.testing.assert_close(logits(model, tiny_batch), unmerged, atol=1e-5, rtol=1e-5)
    plain = unload_adapter(model, merge=True)
    assert not adapter_layers(plain)
    torch.testing.assert_close(logits(plain, tiny_batch), unmerged, atol=1e-5, rtol=1e-5)
