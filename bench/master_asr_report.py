"""bench/master_asr.md from the figures bench/master_asr.py measured (nothing here is typed in)."""

from __future__ import annotations

import statistics
from typing import Any

STAGE1_LANGS = ("en", "de", "fr", "es", "it")
NEW = "pl"


def _cell(result: dict[str, Any] | None, lang: str) -> str:
    if not result or lang not in result:
        return "-"
    return f"{result[lang]['cer']:.3f} / {result[lang]['wer']:.3f}"


def _mean(results: dict[str, Any], metric: str, langs=STAGE1_LANGS) -> float:
    return statistics.mean(results[lang][metric] for lang in langs)


def _verdict(ours: float, theirs: float) -> str:
    return "beats" if ours < theirs else "loses to" if ours > theirs else "ties with"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n:,} B"


def render(zero, init, stage1, lora, stage2, lora_new, timing, f, zero8=None) -> str:
    lora_by_lang = {lang: lora[lang][lang] for lang in STAGE1_LANGS}  # each LoRA's own language
    n_test = sum(stage1[lang]["n"] for lang in STAGE1_LANGS)
    runs = f.get("invocations", 1)
    resumed = "" if runs == 1 else f" in {runs} invocations, resumed with --resume"
    lines = [
        "# Master-ASR on whisper-base: one pool for five languages, a sixth as one table row",
        "",
        "**All speech here is SYNTHETIC** (data/multilingual_demo: espeak-ng voices with pitch shifts, reverb and",
        "noise; the transcripts are seeded strings of common words). Train and test voices differ in every language.",
        "",
        f"Made by `python bench/master_asr.py` (one run{resumed}, {f['date']}, {f['wall_minutes']:.0f} min in all):",
        f"{f['machine']}, fp32. Stage 1: {f['stage1_steps']} updates x 8 utterances over five languages",
        "(recipes/master_asr_stage1.yaml: K = 4 specialists, t = 0.3, q/k/v/out of every attention block, T at 10x",
        f"the lr and updated every 5th update, W frozen). LoRA r=8 on q, v: one per language, {f['lora_steps']}",
        "updates each on that language's share of the same training data (the updates stage 1 gave it). Stage 2 and",
        f"its LoRA: {f['stage2_steps']} updates on about 10 minutes of Polish.",
        "Every run keeps its best-on-dev state (dev: one more voice per language). Decoding: greedy, each utterance in",
        "its own language, 8 s encoder window for adapted models, 30 s for zero-shot (Whisper as normally used).",
        "CER / WER: Whisper's basic normaliser, pooled per language "
        f"({n_test // len(STAGE1_LANGS)} test utterances each).",
        "",
        "## Stage-1 languages: test CER / WER",
        "",
        "| model | trainable | " + " | ".join(STAGE1_LANGS) + " | mean CER | mean WER |",
        "|---|---|" + "---|" * (len(STAGE1_LANGS) + 2),
    ]
    rows = [
        ("zero-shot whisper-base, 30 s window", "0", zero),
        *([("zero-shot whisper-base, 8 s window (the adapters')", "0", zero8)] if zero8 else []),
        ("masks at their start, t = 0.1 (scores = magnitudes, no training)", "0", init[0.1]),
        ("masks at their start, t = 0.3", "0", init[0.3]),
        ("**Master-ASR stage 1** (one pool)", f"{f['stage1_trainable']:,}", stage1),
        ("LoRA r=8 q,v, one per language", f"{f['lora_trainable']:,} each", lora_by_lang),
    ]
    for label, trainable, res in rows:
        cells = " | ".join(_cell(res, lang) for lang in STAGE1_LANGS)
        lines.append(f"| {label} | {trainable} | {cells} | {_mean(res, 'cer'):.3f} | {_mean(res, 'wer'):.3f} |")
    lora_bytes = statistics.mean(lora[lang]["bytes"] for lang in STAGE1_LANGS)
    s1_verdict = _verdict(_mean(stage1, "cer"), _mean(lora_by_lang, "cer"))
    lines += [
        "",
        f"Stored: the stage-1 pool is **{_mb(f['stage1_bytes'])}** for all five languages "
        f"({_mb(f['stage1_bytes'] / 5)} per language); a LoRA is {_mb(lora_bytes)} per language.",
        f"Mean test CER: stage 1 {_mean(stage1, 'cer'):.3f}, per-language LoRA {_mean(lora_by_lang, 'cer'):.3f}: "
        f"**the shared pool {s1_verdict} one LoRA per language** here, at "
        f"{f['stage1_bytes'] / lora_bytes:.0f}x the storage of one LoRA.",
        "",
        f"## The sixth language ({NEW}, about 10 minutes): one T row against a LoRA on the same data",
        "",
        "| model | trainable | stored | CER | WER |",
        "|---|---|---|---|---|",
        f"| zero-shot whisper-base, 30 s window | 0 | - | {zero[NEW]['cer']:.3f} | {zero[NEW]['wer']:.3f} |",
        *(
            [f"| zero-shot whisper-base, 8 s window | 0 | - | {zero8[NEW]['cer']:.3f} | {zero8[NEW]['wer']:.3f} |"]
            if zero8
            else []
        ),
        f"| **Master-ASR stage 2: one new row per layer** | {f['stage2_trainable']:,} | "
        f"{_mb(f['stage2_bytes'])} ({f['stage2_floats']} floats + the file's record) + the stage-1 pool | "
        f"{stage2[NEW]['cer']:.3f} | {stage2[NEW]['wer']:.3f} |",
        f"| LoRA r=8 q,v on the same 10 minutes | {f['lora_new_trainable']:,} | {_mb(f['lora_new_bytes'])} | "
        f"{lora_new[NEW]['cer']:.3f} | {lora_new[NEW]['wer']:.3f} |",
        "",
    ]
    row_verdict = _verdict(stage2[NEW]["cer"], lora_new[NEW]["cer"])
    ratio = f["lora_new_bytes"] / f["stage2_bytes"]
    lines += [
        f"**The T row {row_verdict} the LoRA** on the new language: CER "
        f"{stage2[NEW]['cer']:.3f} against {lora_new[NEW]['cer']:.3f}, with {ratio:.0f}x less to store for the new "
        "language (the row file; it needs the stage-1 pool, which the other languages already pay for).",
        "",
        "## Decoding cost",
        "",
        f"One teacher-forced forward pass (encoder + decoder over the transcripts) of {timing['utterances']} "
        f"test utterances ({timing['language']}), alternated three times in one run (medians): bare model "
        f"{timing['bare']:.2f} s, with the stage-1 masks assembled {timing['master']:.2f} s "
        f"(**{timing['master'] / timing['bare']:.2f}x**): an assembled matrix is a dense weight like the base's. "
        f"The first call of a language also assembles the masks: {timing['first_call_with_assembly']:.2f} s. "
        "(Forward passes, not generation: unadapted whisper-base runs on where the adapted model stops.)",
        "",
        "## Wall clock",
        "",
        "| stage | minutes |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in f["stage_minutes"].items()],
        *[f"| training of {k} (finetune) | {v:.1f} |" for k, v in f["train_minutes"].items()],
        f"| everything | {f['wall_minutes']:.1f} |",
        "",
    ]
    if f.get("scale", 1.0) != 1.0:
        lines.insert(2, f"**SMOKE RUN at corpus scale {f['scale']:g}: not a result.**\n")
    return "\n".join(lines)
