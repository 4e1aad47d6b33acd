"""A mixed batch, each utterance with its own adapter, equals separate per-adapter runs token for token."""

import numpy as np
import pytest
import torch

from speechpeft.adapters import LoRAConfig, S2LoRAConfig, load_adapter, save_adapter
from speechpeft.adapters.bank import bank_ids, bank_layers, load_bank, unload_bank
from speechpeft.errors import SpeechPeftError
from speechpeft.models import load_whisper


def make(model_dir, out, config, seed, like=None):
    host = load_whisper(str(model_dir), device="cpu")
    if like is not None:  # same S2-LoRA basis, other λ
        load_adapter(host.model, like)
    else:
        torch.manual_seed(100 + seed)  # A (and a basis) draw from the global RNG: the same whatever ran before
        host.inject(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if name.endswith(("lora_B.weight", ".lam")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return save_adapter(host.model, out, prune=False)


def generate(host, beams):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(16_000 * s).astype(np.float32) * 0.1 for s in (1, 2, 1, 2)]
    kwargs = dict(language="en", task="transcribe", num_beams=beams, do_sample=False, max_new_tokens=12)
    return host.model.generate(input_features=host.features(arrays).to(host.model.device), **kwargs)


def rows(ids, i):
    return [t for t in ids[i].tolist() if t != 256]  # drop end-of-text padding


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_whisper_dir):
    d = tmp_path_factory.mktemp("bank")
    a0 = make(tiny_whisper_dir, d / "lora-qv", LoRAConfig(rank=4, alpha=8, targets="attn_qv"), 1)
    a1 = make(tiny_whisper_dir, d / "lora-all", LoRAConfig(rank=8, alpha=8, targets="all_linear"), 2)
    a2 = make(tiny_whisper_dir, d / "s2", S2LoRAConfig(rank=8, targets="attn"), 3)
    a3 = make(tiny_whisper_dir, d / "s2-same-basis", None, 4, like=a2)
    a4 = make(tiny_whisper_dir, d / "s2-leaf", S2LoRAConfig(rank=4, targets="attn", share="leaf"), 5)
    a5 = make(tiny_whisper_dir, d / "s2-leaf-same-basis", None, 6, like=a4)
    return [a0, a1, a2, a3, a4, a5]


# on a GPU machine the bank runs the fused Triton kernel (bench/gpu.sh runs the cuda cases there)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("beams", [1, 2])
@pytest.mark.parametrize("which", [[0, 1, 2], [2, 3]], ids=["lora+s2lora", "s2lora-shared-basis"])
def test_mixed_batch_equals_separate_runs(tiny_whisper_dir, adapters, beams, which, device):
    paths = [adapters[i] for i in which]
    separate = []
    for p in paths:
        host = load_whisper(str(tiny_whisper_dir), device=device)
        load_adapter(host.model, p)
        separate.append(generate(host, beams))
    bare = generate(load_whisper(str(tiny_whisper_dir), device=device), beams)
    host = load_whisper(str(tiny_whisper_dir), device=device)
    load_bank(host.model, paths)
    assert all(layer.shared_basis for layer in bank_layers(host.model).values()) == (which == [2, 3])
    ids = [0, len(paths) - 1, -1, 1]  # row 2 runs bare
    with host.mixed_adapters(ids):
        mixed = generate(host, beams)
    for row, k in enumerate(ids):
        want = bare if k < 0 else separate[k]
        assert rows(mixed, row) == rows(want, row), (row, k)
    assert rows(separate[0], 0) != rows(bare, 0)  # the adapters change the output: the check has teeth
    unload_bank(host.model)
    torch.testing.assert_close(generate(host, beams), bare)


@pytest.mark.parametrize(
    "which", [[0, 1, 2], [2, 3], [4, 5], [1, 4]], ids=["lora+s2lora", "s2lora-shared-basis", "leaf-bases", "lora+leaf"]
)
def test_each_row_gets_its_own_adapter_in_one_forward_pass(tiny_whisper_dir, adapters, which):
    """Logits, not tokens: a bank that gave every row adapter 0 (its λ, or its LoRA) fails here."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(16_000).astype(np.float32) * 0.1 for _ in range(4)]
    labels = torch.tensor([[5, 9, 40, 41, 42]] * 4)

    def forward(host):
        with torch.no_grad():
            return host.model(input_features=host.features(arrays), labels=labels).logits  # (4, L, vocab)

    paths = [adapters[i] for i in which]
    separate = []
    for p in paths:
        host = load_whisper(str(tiny_whisper_dir), device="cpu")
        load_adapter(host.model, p)
        separate.append(forward(host))
    bare = forward(load_whisper(str(tiny_whisper_dir), device="cpu"))
    for i in range(len(separate)):  # every adapter is distinguishable from every other and from none
        assert (separate[i] - bare).abs().max() > 1e-2
        for j in range(i):
            assert (separate[i] - separate[j]).abs().max() > 1e-2, (i, j)
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, paths)
    shared = all(layer.shared_basis for layer in bank_layers(host.model).values())
    assert shared == (which in ([2, 3], [4, 5]))  # one basis kept once, λ rows differ
    ids = [len(paths) - 1, 0, -1, 1]
    with bank_ids(host.model, ids):
        mixed = forward(host)
    for row, k in enumerate(ids):
        torch.testing.assert_close(mixed[row], (bare if k < 0 else separate[k])[row], atol=1e-5, rtol=1e-5)


def test_bank_errors_are_one_line(tiny_whisper_dir, adapters):
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, adapters[:2])
    with pytest.raises(SpeechPeftError, match=r"adapter ids must be in -1..1, got \[0, 2\]"):
        with bank_ids(host.model, [0, 2]):
            pass
    with pytest.raises(SpeechPeftError, match="already holds adapters"):
        load_bank(host.model, adapters[:1])


def test_mixed_long_form_segments_equal_separate_runs(tiny_whisper_dir, adapters):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(int(16_000 * s)).astype(np.float32) * 0.1 for s in (4.5, 1.0, 3.6)]  # window 3 s
    ids = [1, 0, -1]
    alone = {}
    for k in (0, 1):
        host = load_whisper(str(tiny_whisper_dir), device="cpu")
        load_adapter(host.model, adapters[k])
        alone[k] = host.transcribe_segments(arrays, language="en")
    alone[-1] = load_whisper(str(tiny_whisper_dir), device="cpu").transcribe_segments(arrays, language="en")
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, adapters[:2])
    mixed = host.transcribe_segments(arrays, language="en", adapter_ids=ids)
    assert [mixed[i] for i in range(3)] == [alone[k][i] for i, k in enumerate(ids)]
    for i, k in enumerate(ids[:2]):  # the adapters change these files' segments: the check has teeth
        assert alone[k][i] != alone[-1][i] and alone[k][i] != alone[1 - k][i], i


def test_transcribe_with_ids_across_several_batches(tiny_whisper_dir, adapters):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(16_000).astype(np.float32) * 0.1 for _ in range(5)]
    ids = [0, 1, -1, 1, 0]
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, adapters[:2])
    mixed = host.transcribe(arrays, language="en", batch_size=2, adapter_ids=ids, max_new_tokens=8)
    alone = []
    for i, k in enumerate(ids):
        h = load_whisper(str(tiny_whisper_dir), device="cpu")
        if k >= 0:
            load_adapter(h.model, adapters[k])
        alone.append(h.transcribe([arrays[i]], language="en", max_new_tokens=8)[0])
    assert mixed == alone
    bare = load_whisper(str(tiny_whisper_dir), device="cpu").transcribe(arrays, language="en", max_new_tokens=8)
    assert all(alone[i] != bare[i] for i, k in enumerate(ids) if k >= 0)  # each adapter changes its rows
    with pytest.raises(SpeechPeftError, match="adapter_ids has 2 entries for 5 utterances"):
        host.transcribe(arrays, language="en", adapter_ids=[0, 1])


def test_two_threads_decoding_at_once_keep_their_own_adapter_ids_and_a_banked_model_deep_copies(
    tiny_whisper_dir, adapters
):
    import copy
    import threading

    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, adapters[:2])
    alone = {}
    for ids in ([0, 0, 0, 0], [1, -1, 1, -1]):
        with host.mixed_adapters(ids):
            alone[tuple(ids)] = generate(host, 1)
    both, barrier = {}, threading.Barrier(2)

    def decode(ids):
        with host.mixed_adapters(ids):
            barrier.wait()  # both threads hold their ids before either decodes
            both[tuple(ids)] = generate(host, 1)

    threads = [threading.Thread(target=decode, args=(ids,)) for ids in ([0, 0, 0, 0], [1, -1, 1, -1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ids, out in alone.items():
        assert torch.equal(both[ids], out), f"thread with ids {list(ids)} decoded another thread's adapters"
    copy.deepcopy(host.model)  # the per-thread ids live outside the modules
    unload_bank(host.model)
