"""bench/child_zh.py (hours on real whisper-base) runs end to end on a tiny Whisper: every row
trains through the same loop, is decoded on test and English, and lands in the table."""

import sys

import pytest
from conftest import ROOT
from tiny import make_tiny_corpus, write_tiny_recipe


@pytest.mark.parametrize("rows", ["lora,s2lora,adalora,vera,full"])
def test_child_zh_bench_runs_every_row_on_a_tiny_model(tmp_path, tiny_whisper_dir, rows):
    sys.path.insert(0, str(ROOT / "bench"))
    import child_zh as bench

    corpus = make_tiny_corpus(tmp_path / "corpus")
    # the tiny recipe's adapter is the first S2-LoRA row's, so that row must be found as the recipe's
    s2 = next(r for r in bench.rows(3) if r.key.startswith("s2lora"))
    adapter = dict(o.removeprefix("adapter.").split("=", 1) for o in s2.overrides if o.startswith("adapter."))
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", tiny_whisper_dir, corpus, tmp_path / "runs", adapter=adapter,
                               lr=3e-2)  # fmt: skip
    report = tmp_path / "child_zh.md"
    bench.main(["--recipe", str(recipe), "--steps", "3", "--out", str(tmp_path / "runs"), "--report", str(report)])
    text = report.read_text(encoding="utf-8")
    for label in ("zero-shot, 3 s window", "LoRA r=8, attn_qv", f"**{s2.label} (the recipe)**", "AdaLoRA", "VeRA",
                  "full fine-tune"):  # fmt: skip
        assert f"| {label}" in text, label
    assert text.count("(the recipe)**") == 1 and "adapter:\n  kind: s2lora" in text  # its recipe is printed
    assert "↳ the same, state after update 3 (not best on dev)" in text  # S2-LoRA's final state beside its best
    assert "## CER against sparsity" in text
    assert "Issue 9's acceptance, checked on this run" in text and ("**met**" in text or "**missed**" in text)
    assert (tmp_path / "child_zh_ranks.png").read_bytes()[:4] == b"\x89PNG"
    # a second, resumed run reuses every finished row instead of training again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("bench-*/bench-result.json")}
    bench.main(["--recipe", str(recipe), "--steps", "3", "--out", str(tmp_path / "runs"), "--report", str(report),
                "--resume"])  # fmt: skip
    assert before and before == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("bench-*/bench-result.json")}
