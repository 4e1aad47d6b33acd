"""The child_zh benchmark: zero-shot whisper-base vs LoRA, the recipe's S2-LoRA, AdaLoRA, VeRA and a
full fine-tune, on the SYNTHETIC child_zh demo corpus, all in one run. Writes bench/child_zh.md and
bench/child_zh_ranks.png.

    python bench/child_zh.py                  # about four hours on 2 CPU cores
    python bench/child_zh.py --steps 4 --only lora,s2lora --report /tmp/smoke.md   # a smoke run
    python bench/child_zh.py --resume         # continue after an interruption (finished rows are reused)

Every row is trained by the same `speechpeft.train.finetune` the CLI uses, from the child_zh recipe:
same updates, batches, schedule, seed and best-on-dev selection; PEFT's AdaLoRA and VeRA and the
full fine-tune are handed to that loop as tuning strategies (bench/baselines.py). Learning rates
differ only where they were chosen on dev (bench/s2lora_study.md). Then this script decodes, with
each row's best-on-dev state attached and greedy decoding:
- the test split (voices unseen in training): pooled CER with a 95 % bootstrap interval, per voice,
  and a paired bootstrap test against the recipe's S2-LoRA;
- the five real LibriVox clips in tests/data/librivox, in English: forgetting, out of domain.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from baselines import AdaLoRATuning, FullFineTune, VeRATuning  # noqa: E402

from speechpeft.data import read_manifest  # noqa: E402
from speechpeft.eval.asr import transcribe_utterances  # noqa: E402
from speechpeft.eval.bootstrap import rate_ci  # noqa: E402
from speechpeft.eval.metrics import pooled, utterance_counts  # noqa: E402
from speechpeft.eval.normalise import make_normaliser  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.train import finetune, load_recipe  # noqa: E402
from speechpeft.train.checkpoint import CHECKPOINT  # noqa: E402
from speechpeft.train.tuning import AdapterTuning  # noqa: E402

ATTN = r"model\.(encoder|decoder)\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)"
LIBRIVOX = ROOT / "tests" / "data" / "librivox"
RESULT = "bench-result.json"
FINAL = "bench-final.json"  # S2-LoRA rows: the state after the last update, beside the best-on-dev one
# The design study's finalist: LoRA-like init (B = 0, λ = 1), λ at 10x the learning rate, and an
# L1 threshold that waits a quarter of training, then ramps up over the next quarter.
S2LORA = [
    "adapter.kind=s2lora",
    "adapter.rank=32",
    "adapter.alpha=32",
    "adapter.targets=attn",
    "adapter.share=shape",
    "adapter.init=b0",
    "adapter.lam_lr=10",
    "adapter.l1_start=0.25",
    "adapter.l1_ramp=0.25",
    "train.lr=2e-3",
]


@dataclass
class Row:
    key: str
    label: str
    overrides: list[str] = field(default_factory=list)
    tuning: Any = None  # a factory (steps -> Tuning); None: the recipe's adapter
    why: str = ""
    is_recipe: bool = False  # its adapter is recipes/child_zh.yaml's (decided when the table is made)


# Round 4's finalist (bench/s2lora_study.md): the same, on every linear of the blocks at rank 5
S2LORA_ALL = [o for o in S2LORA if not o.startswith(("adapter.rank=", "adapter.alpha=", "adapter.targets="))] + [
    "adapter.rank=5",
    "adapter.alpha=5",
    "adapter.targets=all_linear",
]


def rows(steps: int) -> list[Row]:
    return [
        Row("lora", "LoRA r=8, attn_qv", ["adapter.kind=lora", "adapter.rank=8", "adapter.alpha=16",
                                         "adapter.targets=attn_qv", "train.lr=2e-3"], why="the usual Whisper baseline"),
        Row("s2lora-alllin5", "S2-LoRA r=5, all_linear, L1 0.9, kept only at >= 50 % λ zero",
            [*S2LORA_ALL, "adapter.l1=0.9", "adapter.keep_min_zero=0.5"],
            why="the design study's round-4 finalist: attention and fc1/fc2, one basis per shape at rank 5 "
                "(31,200 parameters), chosen on dev"),
        Row("s2lora-l1-0.6", "S2-LoRA r=32, attn, L1 0.6", [*S2LORA, "adapter.l1=0.6"],
            why="the design study's finalist (bench/s2lora_study.md) with a weaker L1 after warm-up: denser"),
        Row("s2lora-l1-0.9", "S2-LoRA r=32, attn, L1 0.9", [*S2LORA, "adapter.l1=0.9"],
            why="the design study's finalist (bench/s2lora_study.md: B = 0 and λ = 1 at the start, λ at 10x the "
                "learning rate) with L1 0.9 from a quarter of the updates, at full strength from half"),
        Row("s2lora-keep0.5", "S2-LoRA r=32, attn, L1 0.9, kept only at >= 50 % λ zero",
            [*S2LORA, "adapter.l1=0.9", "adapter.keep_min_zero=0.5"],
            why="the same run, with the best-on-dev state chosen only among states with at least half of λ exactly "
                "zero (adapter.keep_min_zero=0.5): the adapter a user keeps is the sparse one the method promises"),
        Row("adalora", "AdaLoRA r 12->4, attn (PEFT)", ["train.lr=2e-3"],
            tuning=lambda n: AdaLoRATuning(ATTN, n, init_r=12, target_r=4),
            why="rank budget 4 x 72 matrices = LoRA r=8's 8 x 36, reallocated by importance"),
        Row("vera", "VeRA r=256, attn (PEFT)", ["train.lr=1e-2"], tuning=lambda n: VeRATuning(ATTN, rank=256),
            why="frozen shared random basis, trained vectors; lr 1e-2, as VeRA's authors train their vectors at "
                "several times LoRA's rate (not tuned here)"),
        Row("full", "full fine-tune", ["train.lr=1e-5"], tuning=lambda n: FullFineTune(),
            why="every weight; lr 1e-5, the usual rate for fine-tuning Whisper (not tuned here)"),
    ]  # fmt: skip


def train_row(row: Row, recipe_name: str, steps: int, out: Path, resume: bool) -> Path:
    folder = out / f"bench-{row.key}"
    recipe = load_recipe(recipe_name, [f"name={folder.name}", f"output_dir={out}", f"train.max_steps={steps}",
                                      *row.overrides])  # fmt: skip
    resume = resume and (folder / CHECKPOINT).is_file()
    print(f"== {row.label}: {' '.join(row.overrides) or '(recipe)'}" + (" (resumed)" if resume else ""), flush=True)
    tuning = row.tuning(steps) if row.tuning else None
    finetune(recipe, resume=resume, overwrite=not resume, progress=True, tuning=tuning, test=False)
    return folder


def english_clips() -> tuple[list[Any], list[str]]:
    from speechpeft.data import load_audio

    refs = json.loads((LIBRIVOX / "transcripts.json").read_text(encoding="utf-8"))
    return [load_audio(LIBRIVOX / name, 16_000) for name in sorted(refs)], [refs[n] for n in sorted(refs)]


def decode(host, recipe, test, clips) -> dict[str, Any]:
    """Test CER (pooled, CI, per voice, per-utterance counts) and English WER of the clips."""
    ev = recipe.eval
    hyps = transcribe_utterances(host, test, ev.language, ev.beam, ev.batch_size, ev.max_tokens_per_second,
                                 "test", True)  # fmt: skip
    counts = utterance_counts([u.text for u in test], hyps, "cer", make_normaliser(ev.normaliser))
    total = pooled(counts, "cer")
    voices = {}
    for voice in sorted({u.speaker for u in test}):
        voices[voice] = pooled([c for c, u in zip(counts, test, strict=True) if u.speaker == voice], "cer").rate
    window = int(host.window_seconds * 16_000)  # the clips fit whisper-base's 8 s; a tiny test model's window cuts them
    english = host.transcribe([a[:window] for a in clips[0]], language="en", beam=1, batch_size=len(clips[0]))
    spelling = getattr(host.processor.tokenizer, "english_spelling_normalizer", None)
    wer = pooled(utterance_counts(clips[1], english, "wer", make_normaliser("whisper_en", spelling)), "wer")
    return {
        "window": host.window_seconds,
        "cer": total.rate,
        "ci": rate_ci([c.edits for c in counts], [c.reference_units for c in counts]),
        "voices": voices,
        "edits": [c.edits for c in counts],
        "units": [c.reference_units for c in counts],
        "english_wer": wer.rate,
        "english": english,
    }


def evaluate_row(row: Row, folder: Path, steps: int, recipe_name: str, test, clips) -> dict[str, Any]:
    cached = folder / RESULT
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    recipe = load_recipe(recipe_name, row.overrides)
    host = load_whisper(recipe.model.name, device=None if recipe.model.device == "auto" else recipe.model.device)
    host.set_window(recipe.model.window_seconds)
    row_recipe = recipe
    tuning = row.tuning(steps) if row.tuning else AdapterTuning(row_recipe.adapter.config())
    tuning.attach(host.model)
    tuning.load(host.model, folder / "adapter")
    result = decode(host, recipe, test, clips)
    summary = tuning.summary(host.model)
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in log if r["event"] == "dev"]
    best = min((r for r in dev if not r.get("ineligible")), key=lambda r: (r["rate"], r["step"]))  # what was kept
    times = [r["seconds"] for r in log if r["event"] == "train"]
    result.update(
        {
            "trainable": next(r["trainable"] for r in log if r["event"] == "setup"),
            "stored": summary.get("stored", summary.get("kept")),
            "sparsity": summary.get("sparsity"),
            "rank_table": summary.get("rank_table"),
            "dev": best["rate"],
            "best_step": best["step"],
            "dev_voices": best.get("per_speaker", {}),
            "step_seconds": statistics.median(b - a for a, b in itertools.pairwise(times)),
            "train_minutes": times[-1] / 60,
            "recipe": (folder / "recipe.yaml").read_text(encoding="utf-8"),
        }
    )
    cached.write_text(json.dumps(result), encoding="utf-8")
    return result


def evaluate_final(row: Row, folder: Path, steps: int, recipe_name: str, test, clips) -> dict[str, Any]:
    """The row's state after its last update (its checkpoint), decoded like the best-on-dev one:
    for S2-LoRA the L1 keeps zeroing λ after the best dev step, so the two differ in sparsity."""
    import torch

    cached = folder / FINAL
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    recipe = load_recipe(recipe_name, row.overrides)
    host = load_whisper(recipe.model.name, device=None if recipe.model.device == "auto" else recipe.model.device)
    host.set_window(recipe.model.window_seconds)
    tuning = AdapterTuning(recipe.adapter.config())
    tuning.attach(host.model)
    state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)["adapter"]
    tuning.load_state(host.model, state, str(folder / CHECKPOINT))
    result = decode(host, recipe, test, clips)
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in log if r["event"] == "dev"]
    summary = tuning.summary(host.model)
    result.update({"sparsity": summary.get("sparsity"), "rank_table": summary.get("rank_table"),
                   "step": dev[-1]["step"], "dev": dev[-1]["rate"], "dev_voices": dev[-1].get("per_speaker", {}),
                   "trajectory": [(r["step"], r["rate"], r.get("sparsity")) for r in dev]})  # fmt: skip
    cached.write_text(json.dumps(result), encoding="utf-8")
    return result


def zero_shot(recipe, test, clips, out: Path) -> dict[str, Any]:
    cached = out / "bench-zero-shot.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    host = load_whisper(recipe.model.name, device=None if recipe.model.device == "auto" else recipe.model.device)
    full = decode(host, recipe, test, clips)  # Whisper as normally used: 30 s window
    host.set_window(recipe.model.window_seconds)
    short = decode(host, recipe, test, clips)
    result = {"window30": full, "short": short}
    out.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result), encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="updates per row (default: the recipe's train.max_steps)")
    parser.add_argument("--only", help="comma-separated row keys (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "runs", help="where the runs go (default: bench/runs)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs; reuse finished rows")
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. about an interruption")
    parser.add_argument("--report", type=Path, default=HERE / "child_zh.md")
    parser.add_argument("--recipe", default="child_zh", help="the recipe every row starts from (tests use a tiny one)")
    args = parser.parse_args(argv)

    recipe = load_recipe(args.recipe)
    steps = args.steps or recipe.train.max_steps
    test = read_manifest(recipe.data.test)
    clips = english_clips()
    chosen = rows(steps)
    if args.only:
        keys = set(args.only.split(","))
        chosen = [r for r in chosen if r.key in keys]
    if not args.resume:
        for r in chosen:
            (args.out / f"bench-{r.key}" / RESULT).unlink(missing_ok=True)
        (args.out / "bench-zero-shot.json").unlink(missing_ok=True)
    zero = zero_shot(recipe, test, clips, args.out)
    results = []
    for row in chosen:
        folder = args.out / f"bench-{row.key}"
        if not (args.resume and (folder / RESULT).is_file()):
            train_row(row, args.recipe, steps, args.out, args.resume)
        result = evaluate_row(row, folder, steps, args.recipe, test, clips)
        if result.get("sparsity") is not None and (folder / CHECKPOINT).is_file():
            result["final"] = evaluate_final(row, folder, steps, args.recipe, test, clips)
        results.append((row, result))
        row_adapter = load_recipe(args.recipe, row.overrides).adapter
        row.is_recipe = row.tuning is None and row_adapter.config() == recipe.adapter.config()
    from child_zh_report import render, write_ranks

    ranks = args.report.with_name(args.report.stem + "_ranks.png")
    write_ranks(results, ranks)
    args.report.write_text(render(results, zero, recipe, steps, args.note, ranks.name), encoding="utf-8")
    print(f"wrote {args.report} and {ranks}")


if __name__ == "__main__":
    main()
