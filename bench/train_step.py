"""What one optimizer update costs: speechpeft's LoRA against PEFT's LoRA with the same config, and
speechpeft's S2-LoRA (the main job's adapter), on real openai/whisper-base, in one run.

Every engine gets the same batch (8 utterances of the SYNTHETIC child_zh demo corpus, language zh),
the same encoder window (30 s, and the 8 s the recipe trains with), AdamW, 2 threads, train mode.
LoRA: r=8, alpha 16, no dropout, on q_proj and v_proj of every attention block (speechpeft's
`attn_qv`, PEFT's `target_modules=["q_proj", "v_proj"]`: the same 36 matrices, checked). S2-LoRA:
the child_zh recipe's adapter (its proximal L1 step included in the update). An update is
zero_grad, forward (the loss), backward, optimizer step; forward and backward are timed apart.
Engines are interleaved round by round, the order rotating, after one warm-up update each; the
median over rounds is reported, with the spread, and ratios are against PEFT in the same run.

    python bench/train_step.py              # about 25 minutes on 2 CPU cores; writes train_step.md
    python bench/train_step.py --rounds 1 --windows 2 --out /tmp/t.md   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from speechpeft.adapters import LoRAConfig  # noqa: E402
from speechpeft.data import load_audio, read_manifest  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.train import load_recipe  # noqa: E402
from speechpeft.train.tuning import AdapterTuning  # noqa: E402

MODEL = "openai/whisper-base"
BATCH = 8
# glibc returns the activations' large blocks to the kernel after every update and faults them in
# again on the next, which adds seconds of system time at random; keeping them makes updates repeatable
TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
LR = 1e-3


class SpeechPeft:
    def __init__(self, label, config, window):
        self.label = label
        self.host = load_whisper(MODEL, device="cpu")
        self.host.set_window(window)
        self.tuning = AdapterTuning(config)
        self.tuning.attach(self.host.model)
        self.model = self.host.model
        self.optimizer = torch.optim.AdamW(self.tuning.param_groups(self.model, LR), lr=LR)
        self.step = 0

    def after(self):
        self.step += 1
        self.tuning.after_step(self.model, LR, self.step, 1000)


class Peft:
    def __init__(self, label, window):
        from peft import LoraConfig, get_peft_model

        self.label = label
        self.host = load_whisper(MODEL, device="cpu")
        self.host.set_window(window)
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        self.model = get_peft_model(self.host.model, config)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=LR)

    def after(self):
        pass


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def update(engine, batch) -> tuple[float, float, float]:
    """(forward, backward, whole update) seconds of one optimizer update."""
    engine.model.train()
    t0 = time.perf_counter()
    engine.optimizer.zero_grad(set_to_none=True)
    loss = engine.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    engine.optimizer.step()
    engine.after()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t0


def engines(window: float):
    s2 = load_recipe("child_zh").adapter.config()
    made = [
        SpeechPeft("speechpeft LoRA r=8, attn_qv", LoRAConfig(8, 16.0, 0.0, "attn_qv"), window),
        Peft("PEFT LoRA r=8, q_proj+v_proj", window),
        SpeechPeft("speechpeft S2-LoRA (the child_zh recipe)", s2, window),
    ]
    if trainable(made[0].model) != trainable(made[1].model):
        raise SystemExit(f"LoRA sizes differ: {trainable(made[0].model)} vs {trainable(made[1].model)}")
    return made


def corpus_batch(host):
    """The batch, and the seconds that reading its audio and making its features and labels took
    (what the training loop adds to every update, whichever adapter library trains)."""
    utts = read_manifest(ROOT / "data" / "child_zh_demo" / "train.jsonl")[:BATCH]
    t0 = time.perf_counter()
    arrays = [load_audio(u.audio, 16_000) for u in utts]
    batch = host.batch(arrays, [u.text for u in utts], "zh")
    return batch, time.perf_counter() - t0


def measure(window: float, rounds: int):
    made = engines(window)
    batch, _ = corpus_batch(made[0].host)
    times = {e.label: [] for e in made}
    prep = []
    for e in made:  # warm-up, not counted
        update(e, batch)
    for r in range(rounds):
        order = made[r % len(made) :] + made[: r % len(made)]
        for e in order:
            times[e.label].append(update(e, batch))
        prep.append(corpus_batch(made[0].host)[1])
        said = ", ".join(f"{e.label.split(' (')[0]} {times[e.label][-1][2]:.2f} s" for e in made)
        print(f"window {window:g} s, round {r + 1}/{rounds}: {said}", flush=True)
    return [(e.label, trainable(e.model), times[e.label]) for e in made], prep


def median(values):
    return statistics.median(values)


def write(out: Path, results: dict, rounds: int):
    lines = [
        "# One optimizer update: speechpeft LoRA vs PEFT LoRA (same config), and S2-LoRA",
        "",
        f"Made by `python bench/train_step.py` on {dt.date.today()}: {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, fp32, GLIBC_TUNABLES={TUNABLES}, "
        f"real {MODEL}, batch {BATCH} "
        "utterances of the SYNTHETIC child_zh demo corpus (language zh), AdamW, train mode. LoRA: r=8, alpha 16, "
        "no dropout, q_proj and v_proj of every attention block (36 matrices) in both. Engines interleaved, "
        f"order rotating, one warm-up update each, then {rounds} rounds: medians, with min-max of the update "
        "time. Ratio: the engine's median update time over PEFT's, in the same run.",
        "",
        "| window | engine | trainable params | update (s) [min-max] | forward (s) | backward (s) | step (s) "
        "| x PEFT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for window, (rows, prep) in results.items():
        peft = median([t[2] for t in rows[1][2]])
        for label, params, times in rows:
            whole = [t[2] for t in times]
            f, b = median([t[0] for t in times]), median([t[1] for t in times])
            step = median([t[2] - t[0] - t[1] for t in times])
            lines.append(
                f"| {window:g} s | {label} | {params:,} | {median(whole):.2f} [{min(whole):.2f}-{max(whole):.2f}] "
                f"| {f:.2f} | {b:.2f} | {step:.3f} | {median(whole) / peft:.3f} |"
            )
        lines.append(f"| {window:g} s | (the batch: audio read, features, labels; every engine) | | {median(prep):.2f} "
                     f"[{min(prep):.2f}-{max(prep):.2f}] | | | | |")  # fmt: skip
    lines += [
        "",
        "S2-LoRA costs more per update than LoRA although it trains 8x fewer parameters: the recipe adapts "
        "q, k, v and o of every attention block (72 matrices, cross-attention included, whose k and v run "
        "over every encoder frame) where LoRA adapts q and v (36). Its shared basis adds no work per matrix "
        "beyond a rank-r scaling by λ.",
        "",
    ]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--windows", type=float, nargs="+", default=[30.0, 8.0])
    p.add_argument("--out", type=Path, default=HERE / "train_step.md")
    args = p.parse_args()
    if os.environ.get("GLIBC_TUNABLES") != TUNABLES:  # set before the process starts, so start again with it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNABLES})
    torch.set_num_threads(2)
    torch.manual_seed(0)
    results = {w: measure(w, args.rounds) for w in args.windows}
    write(args.out, results, args.rounds)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
