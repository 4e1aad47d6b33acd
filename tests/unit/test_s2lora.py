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


def test_share_modes_group_matrices_by_shape_place_or_projection(tiny_whisper):
    expected = {
        "shape": ["64x64"],
        "stack": ["64x64@model.decoder.layers.*.encoder_attn", "64x64@model.decoder.layers.*.self_attn",
                  "64x64@model.encoder.layers.*.self_attn"],
        "leaf": ["64x64@k_proj", "64x64@out_proj", "64x64@q_proj", "64x64@v_proj"],
    }  # fmt: skip
    for share, keys in expected.items():
        model = tiny_whisper()
        inject(model, S2LoRAConfig(rank=4, targets="attn", share=share))
        layers = adapter_layers(model)
        assert sorted({layer.basis_key for layer in layers.values()}) == keys, share
        q0 = layers["model.encoder.layers.0.self_attn.q_proj"]
        assert q0.basis is layers["model.encoder.layers.1.self_attn.q_proj"].basis  # shared across depth always
        assert (q0.basis is layers["model.encoder.layers.0.self_attn.k_proj"].basis) == (share in ("shape", "stack"))
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=4, targets="attn", share="module"))
    assert len({layer.basis_key for layer in adapter_layers(model).values()}) == 12  # 3 attention kinds x q/k/v/o


def test_lambda_gets_its_own_learning_rate_group(tiny_whisper):
    from speechpeft.adapters.inject import adapter_param_groups

    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=4, targets="attn", lam_lr=10.0))
    groups = adapter_param_groups(model, lr=1e-3)
    by_scale = {g["lr_scale"]: g for g in groups}
    assert sorted(by_scale) == [1.0, 10.0] and by_scale[10.0]["lr"] == 1e-2
    lams = {id(layer.lam) for layer in adapter_layers(model).values()}
    assert {id(p) for p in by_scale[10.0]["params"]} == lams
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)["adapter"]


def test_l1_waits_then_ramps_and_scales_with_lambda_lr(tiny_whisper):
    cfg = S2LoRAConfig(rank=4, l1=0.5, lam_lr=2.0, l1_start=0.25, l1_ramp=0.5)
    assert [cfg.l1_factor(p) for p in (0.0, 0.2, 0.5, 0.75, 1.0, None)] == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    model = tiny_whisper()
    inject(model, cfg)
    layer = next(iter(adapter_layers(model).values()))
    with torch.no_grad():
        layer.lam.fill_(1.0)
    after_optimizer_step(model, lr=0.1, progress=0.1)  # before l1_start: untouched
    assert torch.equal(layer.lam, torch.ones(4))
    after_optimizer_step(model, lr=0.1, progress=0.5)  # half-way up the ramp: 0.1 x 2 x 0.5 x 0.5
    torch.testing.assert_close(layer.lam, torch.full((4,), 0.95))


def test_b0_init_starts_every_rank_switched_on_with_a_zero_output_basis(tiny_whisper, tiny_batch):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=4, init="b0"))
    layer = next(iter(adapter_layers(model).values()))
    assert torch.equal(layer.lam, torch.ones(4)) and torch.count_nonzero(layer.basis.B) == 0
    model(**tiny_batch).loss.backward()
    assert layer.basis.B.grad.abs().sum() > 0  # B learns first; λ follows once B is non-zero


def test_rank_table_counts_non_zero_lambda_per_matrix(tiny_whisper, tmp_path):
    model = tiny_whisper()
    inject(model, S2LoRAConfig(rank=4))
    with torch.no_grad():
        for i, layer in enumerate(adapter_layers(model).values()):
            layer.lam.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]) if i % 2 else torch.ones(4))
    live = adapter_layers(model)["model.encoder.layers.0.self_attn.q_proj"].live_summary(adapter_layers(model))
    save_adapter(model, tmp_path / "a")
    saved = read_adapter(tmp_path / "a")
    table = type(next(iter(adapter_layers(model).values()))).summarize(saved.tensors)["rank_table"]
    assert table == live["rank_table"] and sorted(set(table.values())) == [1, 4]
    assert live["sparsity"] == 0.375  # half the matrices keep 1 of 4
