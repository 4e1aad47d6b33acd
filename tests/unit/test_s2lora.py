"""S2-LoRA specifics: one basis per shape, gradients reach λ at step one, proximal sparsity, pruning."""

import copy

import torch

from speechpeft import (
    S2LoRAConfig,
    adapter_layers,
    after_optimizer_step,
    count_parameters,
    inject,
    load_adapter,
    read_adapter,
    s2lora_sparsity,
    save_adapter,
)
from speechpeft.adapters.s2lora import BASIS_PREFIX


def test_one_basis_per_shape_shared_across_layers(tiny_whisper):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=8, targets="all_linear"))
    bases = {id(layer.basis): layer.basis_key for layer in adapter_layers(model).values()}
    assert sorted(bases.values()) == ["128x64", "64x128", "64x64"]  # fc1 (128x64), fc2 (64x128), attention
    n_layers = len(adapter_layers(model))
    # 3 bases (A: r x d_in, B: d_out x r) + one λ of length r per matrix
    expected = 8 * (64 + 64) + 8 * (64 + 128) + 8 * (128 + 64) + n_layers * 8
    assert count_parameters(model)["adapter"] == expected
    assert count_parameters(model)["trainable"] == expected


def test_zero_delta_at_start_but_lambda_gets_gradient(tiny_whisper, tiny_batch):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=8))
    for layer in adapter_layers(model).values():
        assert torch.count_nonzero(layer.delta_weight()) == 0
    model(**tiny_batch).loss.backward()
    lam_grads = [layer.lam.grad for layer in adapter_layers(model).values()]
    assert all(g is not None and g.abs().sum() > 0 for g in lam_grads)


def test_proximal_step_makes_exact_zeros_and_reports_them(tiny_whisper):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=8, l1=0.5))
    layers = list(adapter_layers(model).values())
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.lam.copy_(torch.linspace(-1, 1, 8) * (i + 1))
    after_optimizer_step(model, lr=0.5)  # threshold 0.25
    first = layers[0].lam
    expected = torch.linspace(-1, 1, 8)
    expected = expected.sign() * (expected.abs() - 0.25).clamp_min(0)
    torch.testing.assert_close(first, expected)
    stats = s2lora_sparsity(model)
    zeros = sum(int((layer.lam == 0).sum()) for layer in layers)
    assert stats["lambda_zero"] == zeros and zeros > 0
    assert stats["zero_fraction"] == zeros / (8 * len(layers))


def test_ranks_zero_everywhere_are_pruned_on_save_and_outputs_survive(tiny_whisper, tiny_batch, tmp_path):
    model = tiny_whisper()
    base_state = copy.deepcopy(model.state_dict())
    inject(model, S2LoRAConfig(rank=8))
    with torch.no_grad():
        for i, layer in enumerate(adapter_layers(model).values()):
            layer.lam.normal_()
            layer.lam[[1, 4, 6]] = 0  # dead in every matrix: pruned
            layer.lam[2 + (i % 2)] = 0  # dead in some matrices only: kept
    expected = model(**tiny_batch).logits
    save_adapter(model, tmp_path / "a")
    af = read_adapter(tmp_path / "a")
    assert af.tensors[f"{BASIS_PREFIX}64x64.A"].shape == (5, 64)
    assert af.record["parameters"]["stored"] < af.record["parameters"]["trainable"]
    fresh = tiny_whisper(seed=3)
    fresh.load_state_dict(base_state)
    load_adapter(fresh, tmp_path / "a")
    torch.testing.assert_close(fresh(**tiny_batch).logits, expected, atol=1e-6, rtol=1e-6)


def test_training_with_l1_sparsifies_while_loss_falls(tiny_whisper, tiny_batch):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=8, l1=0.9))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model(**tiny_batch).loss
        loss.backward()
        opt.step()
        after_optimizer_step(model, lr=5e-3)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert 0 < s2lora_sparsity(model)["zero_fraction"] < 1
