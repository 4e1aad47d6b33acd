"""`speechpeft evaluate`: pooled rates, bootstrap intervals, per-speaker rows, paired comparison."""

import json
from pathlib import Path

import pytest
from tiny import make_tiny_corpus

from speechpeft.cli import main
from speechpeft.data import Utterance
from speechpeft.errors import SpeechPeftError
from speechpeft.eval.bootstrap import paired_test, rate_ci
from speechpeft.eval.evaluate import auto_metric, auto_normaliser, compare, score


def utts(texts, speakers):
    return [
        Utterance(Path(f"/x/{i}.wav"), t, 1.0, "zh", s) for i, (t, s) in enumerate(zip(texts, speakers, strict=True))
    ]


REFS = ["我们早上在院子里踢足球", "妈妈做的饭真好吃", "小猫在沙发上睡觉", "今天是我的生日", "下雨了我们快回家吧"] * 8
SPEAKERS = [f"k{i % 4}" for i in range(len(REFS))]


def noisy(refs, every):
    return [r[:-1] + "错" if i % every == 0 else r for i, r in enumerate(refs)]


def test_score_pools_counts_and_brackets_the_estimate_with_both_intervals():
    r = score(utts(REFS, SPEAKERS), noisy(REFS, 3), "cer", "zh_chars")
    c = r["corpus"]
    assert c["substitutions"] == len(range(0, 40, 3)) and c["deletions"] == c["insertions"] == 0
    assert c["rate"] == pytest.approx(c["substitutions"] / c["reference_units"])
    for key in ("utterance", "speaker"):
        lo, hi = r["ci95"][key]
        assert lo <= c["rate"] <= hi and hi > lo
    assert r["ci95"]["speakers"] == 4
    assert [s["speaker"] for s in r["per_speaker"]] == ["k0", "k1", "k2", "k3"]
    assert sum(s["substitutions"] for s in r["per_speaker"]) == c["substitutions"]
    assert r["utterances"][0]["hypothesis"].endswith("错") and r["utterances"][0]["substitutions"] == 1


def test_interval_needs_two_rows():
    assert rate_ci([1], [10]) is None
    lo, hi = rate_ci([1, 1, 1, 1], [10, 10, 10, 10])
    assert lo == hi == pytest.approx(0.1)


def test_paired_test_separates_a_real_difference_from_none():
    units = [10] * 40
    same = paired_test([1] * 40, [1] * 40, units)
    assert same["delta"] == 0 and same["p_value"] == 1.0
    worse = paired_test([2 + (i % 3) for i in range(40)], [i % 2 for i in range(40)], units)
    assert worse["delta"] > 0 and worse["p_value"] < 0.01 and worse["ci_low"] > 0


def test_auto_metric_and_normaliser():
    assert (auto_metric("zh"), auto_normaliser("zh", "cer")) == ("cer", "zh_chars")
    assert (auto_metric("en"), auto_normaliser("en", "wer")) == ("wer", "whisper_en")
    assert (auto_metric(None), auto_normaliser(None, "wer")) == ("wer", "basic")


def test_compare_refuses_results_of_different_manifests():
    a = {"manifest": "a.jsonl", "metric": "cer", "normaliser": "zh_chars", "utterances": []}
    with pytest.raises(SpeechPeftError, match="manifest differs"):
        compare(a, {**a, "manifest": "b.jsonl"})


def test_evaluate_cli_on_a_tiny_model_writes_json_and_markdown_then_compares(tmp_path, tiny_whisper_dir, capsys):
    manifest = make_tiny_corpus(tmp_path / "c")["test"]
    out = tmp_path / "res"
    args = ["evaluate", "--manifest", str(manifest), "--model", str(tiny_whisper_dir), "--no-progress", "-o", str(out)]
    assert main(args) == 0
    result = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    for key in ("manifest", "model", "adapter", "metric", "normaliser", "decoding", "corpus", "ci95", "per_speaker"):
        assert key in result, key
    assert result["metric"] == "cer" and result["normaliser"].startswith("zh_chars")  # the manifest says zh
    assert len(result["utterances"]) == 8 and {s["speaker"] for s in result["per_speaker"]} == {"k0", "k1"}
    assert "| speaker |" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--compare", str(out.with_suffix(".json")), str(out.with_suffix(".json"))]) == 0
    assert "paired bootstrap p = 1.0000" in capsys.readouterr().out
