"""A miniature of the Ainu experiment (Nowakowski et al., IP&M 2023) that runs on 2 CPU cores:
does continued pretraining (CPT) on untranscribed audio of an unseen language help its CTC
fine-tuning? Everything is SYNTHETIC speech (data/unseen_lang_demo, espeak-ng + sox).

    python bench/cpt.py            # -> bench/cpt.md, bench/cpt_curves.png (60 min on 2 cores, measured)
    python bench/cpt.py --resume   # after an interruption: finished stages are reused

1. No pretrained wav2vec 2.0 is reachable offline, so a small one (the *stand-in*: hidden 256,
   4 layers, a 128-channel conv stack) is pretrained from scratch on four source languages.
2. (a) the stand-in is fine-tuned with CTC on the labelled target speech (Maori, absent from the
   sources); (b) it first continues pretraining on untranscribed target audio (other sentences
   and voices), then gets the same CTC fine-tuning. Both fine-tunings are recipes/unseen_lang_ctc.yaml
   as shipped (an adapter, a new character vocabulary and head): the same train split, updates,
   batches, learning rate and best-on-dev selection.
3. Test CER with 95 % bootstrap intervals for (a) and (b) and a paired test of the difference;
   the trainable parameters of every stage; the pretraining curves (loss, contrastive accuracy,
   codebook perplexity) as evidence that pretraining learnt its task.

Every stage goes through speechpeft's own `pretrain` and `finetune`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data" / "unseen_lang_demo"))

import torch  # noqa: E402

from speechpeft.eval.asr import transcribe_utterances  # noqa: E402
from speechpeft.eval.bootstrap import paired_test, rate_ci  # noqa: E402
from speechpeft.eval.metrics import pooled, utterance_counts  # noqa: E402
from speechpeft.eval.normalise import make_normaliser  # noqa: E402
from speechpeft.fs import atomic_write_text  # noqa: E402
from speechpeft.train import finetune, load_recipe, pretrain  # noqa: E402

STAND_IN = dict(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
    conv_dim=(128,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8, feat_extract_norm="group",
    do_stable_layer_norm=False, num_codevector_groups=2, num_codevectors_per_group=64, codevector_dim=128,
    proj_codevector_dim=128, vocab_size=32, layerdrop=0.0,
)  # fmt: skip
STAGES = {  # stage -> (recipe, overrides); sized for the 90 min budget on 2 cores (bench/cpt.md: 60 min)
    "source": ("unseen_lang_cpt", ["pretrain.freeze_feature_encoder=false", "train.max_steps=1200", "train.lr=5e-4",
                                   "train.warmup_steps=120", "pretrain.max_temperature=2.0", "name=cpt-source"]),
    "ctc_a": ("unseen_lang_ctc", ["name=ctc-a"]),
    "cpt": ("unseen_lang_cpt", ["name=cpt-target"]),
    "ctc_b": ("unseen_lang_ctc", ["name=ctc-b"]),
}  # fmt: skip


def stand_in(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised Wav2Vec2ForPreTraining of the stand-in's size, saved with its feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    Wav2Vec2ForPreTraining(Wav2Vec2Config(**STAND_IN)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    return folder


def stage_overrides(key: str, out: Path, extra: list[str], scale_steps: float) -> list[str]:
    name, overrides = STAGES[key]
    overrides = [*overrides, f"output_dir={out}", *extra]
    if scale_steps != 1.0:  # tests: the same pipeline, a few updates per stage
        steps = load_recipe(name, overrides).train.max_steps
        overrides += [f"train.max_steps={max(2, int(steps * scale_steps))}", "train.eval_every=2",
                      "train.checkpoint_every=2", "train.warmup_steps=1"]  # fmt: skip
    return overrides


def run_stage(key: str, out: Path, resume: bool, extra: list[str], scale_steps: float) -> Path:
    name = STAGES[key][0]
    overrides = stage_overrides(key, out, extra, scale_steps)
    recipe = load_recipe(name, overrides)
    run = Path(recipe.output_dir) / recipe.name
    done = (run / "report.md").is_file()
    print(f"== {key}: {name} {' '.join(overrides)}" + (" (done)" if done else ""), flush=True)
    if done and resume:
        return run
    started = (run / "checkpoint.pt").is_file() and resume
    with clock(out, key):
        if key.startswith("ctc"):
            finetune(recipe, resume=started, overwrite=not started, progress=True, test=False)
        else:
            pretrain(recipe, resume=started, overwrite=not started, progress=True)
    return run


def _clocks(out: Path) -> dict[str, float]:
    path = out / "wall-seconds.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@contextlib.contextmanager
def clock(out: Path, key: str, add: bool = True) -> Iterator[None]:
    """Record the wall-clock seconds of the block as ``key`` in out/wall-seconds.json: added to what
    is there, so that a run resumed after an interruption still reports the time all of its work
    took, or (``add=False``, work redone on every run) replacing it."""
    tick = time.time()
    yield
    clocks = _clocks(out)
    clocks[key] = (clocks.get(key, 0.0) if add else 0.0) + time.time() - tick
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "wall-seconds.json", json.dumps(clocks))


def decode_test(run: Path, recipe_name: str, overrides: list[str]) -> dict[str, Any]:
    """The best-on-dev adapter of ``run`` (with its vocabulary and head) decoded on the test split:
    pooled CER, its interval, per-utterance counts."""
    from speechpeft.data import read_manifest
    from speechpeft.models import load_host

    recipe = load_recipe(recipe_name, overrides)
    host = load_host(recipe.model.name, device="cpu")
    host.set_window(recipe.model.window_seconds)
    host.attach_adapter(run / "adapter")
    test = read_manifest(recipe.data.test)
    ev = recipe.eval
    hyps = transcribe_utterances(host, test, None, 1, ev.batch_size, ev.max_tokens_per_second, "test", True)
    counts = utterance_counts([u.text for u in test], hyps, "cer", make_normaliser(ev.normaliser))
    edits, units = [c.edits for c in counts], [c.reference_units for c in counts]
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    dev = [r for r in log if r["event"] == "dev"]
    return {
        "cer": pooled(counts, "cer").rate,
        "ci": rate_ci(edits, units),
        "edits": edits,
        "units": units,
        "dev": min(r["rate"] for r in dev),
        "best_step": min(dev, key=lambda r: (r["rate"], r["step"]))["step"],
        "trainable": next(r["trainable"] for r in log if r["event"] == "setup"),
        "minutes": max((r["seconds"] for r in log if r["event"] == "train"), default=0.0) / 60,
        "examples": [(u.text, h) for u, h in list(zip(test, hyps, strict=True))[:3]],
    }


def fine_tune(key: str, base: Path, data: list[str], args: argparse.Namespace) -> dict[str, Any]:
    extra = [f"model.name={base}", *data]
    run = run_stage(key, args.out, args.resume, extra, args.steps_scale)
    with clock(args.out, f"{key}_test", add=False):  # decoding is redone on every run of the script
        return decode_test(run, STAGES[key][0], stage_overrides(key, args.out, extra, args.steps_scale))


def pretrain_facts(run: Path) -> dict[str, Any]:
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    dev = [r for r in log if r["event"] == "dev"]
    train = [r for r in log if r["event"] == "train"]
    return {
        "trainable": next(r["trainable"] for r in log if r["event"] == "setup"),
        "steps": len(train),
        "dev_first": dev[0],
        "dev_last": dev[-1],
        "minutes": train[-1]["seconds"] / 60 if train else 0.0,
        "rows": log,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "runs" / "cpt", help="default: bench/runs/cpt")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "unseen_lang_demo")
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size x this (tests: 0.03)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="updates per stage x this (tests: 0.01)")
    parser.add_argument("--resume", action="store_true", help="reuse finished stages, resume interrupted ones")
    parser.add_argument("--report", type=Path, default=HERE / "cpt.md")
    args = parser.parse_args(argv)
    from make_corpus import build

    fresh = not (args.corpus / "test.jsonl").is_file()  # the last manifest written: else nothing is made
    with clock(args.out, "corpus") if fresh else contextlib.nullcontext():
        manifests = build(args.corpus, args.scale)
    data = [f"data.{k}={manifests[k]}" for k in ("train", "dev", "test")]
    init = stand_in(args.out / "stand-in-init")
    dev = f"data.dev={manifests['dev']}"
    source = run_stage("source", args.out, args.resume,
                       [f"model.name={init}", f"data.train={manifests['source']}", dev], args.steps_scale)  # fmt: skip
    rows = {"ctc_a": fine_tune("ctc_a", source / "model", data, args)}  # (a) first: its figure is known early
    cpt = run_stage("cpt", args.out, args.resume,
                    [f"model.name={source / 'model'}", f"data.train={manifests['untranscribed']}", dev],
                    args.steps_scale)  # fmt: skip
    rows["ctc_b"] = fine_tune("ctc_b", cpt / "model", data, args)
    facts = {"source": pretrain_facts(source), "cpt": pretrain_facts(cpt)}
    from cpt_report import render, write_curves

    curves = args.report.with_name(args.report.stem + "_curves.png")
    write_curves(facts, curves)
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    paired = paired_test(rows["ctc_b"]["edits"], rows["ctc_a"]["edits"], rows["ctc_a"]["units"])
    text = render(rows, facts, manifests, machine, dt.date.today().isoformat(), curves.name, paired, _clocks(args.out))
    atomic_write_text(args.report, text)
    print(f"wrote {args.report} and {curves}")


if __name__ == "__main__":
    main()
