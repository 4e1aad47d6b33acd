"""`speechpeft evaluate`: pooled rates, bootstrap intervals, per-speaker rows, paired comparison."""

import json
from pathlib import Path

import numpy as np
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


def brute_force(edits, units, statistic, seed=1, n=20_000):
    """An independent percentile bootstrap: resample row indices with numpy, recompute, take quantiles."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(units), size=(n, len(units)))  # (resamples, rows)
    values = statistic(*(np.asarray(e, dtype=float)[rows] for e in edits), np.asarray(units, dtype=float)[rows])
    return values


def pooled_rate(e, n):
    return e.sum(axis=1) / n.sum(axis=1)


def test_rate_interval_agrees_with_a_brute_force_bootstrap():
    rng = np.random.default_rng(7)
    units = rng.integers(5, 30, size=60)
    edits = rng.binomial(units, 0.12)  # a skewed, realistic spread of per-utterance errors
    low, high = rate_ci(edits, units)
    values = brute_force([edits], units, pooled_rate)
    ref_low, ref_high = np.quantile(values, [0.025, 0.975])
    assert abs(low - ref_low) < 0.004 and abs(high - ref_high) < 0.004, (low, high, ref_low, ref_high)
    assert high - low > 0.03  # not degenerate: a wrong pairing of edits and units would shrink or shift it


def test_paired_test_agrees_with_a_brute_force_paired_bootstrap_on_a_small_effect():
    rng = np.random.default_rng(11)
    units = rng.integers(5, 30, size=80)
    a = rng.binomial(units, 0.10)
    b = np.maximum(0, a + rng.choice([-1, 0, 0, 0, 1, 1], size=80))  # B slightly worse, noisily
    result = paired_test(a, b, units)
    deltas = brute_force([a, b], units, lambda ea, eb, n: pooled_rate(ea, n) - pooled_rate(eb, n))
    p_ref = min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0)))
    low, high = np.quantile(deltas, [0.025, 0.975])
    assert result["delta"] == pytest.approx((a.sum() - b.sum()) / units.sum())
    assert abs(result["p_value"] - p_ref) < 0.2 * p_ref + 0.005 and 0.005 < p_ref < 0.5, (result["p_value"], p_ref)
    assert abs(result["ci_low"] - low) < 0.003 and abs(result["ci_high"] - high) < 0.003


def test_paired_test_on_no_systematic_difference_is_not_significant():
    rng = np.random.default_rng(5)
    units = rng.integers(5, 30, size=80)
    a = rng.binomial(units, 0.1)
    b = rng.binomial(units, 0.1)  # the same system's error rate, other errors
    result = paired_test(a, b, units)
    deltas = brute_force([a, b], units, lambda ea, eb, n: pooled_rate(ea, n) - pooled_rate(eb, n))
    assert abs(result["p_value"] - min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0)))) < 0.02
    assert result["ci_low"] < 0 < result["ci_high"]


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
    other = out.with_name("other.json")  # a second system: the first with some hypotheses damaged
    record = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    for i, row in enumerate(record["utterances"]):
        if i % 2 == 0:
            row["substitutions"] += 1
    other.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(out.with_suffix(".json")), str(other)]) == 0
    printed = capsys.readouterr().out
    assert "paired bootstrap p =" in printed and "paired bootstrap p = 1.0000" not in printed
