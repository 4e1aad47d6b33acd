"""bench/clone_cost.py runs end to end on a tiny random VITS, and the three clone variants work."""

import importlib.util
import json
import shutil
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
    argv = [
        "--base", str(base), "--manifest", str(train), "--held-out", str(held), "--seconds", "3", "6",
        "--steps", "3", "--whisper", str(tiny_whisper_dir), "--report", str(report), "--label", "SYNTHETIC, tiny",
        "--variants", "unadapted", "embedding", "usat", "full",
    ]  # fmt: skip
    clone_cost.main(argv)
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| target")]
    variants = [r.split(" | ")[1] for r in rows]
    assert variants[:2] == ["*real vs real* (ceiling)", "*resynthesis* (base decoder on the target's own z)"]
    assert 0 <= float(rows[1].split(" | ")[4]) and rows[0].split(" | ")[4] == "–"  # resynthesis has a WER
    assert variants[2:] == ["unadapted"] + ["embedding"] * 2 + ["usat"] * 2 + ["full"] * 2
    assert "SYNTHETIC, tiny" in text and "resemblyzer GE2E" in text and report.with_suffix(".png").stat().st_size > 0
    bytes_ = {r.split(" | ")[1]: int(r.split(" | ")[6].replace(",", "")) for r in rows[3::2]}  # the 3 s budgets
    assert bytes_["embedding"] < bytes_["usat"] < bytes_["full"]  # what each variant stores
    cached = report.with_suffix(".jsonl").read_text().splitlines()
    clone_cost.main(argv)  # a rerun resumes from the cache: no row is computed twice
    assert report.with_suffix(".jsonl").read_text().splitlines() == cached and report.read_text() == text
    clone_cost.main([*argv, "--render-only"])  # the same table from the cache alone
    assert [r for r in report.read_text().splitlines() if r.startswith("| target")] == rows
    assert "Rendered with `--render-only`" in report.read_text()
    other = shutil.copytree(base, tmp_path / "other")  # another base: none of the cached rows is its
    clone_cost.main([*argv[:1], str(other), *argv[2:], "--render-only"])
    others = [line for line in report.read_text().splitlines() if line.startswith("| target")]
    assert len(others) == 7 and all(" | not run | " in r for r in others)  # unadapted, then 3 variants x 2 budgets


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
