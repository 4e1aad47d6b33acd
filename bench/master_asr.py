"""Master-ASR on real whisper-base, on SYNTHETIC multilingual speech: one pool for five languages,
then a sixth language as one table row, against one LoRA per language. Writes bench/master_asr.md.

    python bench/master_asr.py            # about an hour on 2 CPU cores
    python bench/master_asr.py --resume   # after an interruption: finished stages are reused
    python bench/master_asr.py --scale 0.1 --stage1-steps 2 --lora-steps 1 --stage2-steps 1 \\
        --out /tmp/m --report /tmp/m.md   # a smoke run

Stages, every one through speechpeft's own `finetune` (best-on-dev state kept):
1. zero-shot whisper-base (30 s window, as normally used, and the adapters' 8 s), and the stage-1 pool at its start
   (scores = |W|, so the mask drops the t smallest-magnitude weights), for t = 0.1 and 0.3:
   what masking costs before any training;
2. Master-ASR stage 1 (recipes/master_asr_stage1.yaml) on five languages at once;
3. one LoRA r=8 (q, v) per language, each on its language's share of the same data, for the
   updates stage 1 gave that language (stage-1 updates / 5);
4. the sixth language (Polish, about 10 minutes): stage 2 (recipes/master_asr_stage2.yaml, one
   new row per layer) against a LoRA r=8 trained on the same 10 minutes for the same updates.
Then per-language test CER/WER, stored bytes, and decode time with the assembled masks against
the bare model on the same utterances (alternated, same run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from speechpeft.adapters import read_adapter  # noqa: E402
from speechpeft.data import read_manifest  # noqa: E402
from speechpeft.eval.asr import transcribe_utterances  # noqa: E402
from speechpeft.eval.metrics import pooled, utterance_counts  # noqa: E402
from speechpeft.eval.normalise import make_normaliser  # noqa: E402
from speechpeft.fs import atomic_write_text  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.train import finetune, load_recipe  # noqa: E402

CORPUS = ROOT / "data" / "multilingual_demo"
STAGE1_LANGS = ("en", "de", "fr", "es", "it")
NEW = "pl"
LORA = ["adapter.kind=lora", "adapter.rank=8", "adapter.alpha=16", "adapter.targets=attn_qv", "train.lr=2e-3"]


def corpus(scale: float, out: Path) -> Path:
    folder = CORPUS if scale == 1.0 else out / "corpus"
    if not (folder / "new_test.jsonl").is_file():
        sys.path.insert(0, str(CORPUS))
        from make_corpus import build  # noqa: PLC0415

        build(folder, scale)
    return folder


def split_by_language(manifest: Path, out: Path) -> dict[str, Path]:
    """One manifest per language, beside the run (paths made absolute)."""
    rows: dict[str, list[str]] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        row["audio_filepath"] = str((manifest.parent / row["audio_filepath"]).resolve())
        rows.setdefault(row["language"], []).append(json.dumps(row, ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang, lines in rows.items():
        paths[lang] = out / f"{manifest.stem}.{lang}.jsonl"
        atomic_write_text(paths[lang], "\n".join(lines) + "\n")
    return paths


def score(host, utts, desc: str) -> dict[str, Any]:
    """Per-language CER and WER (basic normaliser), each utterance decoded in its own language."""
    tick = time.time()
    hyps = transcribe_utterances(host, utts, None, 1, 16, 12.0, desc, True)
    normalise = make_normaliser("basic")
    out: dict[str, Any] = {"seconds": round(time.time() - tick, 1)}
    for lang in sorted({u.language for u in utts}):
        mine = [(u, h) for u, h in zip(utts, hyps, strict=True) if u.language == lang]
        refs, hs = [u.text for u, _ in mine], [h for _, h in mine]
        out[lang] = {m: pooled(utterance_counts(refs, hs, m, normalise), m).rate for m in ("cer", "wer")}
        out[lang]["n"] = len(mine)
    return out


def cached(path: Path, make) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = make()
    atomic_write_text(path, json.dumps(result, indent=1))
    return result


def train(recipe: str, name: str, overrides: list[str], out: Path, resume: bool) -> Path:
    run = out / name
    if (run / "done").is_file():
        return run
    r = load_recipe(recipe, [f"name={name}", f"output_dir={out}", *overrides])
    again = resume and (run / "checkpoint.pt").is_file()
    print(f"== {name}: {' '.join(overrides)}" + (" (resumed)" if again else ""), flush=True)
    tick = time.time()
    finetune(r, resume=again, overwrite=not again, progress=True, test=False)
    atomic_write_text(run / "done", f"{time.time() - tick:.0f}\n")
    return run


def host_with(adapter: Path | None, window: float = 8.0):
    host = load_whisper("openai/whisper-base", device="cpu")
    host.set_window(window)
    if adapter is not None:
        host.attach_adapter(adapter)
    return host


def setup_row(run: Path) -> dict[str, Any]:
    rows = map(json.loads, (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
    return next(r for r in rows if r["event"] == "setup")


def stored_bytes(adapter: Path) -> int:
    return (adapter / "adapter_model.safetensors").stat().st_size


def decode_time(stage1: Path, utts) -> dict[str, float]:
    """Seconds for one teacher-forced forward pass (encoder + decoder over the transcripts) of
    ``utts`` (one language), bare and with the assembled masks, alternated. Forward passes, not
    ``generate``: the bare model runs on where the adapted one stops, which would time different
    amounts of work."""
    from speechpeft.adapters import adapter_condition
    from speechpeft.data import load_audio

    bare, master = host_with(None), host_with(stage1)
    bare.model.eval(), master.model.eval()  # as decoding runs (masks are cached outside training)
    lang = utts[0].language
    arrays = [load_audio(u.audio, 16_000, u.where, max_seconds=8.0) for u in utts]
    batch = bare.batch(arrays, [u.text for u in utts], lang)
    tick = time.time()
    with torch.no_grad(), adapter_condition(master.model, language=lang):
        master.model(**batch)  # the first call assembles the masks
    assembly = time.time() - tick
    times: dict[str, list[float]] = {"bare": [], "master": []}
    for _ in range(3):
        for key, host in (("bare", bare), ("master", master)):
            tick = time.time()
            with torch.no_grad(), adapter_condition(host.model, language=lang):
                host.model(**batch)
            times[key].append(time.time() - tick)
    return {"bare": statistics.median(times["bare"]), "master": statistics.median(times["master"]),
            "first_call_with_assembly": assembly, "language": lang, "utterances": len(utts)}  # fmt: skip


def wall_facts(out: Path, seconds: float, stages: dict[str, float]) -> dict[str, Any]:
    """Wall-clock minutes over every invocation of this run (a resumed run adds to the total)."""
    path = out / "wall-seconds.json"
    runs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    runs.append({"seconds": seconds, "stages": stages, "at": dt.datetime.now().isoformat(timespec="seconds")})
    atomic_write_text(path, json.dumps(runs, indent=1))
    total: dict[str, float] = {}
    for run in runs:
        for key, value in run["stages"].items():
            total[key] = total.get(key, 0.0) + value / 60
    return {"wall_minutes": sum(r["seconds"] for r in runs) / 60, "stage_minutes": total, "invocations": len(runs)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "runs" / "master")
    p.add_argument("--report", type=Path, default=HERE / "master_asr.md")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--scale", type=float, default=1.0, help="corpus size (1.0: data/multilingual_demo)")
    p.add_argument("--stage1-steps", type=int, default=200)
    p.add_argument("--lora-steps", type=int, help="per language (default: stage-1 steps / 5)")
    p.add_argument("--stage2-steps", type=int, default=60)
    args = p.parse_args(argv)
    started = time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for f in out.glob("*.json"):  # wall-seconds.json too: a fresh run counts from zero
            f.unlink()
        for f in out.glob("*/done"):
            f.unlink()
    data = corpus(args.scale, out)
    test = read_manifest(data / "test.jsonl")
    new_test = read_manifest(data / "new_test.jsonl")
    d = lambda name: f"data.{name}"  # noqa: E731
    paths = [f"{d('train')}={data / 'train.jsonl'}", f"{d('dev')}={data / 'dev.jsonl'}",
             f"{d('test')}={data / 'test.jsonl'}"]  # fmt: skip
    new_paths = [f"{d('train')}={data / 'new_train.jsonl'}", f"{d('dev')}={data / 'new_dev.jsonl'}",
                 f"{d('test')}={data / 'new_test.jsonl'}"]  # fmt: skip
    lora_steps = args.lora_steps or max(1, args.stage1_steps // len(STAGE1_LANGS))
    wall: dict[str, float] = {}

    def timed(key, fn):
        tick = time.time()
        value = fn()
        wall[key] = wall.get(key, 0.0) + time.time() - tick
        return value

    zero = cached(out / "zero.json", lambda: score(host_with(None, 30.0), test + new_test, "zero-shot"))
    zero8 = cached(out / "zero-8s.json", lambda: score(host_with(None), test + new_test, "zero-shot, 8 s"))

    def at_init(t: float) -> dict[str, Any]:
        host = host_with(None)
        from speechpeft.adapters import MasterConfig

        host.inject(MasterConfig(languages=STAGE1_LANGS, sparsity=t))
        return score(host, test, f"masks at init, t={t:g}")

    init = {t: cached(out / f"init-{t:g}.json", lambda t=t: timed("init", lambda: at_init(t))) for t in (0.1, 0.3)}
    s1_over = [*paths, f"train.max_steps={args.stage1_steps}", f"train.eval_every={max(1, args.stage1_steps // 4)}"]
    s1 = timed("stage1", lambda: train("master_asr_stage1", "stage1", s1_over, out, args.resume))
    stage1 = cached(out / "stage1.json", lambda: score(host_with(s1 / "adapter"), test, "stage 1"))
    per_lang_train = split_by_language(data / "train.jsonl", out / "manifests")
    per_lang_dev = split_by_language(data / "dev.jsonl", out / "manifests")
    per_lang_test = split_by_language(data / "test.jsonl", out / "manifests")
    lora: dict[str, Any] = {}
    for lang in STAGE1_LANGS:
        over = [*LORA, f"{d('train')}={per_lang_train[lang]}", f"{d('dev')}={per_lang_dev[lang]}",
                f"{d('test')}={per_lang_test[lang]}", f"train.max_steps={lora_steps}",
                f"train.eval_every={max(1, lora_steps // 2)}", f"train.checkpoint_every={lora_steps}",
                f"train.warmup_steps={max(1, lora_steps // 10)}"]  # fmt: skip
        run = timed("lora", lambda over=over, lang=lang: train("master_asr_stage1", f"lora-{lang}", over, out,
                                                               args.resume))  # fmt: skip
        utts = [u for u in test if u.language == lang]
        decode = lambda run=run, utts=utts, lang=lang: score(host_with(run / "adapter"), utts, f"LoRA {lang}")  # noqa: E731
        lora[lang] = cached(out / f"lora-{lang}.json", decode)
        lora[lang]["bytes"] = stored_bytes(run / "adapter")
    s2 = timed("stage2", lambda: train("master_asr_stage2", "stage2", [*new_paths, f"adapter.stage1={s1 / 'adapter'}",
                                       f"train.max_steps={args.stage2_steps}"], out, args.resume))  # fmt: skip
    stage2 = cached(out / "stage2.json", lambda: score(host_with(s2 / "adapter"), new_test, "stage 2"))
    lora_new_over = [*LORA, *new_paths, f"train.max_steps={args.stage2_steps}", "train.eval_every=20",
                     f"train.checkpoint_every={args.stage2_steps}", "train.warmup_steps=5"]  # fmt: skip
    ln = timed("lora", lambda: train("master_asr_stage2", "lora-new", lora_new_over, out, args.resume))
    lora_new = cached(out / "lora-new.json", lambda: score(host_with(ln / "adapter"), new_test, "LoRA new"))
    timing = cached(out / "decode-time.json",
                    lambda: decode_time(s1 / "adapter", [u for u in test if u.language == "de"]))  # fmt: skip
    facts = {
        "stage1_bytes": stored_bytes(s1 / "adapter"),
        "stage2_bytes": stored_bytes(s2 / "adapter"),
        "stage2_floats": sum(t.numel() for t in read_adapter(s2 / "adapter").tensors.values()),
        "stage2_trainable": setup_row(s2)["trainable"],
        "lora_new_trainable": setup_row(ln)["trainable"],
        "lora_trainable": setup_row(out / f"lora-{STAGE1_LANGS[0]}")["trainable"],
        "stage1_trainable": setup_row(s1)["trainable"],
        "lora_new_bytes": stored_bytes(ln / "adapter"),
        "lora_steps": lora_steps,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        **wall_facts(out, time.time() - started, wall),
        "train_minutes": {
            run.name: float((run / "done").read_text()) / 60
            for run in sorted(out.glob("*"))
            if (run / "done").is_file()
        },  # fmt: skip
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": dt.date.today().isoformat(),
        "scale": args.scale,
    }
    from master_asr_report import render  # noqa: PLC0415

    atomic_write_text(args.report, render(zero, init, stage1, lora, stage2, lora_new, timing, facts, zero8=zero8))
    print(f"wrote {args.report}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
