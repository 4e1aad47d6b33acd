"""PEFT as an oracle: our LoRA files load in PEFT, and PEFT's load in speechpeft, with equal logits."""

import copy

import pytest
import torch

from speechpeft import LoRAConfig, inject, load_adapter, read_adapter, save_adapter

peft = pytest.importorskip("peft", reason="peft is a test dependency (pip install -e '.[test]')")


def randomize_adapter(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def logits(model, batch):
    with torch.no_grad():
        return model(input_features=batch["input_features"], decoder_input_ids=batch["labels"]).logits


@pytest.mark.parametrize("targets", ["attn_qv", "all_linear"])
def test_speechpeft_lora_loads_in_peft_with_equal_logits(tiny_whisper, tiny_batch, tmp_path, targets):
    model = tiny_whisper(seed=0)
    base = copy.deepcopy(model)
    bare = logits(base, tiny_batch)
    inject(model, LoRAConfig(rank=4, alpha=8, targets=targets))
    randomize_adapter(model)
    ours = logits(model, tiny_batch)
    assert (ours - bare).abs().max() > 1e-2  # the adapter matters
    save_adapter(model, tmp_path / "lora")

    theirs = peft.PeftModel.from_pretrained(base, str(tmp_path / "lora")).eval()  # injects into base
    assert (logits(theirs, tiny_batch) - ours).abs().max() <= 1e-4


def test_peft_lora_loads_in_speechpeft_with_equal_logits(tiny_whisper, tiny_batch, tmp_path):
    model = tiny_whisper(seed=0)
    base = copy.deepcopy(model)
    theirs = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"]))
    randomize_adapter(theirs)
    expected = logits(theirs.eval(), tiny_batch)
    theirs.save_pretrained(str(tmp_path / "peft"))

    af = read_adapter(tmp_path / "peft")
    assert af.record is None and af.kind == "lora" and len(af.targets) == 12 + 4
    load_adapter(base, tmp_path / "peft")
    assert (logits(base, tiny_batch) - expected).abs().max() <= 1e-4
