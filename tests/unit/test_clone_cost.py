"""bench/clone_cost.py runs end to end on a tiny random VITS, and the three clone variants work."""

import importlib.util
import json
import sys

import pytest
from conftest import ROOT
from tiny import make_clone_references, make_tiny_vits_dir

from speechpeft.cli import main as cli


@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None, reason="needs resemblyzer's weights")
def test_cost_script_writes_a_row_per_variant_and_budget_and_a_plot(tmp_path, tiny_whisper_dir):
    sys.path.insert(0, str(ROOT / "bench"))
    import clone_cost

    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=3)
    train = make_clone_references(tmp_path / "train", n=8)
    held = make_clone_references(tmp_path / "held", n=2)
    report = tmp_path / "cost.md"
    clone_cost.main([
        "--base", str(base), "--manifest", str(train), "--held-out", str(held), "--seconds", "3", "6",
        "--steps", "3", "--whisper", str(tiny_whisper_dir), "--report", str(report), "--label", "SYNTHETIC, tiny",
    ])  # fmt: skip
    rows = [line for line in report.read_text().splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 6 and {r.split(" | ")[0][2:] for r in rows} == {"embedding", "usat", "full"}
    assert "SYNTHETIC, tiny" in report.read_text() and report.with_suffix(".png").stat().st_size > 0
    bytes_ = {r.split(" | ")[0][2:]: int(r.split(" | ")[5].replace(",", "")) for r in rows[:3]}
    assert bytes_["embedding"] < bytes_["usat"] < bytes_["full"]  # what each variant stores


def test_full_variant_saves_modules_and_synthesize_loads_them(tmp_path):
    base = make_tiny_vits_dir(tmp_path / "base", num_speakers=3)
    refs = make_clone_references(tmp_path / "r", n=6)
    args = ["clone", "--base", str(base), "--reference", str(refs.parent), "--manifest", str(refs), "--name", "k"]
    assert cli([*args, "-o", str(tmp_path / "v"), "--steps", "3", "--variant", "full", "--no-progress"]) == 0
    assert (tmp_path / "v" / "finetuned.safetensors").is_file()
    assert json.loads((tmp_path / "v" / "clone.json").read_text())["variant"] == "full"
    wav = tmp_path / "x.wav"
    assert cli(["synthesize", "--base", str(base), "--speaker", str(tmp_path / "v"), "hi", "-o", str(wav)]) == 0
    assert wav.stat().st_size > 44
