"""bench/cpt.py (about an hour on 2 cores) end to end on a sliver of its SYNTHETIC corpus, with a
tiny stand-in and a few updates per stage: every stage goes through `pretrain` / `finetune`, (a)
fine-tunes the stand-in and (b) the CPT output, both are decoded on test, and the report carries
the CER table with intervals, the paired test, the pretraining table and the curves."""

import os
import re
import shutil
import sys

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

TINY_STAND_IN = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_codevectors_per_group=8, codevector_dim=32,
    proj_codevector_dim=32,
)  # fmt: skip


def need_speech_tools():
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"the corpus needs {' and '.join(missing)}: apt-get install -y espeak-ng sox (.ci/run installs them)"
    if os.environ.get("SPEECHPEFT_REQUIRE_TOOLS"):  # CI: a missing tool fails instead of skipping
        pytest.fail(message)
    pytest.skip(message)


def test_cpt_bench_runs_every_stage_and_reports_both_rows(tmp_path, monkeypatch):
    need_speech_tools()
    sys.path.insert(0, str(ROOT / "bench"))
    import cpt as bench

    monkeypatch.setattr(bench, "STAND_IN", {**bench.STAND_IN, **TINY_STAND_IN})
    runs, report = tmp_path / "runs", tmp_path / "cpt.md"
    args = ["--scale", "0.03", "--steps-scale", "0.01", "--out", str(runs), "--corpus", str(tmp_path / "corpus"),
            "--report", str(report)]  # fmt: skip
    bench.main(args)

    text = report.read_text(encoding="utf-8")
    assert "SYNTHETIC" in text and "Wall-clock:" in text
    rows = re.findall(r"^\| \((a|b)\) .*? (\d[\d,]*) \(CTC\) \| .*? \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \|", text, re.M)
    assert [r[0] for r in rows] == ["a", "b"], text
    for _, _, cer, low, high in rows:
        assert float(low) <= float(cer) <= float(high)
    assert rows[0][1] == rows[1][1]  # the same CTC recipe: the same trainable parameters
    assert re.search(r"\(b\) - \(a\): [+-][\d.]+ CER, 95 % CI \[.*\], p = [\d.]+", text)
    assert "## The pretraining stages" in text and (tmp_path / "cpt_curves.png").read_bytes()[:4] == b"\x89PNG"

    # (a) fine-tunes the stand-in pretrained on the source languages, (b) the output of CPT on the target
    def base(run):
        return OmegaConf.load(runs / run / "recipe.yaml").model.name

    assert base("ctc-a") == str(runs / "cpt-source" / "model")
    assert base("ctc-b") == str(runs / "cpt-target" / "model") and base("cpt-target") == base("ctc-a")

    # a resumed run reuses every finished stage instead of training again
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/report.md")}
    bench.main([*args, "--resume"])
    assert len(finished) == 4 and finished == {p: p.stat().st_mtime_ns for p in runs.glob("*/report.md")}
