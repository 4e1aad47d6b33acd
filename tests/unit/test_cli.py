"""The CLI in-process: inspect output, one-line errors, and README <-> .ci/run agreement."""

import json
import re
from pathlib import Path

import torch

from speechpeft import LoRAConfig, S2LoRAConfig, after_optimizer_step, count_parameters, inject, save_adapter
from speechpeft.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_inspect_reports_kind_base_targets_counts_and_sparsity(tiny_whisper, tmp_path, capsys):
    model = tiny_whisper()
    model.config._name_or_path = "tiny/whisper"
    inject(model, S2LoRAConfig(rank=8, l1=0.5))
    counts = count_parameters(model)
    with torch.no_grad():
        for layer_lam in (p for n, p in model.named_parameters() if n.endswith(".lam")):
            layer_lam.copy_(torch.linspace(-0.5, 0.5, 8))
    after_optimizer_step(model, lr=0.5)  # threshold 0.25 zeroes the middle ranks in every matrix
    save_adapter(model, tmp_path / "s2")

    assert main(["adapters", "inspect", str(tmp_path / "s2")]) == 0
    out = capsys.readouterr().out
    assert "kind       s2lora (rank=8" in out and "base       tiny/whisper (fingerprint " in out
    assert "24 nn.Linear modules" in out and "model.encoder.layers.*.self_attn.q_proj  x2" in out
    assert f"trainable  {counts['adapter']:,} parameters = " in out
    assert "% of the base's" in out and "% of λ entries are zero" in out

    assert main(["adapters", "inspect", "--json", str(tmp_path / "s2")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["trainable"] == counts["adapter"]
    assert summary["parameters"]["base"] == counts["base"]
    kept = summary["details"]["basis_ranks"]["64x64"]
    assert kept < 8  # pruned ranks are gone from the file
    assert summary["parameters"]["stored"] == 2 * 64 * kept + 24 * kept


def test_inspect_lora(tiny_whisper, tmp_path, capsys):
    model = tiny_whisper()
    inject(model, LoRAConfig(rank=4))
    save_adapter(model, tmp_path / "l")
    assert main(["adapters", "inspect", str(tmp_path / "l")]) == 0
    out = capsys.readouterr().out
    assert "kind       lora (rank=4" in out and f"trainable  {12 * 4 * (64 + 64):,} parameters" in out


def test_unknown_kind_is_one_line(capsys):
    assert main(["adapters", "new", "--kind", "dora", "-o", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "speechpeft: error: unknown adapter kind 'dora'; known kinds: lora, master, s2lora, usat"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must open with the main-job command and the test command"
    test_cmd = blocks[1].strip()
    assert "pytest" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
