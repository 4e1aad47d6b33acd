"""bench/child_zh.md and bench/child_zh_ranks.png from the rows bench/child_zh.py measured."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import torch

from speechpeft.eval.bootstrap import paired_test
from speechpeft.fs import atomic_write


def _ci(r: dict[str, Any]) -> str:
    low, high = r["ci"] or (float("nan"), float("nan"))
    return f"{r['cer']:.4f} [{low:.4f}, {high:.4f}]"


def _voices(values: dict[str, float]) -> str:
    return " / ".join(f"{v:.3f}" for _, v in sorted(values.items()))


def render(results: list[tuple[Any, dict]], zero: dict, recipe, steps: int, note: str, ranks_png: str) -> str:
    by_key = {row.key: r for row, r in results}
    recipe_key = next((row.key for row, _ in results if row.is_recipe), None)
    recipe_row = by_key.get(recipe_key)
    lora = by_key.get("lora")
    t = recipe.train
    n_test = len(results[0][1]["edits"]) if results else 0
    lines = [
        "# child_zh benchmark: zero-shot whisper-base vs LoRA, S2-LoRA, AdaLoRA, VeRA, full fine-tune",
        "",
        "**The child_zh figures are on SYNTHETIC speech** (data/child_zh_demo: espeak-ng Mandarin raised to a",
        "child-like pitch; 300 train utterances of 5 voices, dev 120 of 3 voices, test 99 of 3 other voices).",
        "The English column is real speech: the five LibriVox clips of tests/data/librivox (one reader).",
        "",
        f"Made by `python bench/child_zh.py` (one run, {dt.date.today().isoformat()}): {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, fp32. Every row: {steps} updates x "
        f"{t.batch_size} utterances, warm-up {t.warmup_steps} then linear decay, seed {t.seed}, the same batches, "
        f"best dev checkpoint (dev every {t.eval_every} updates), {recipe.model.window_seconds:g} s encoder window. "
        "Learning rates: 2e-3 unless the row's recipe says otherwise (chosen on dev, bench/s2lora_study.md).",
        "Decoding: greedy, language forced (zh for the corpus, en for LibriVox), at most 16 + 12 tokens per second.",
        f"Test CER: `zh_chars` normaliser, pooled over the {n_test} test utterances, 95 % percentile bootstrap",
        "interval over utterances (9,999 resamples); Δ: paired bootstrap against the recipe's S2-LoRA (negative =",
        "better than it).",
        "English WER: Whisper's English normaliser, pooled over the clips, adapter attached.",
        "",
        "| model | trainable params | test CER [95 % CI] | t1 / t2 / t3 | Δ vs recipe (p) | best dev CER | "
        "d1 / d2 / d3 | λ zero | English WER | s / update |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, default in (("window30", 30.0), ("short", recipe.model.window_seconds)):
        z = zero[key]
        label = f"zero-shot, {z.get('window', default):g} s window"
        lines.append(f"| {label} | 0 | {_ci(z)} | {_voices(z['voices'])} | | | | | {z['english_wer']:.4f} | |")
    for row, r in results:
        delta = ""
        if recipe_row is not None and row.key != recipe_key:
            p = paired_test(r["edits"], recipe_row["edits"], r["units"])
            delta = f"{p['delta']:+.4f} (p={p['p_value']:.3f})"
        share = f" ({r['trainable'] / lora['trainable']:.3f}x LoRA)" if lora else ""
        sparsity = "-" if r["sparsity"] is None else f"{100 * r['sparsity']:.1f} %"
        label = f"**{row.label} (the recipe)**" if row.is_recipe else row.label
        lines.append(
            f"| {label} | {r['trainable']:,}{share} | {_ci(r)} | {_voices(r['voices'])} | {delta} | "
            f"{r['dev']:.4f} | {_voices(r['dev_voices'])} | {sparsity} | {r['english_wer']:.4f} | "
            f"{r['step_seconds']:.2f} |"
        )
        f = r.get("final")
        if f:
            fdelta = ""
            if recipe_row is not None:
                p = paired_test(f["edits"], recipe_row["edits"], f["units"])
                fdelta = f"{p['delta']:+.4f} (p={p['p_value']:.3f})"
            lines.append(
                f"| ↳ the same, state after update {f['step']} (not best on dev) | | {_ci(f)} | "
                f"{_voices(f['voices'])} | {fdelta} | {f['dev']:.4f} | {_voices(f['dev_voices'])} | "
                f"{100 * f['sparsity']:.1f} % | {f['english_wer']:.4f} | |"
            )
    lines += ["", "Why each row: " + "; ".join(f"**{row.label}**: {row.why}" for row, _ in results if row.why) + "."]
    lines += _tradeoff(results)
    if recipe_row and lora:
        lines += ["", "## Issue 9's acceptance, checked on this run", ""]
        lines += _checks({**by_key, "s2lora": recipe_row}, zero)
    lines += [
        "",
        "## Rank allocation",
        "",
        f"![ranks]({ranks_png})",
        "",
        "The ranks each matrix of the recipe's S2-LoRA uses (non-zero λ entries) at its best dev checkpoint and",
        "after its last update, and AdaLoRA's final allocation (non-zero singular values, lora_E) on the same",
        "matrices, when its row is in the run.",
        "",
        "## The recipe",
        "",
    ]
    if recipe_row:
        lines += ["```yaml", recipe_row["recipe"].strip(), "```"]
    else:
        lines.append("No row of this run trains the recipe's adapter: no recipe row, no acceptance check.")
    lines += _study()
    if note:
        lines += ["", f"Run notes: {note}"]
    return "\n".join(lines) + "\n"


def _study() -> list[str]:
    """The design study's tables (bench/s2lora_study.md, dev only), every variant tried, losers kept."""
    path = Path(__file__).resolve().parent / "s2lora_study.md"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    start = text.find("## Round 1")
    if start < 0:
        return []
    body = text[start:].replace("## Round", "### Round").strip().splitlines()
    return ["", "## S2-LoRA design study (dev only, from bench/s2lora_study.md)", "",
            "Screens of 150 updates, scored on dev only; the recipe took the best by dev CER within 1/8 of LoRA's",
            "parameters. Every variant tried is listed, the losing ones too.", "", *body]  # fmt: skip


def _tradeoff(results: list[tuple[Any, dict]]) -> list[str]:
    """Dev CER against λ sparsity along each S2-LoRA run: the L1 schedule trades one for the other."""
    out = []
    for row, r in results:
        trajectory = (r.get("final") or {}).get("trajectory")
        if not trajectory:
            continue
        points = ", ".join(f"update {s}: {c:.4f} at {100 * (z or 0):.0f} % zero" for s, c, z in trajectory[1:])
        out.append(f"- **{row.label}**, dev CER along the run: {points}.")
    if out:
        out = ["", "## CER against sparsity (dev, along each S2-LoRA run)", "",
               "The L1 threshold starts after a quarter of the updates and reaches full strength at half; "
               "the best-on-dev state (what `finetune` keeps) can come before the coefficients are sparse.", "",
               *out]  # fmt: skip
    return out


def _checks(by_key: dict[str, dict], zero: dict) -> list[str]:
    s2, lora = by_key["s2lora"], by_key["lora"]
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"- {'**met**' if ok else '**missed**'}: {text}")

    check(s2["cer"] <= lora["cer"], f"S2-LoRA test CER {s2['cer']:.4f} <= LoRA r=8's {lora['cer']:.4f}")
    if "adalora" in by_key:
        ada = by_key["adalora"]["cer"]
        check(s2["cer"] <= 1.1 * ada, f"within 10 % relative of AdaLoRA's {ada:.4f} (bound {1.1 * ada:.4f})")
    if "vera" in by_key:
        vera = by_key["vera"]["cer"]
        check(s2["cer"] <= vera, f"no worse than VeRA's {vera:.4f}")
    check(
        s2["trainable"] * 8 <= lora["trainable"],
        f"{s2['trainable']:,} trainable parameters <= 1/8 of LoRA's {lora['trainable']:,} ({lora['trainable'] // 8:,})",
    )
    bound = zero["window30"]["english_wer"] + 0.01
    check(s2["english_wer"] <= bound, f"English WER {s2['english_wer']:.4f} <= zero-shot + 0.01 ({bound:.4f})")
    if s2["sparsity"] is not None:
        check(s2["sparsity"] >= 0.5, f"{100 * s2['sparsity']:.1f} % of λ entries exactly zero (>= 50 %) "
              "in the best-on-dev adapter `finetune` keeps")  # fmt: skip
    final = s2.get("final")
    if final:
        check(final["sparsity"] >= 0.5 and final["cer"] <= lora["cer"],
              f"after the last update (update {final['step']}): {100 * final['sparsity']:.1f} % zero, test CER "
              f"{final['cer']:.4f} (<= LoRA's {lora['cer']:.4f}), English WER {final['english_wer']:.4f}")  # fmt: skip
    return out


def write_ranks(results: list[tuple[Any, dict]], path: Path) -> None:
    """The recipe's S2-LoRA ranks beside AdaLoRA's final allocation, module roles x layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from speechpeft.eval.report import rank_grid

    panels = []
    for row, r in results:
        if r.get("rank_table") and (row.is_recipe or row.key == "adalora"):
            panels.append((f"{row.label}\nbest on dev (update {r.get('best_step', '?')})", r["rank_table"]))
        final = r.get("final") or {}
        if row.is_recipe and final.get("rank_table"):
            panels.append((f"{row.label}\nafter the last update ({final['step']})", final["rank_table"]))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    for ax, (label, table) in zip(axes[0], panels, strict=True):
        names, layers, values = rank_grid(table)
        grid = np.array(values, dtype=float)
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("layer")
        for i, j in np.ndindex(grid.shape):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{int(grid[i, j])}", ha="center", va="center", fontsize=7, color="white")
        fig.colorbar(image, ax=ax, label="ranks in use")
        ax.set_title(label, fontsize=10)
    fig.suptitle("Ranks in use per matrix, SYNTHETIC child_zh corpus (bench/child_zh.py)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
