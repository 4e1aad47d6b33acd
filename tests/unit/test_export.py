"""`speechpeft export`: PEFT LoRA (S2-LoRA converted exactly) and a merged transformers model."""

import pytest
import torch
from transformers import WhisperForConditionalGeneration

from speechpeft import LoRAConfig, S2LoRAConfig, inject, load_whisper, save_adapter
from speechpeft.cli import main

peft = pytest.importorskip("peft", reason="peft is a test dependency")


def trained_adapter(model_dir, out, config):
    host = load_whisper(str(model_dir), device="cpu")
    inject(host.model, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in host.model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for n, p in host.model.named_parameters():
            if n.endswith(".lam"):
                p[::3] = 0  # some ranks unused everywhere: pruned on save
    save_adapter(host.model, out)
    return host


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(5)
    return {
        "input_features": torch.randn(2, 80, 300, generator=g),
        "decoder_input_ids": torch.tensor([[257, 259, 261]] * 2),
    }


@pytest.mark.parametrize("config", [S2LoRAConfig(rank=6, targets="attn"), LoRAConfig(rank=4, targets="all_linear")])
def test_peft_export_loads_in_peft_with_equal_logits(tiny_whisper_dir, tmp_path, batch, config):
    ours = trained_adapter(tiny_whisper_dir, tmp_path / "a", config)
    assert main(["export", "--adapter", str(tmp_path / "a"), "-o", str(tmp_path / "peft")]) == 0
    base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    theirs = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    assert (logits(theirs, batch) - logits(ours.model, batch)).abs().max() <= 1e-4


def test_merged_hf_export_matches_the_unmerged_adapter(tiny_whisper_dir, tmp_path, batch, capsys):
    ours = trained_adapter(tiny_whisper_dir, tmp_path / "a", S2LoRAConfig(rank=6))
    args = ["export", "--adapter", str(tmp_path / "a"), "--merge", "-o", str(tmp_path / "hf")]
    assert main(args) == 0
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert (logits(merged, batch) - logits(ours.model, batch)).abs().max() <= 1e-4
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "hf"]  # no temp or .old directories left
