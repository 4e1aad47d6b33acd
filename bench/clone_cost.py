"""The cost axis of few-shot speaker cloning: speaker similarity and intelligibility against
seconds of reference audio, bytes per speaker and CPU training time, per target voice.

Variants (those the base supports):
- unadapted:     the base voice as it is (the floor);
- instant:       no training step: an instant base's speaker input from the references' verifier
                 embedding (``--instant-base``; only on voices held out of its training);
- embedding:     only a new speaker vector (multi-speaker bases: a row of the speaker table);
- usat:          the vector plus USAT's flow and phoneme adapters (speechpeft's default);
- usat-decoder:  usat plus decoder adapters trained by mel reconstruction (opt-in);
- full:          the flow, duration predictor and text-encoder attention fine-tuned whole.

    python data/voices_demo/make_references.py        # festival voices + the LibriVox reader
    python bench/clone_cost.py --base runs/joe-completed \\
        --voice kal=data/voices_demo/kal --voice slt=data/voices_demo/slt ... --seconds 10 30 60 300

A voice folder holds ``refs.jsonl`` (references, taken in order until each budget of seconds is
filled) and ``held.jsonl`` (other sentences of the same speaker: the texts to synthesize and the
real audio to score against). ``--manifest`` and ``--held-out`` give one voice directly.

Two reference rows per voice frame the figures:
- real vs real: the verifier's cosine of the voice's own reference recordings to its held-out
  audio, the ceiling;
- resynthesis: the base's decoder given the posterior encoder's z of the held-out audio itself:
  how much of the target the base's decoder reproduces through its posterior, and its WER: whether
  the z's that the prior-side variants learn to reproduce are intelligible at all. It is not an upper
  bound for the prior-side adapters: a posterior completed on the base voice alone does not
  invert other voices well, and adapters can find z's it does not.

Results are kept per (voice, variant, budget) in ``--cache`` (JSONL), so a rerun resumes; the
markdown table and the plot are rendered from every cached row of the run's configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from speechpeft.data import load_audio  # noqa: E402
from speechpeft.data.audio import audio_duration  # noqa: E402
from speechpeft.data.manifest import read_manifest  # noqa: E402
from speechpeft.eval.bootstrap import rate_ci  # noqa: E402
from speechpeft.eval.tts import intelligibility, speaker_bytes, speaker_similarity  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.models.speaker_encoder import load_speaker_encoder  # noqa: E402
from speechpeft.models.vits_build import load_vits  # noqa: E402
from speechpeft.models.vits_speaker import describe  # noqa: E402
from speechpeft.train.clone import VARIANTS, CloneOptions, Reference, clone, load_speaker  # noqa: E402

ALL = ("unadapted", *VARIANTS)


def budget(rows, seconds: float) -> list[Reference]:
    out, total = [], 0.0
    for u in rows:
        if total >= seconds:
            break
        out.append(Reference(u.audio, u.text, u.where))
        total += u.duration or audio_duration(u.audio, u.where)
    return out


def similarity_row(encoder, waves, rate, held_audio) -> dict:
    sim = speaker_similarity(encoder, waves, rate, held_audio, encoder.sampling_rate)
    ci = rate_ci(sim["per_utterance"], [1.0] * len(sim["per_utterance"]))
    return {"similarity": sim["cosine"], "similarity_ci": ci, "verifier": sim["verifier"]}


def frame_rows(voice, encoder, whisper, base, refs, held, held_audio, language) -> list[dict]:
    """real-vs-real (the ceiling) and resynthesis through the base decoder (the prior side's target), with its WER."""
    real = [load_audio(u.audio, encoder.sampling_rate) for u in refs[:10]]
    host = load_vits(base)
    waves = []
    for u in held:
        spec, frames = host.spectrogram([load_audio(u.audio, host.sampling_rate)])
        mean, _ = host.posterior(spec, frames)
        waves.append(host.model.decoder(mean, None)[0, 0].detach().numpy())
    return [
        {"voice": voice, "variant": "real vs real", **similarity_row(encoder, real, encoder.sampling_rate, held_audio)},
        {"voice": voice, "variant": "resynthesis", **similarity_row(encoder, waves, host.sampling_rate, held_audio),
         "wer": intelligibility(whisper, waves, host.sampling_rate, [u.text for u in held], language)["rate"]},
    ]  # fmt: skip


def one(voice, variant, seconds, args, refs, held, held_audio, encoder, whisper, tmp) -> dict:
    base = args.instant_base if variant == "instant" else args.base
    host = load_vits(base)
    report = {"reference_seconds": 0.0, "trainable_parameters": 0, "wall_seconds": 0.0, "held_out_loss": None}
    speaker, size = None, 0
    if host.config.num_speakers > 1:  # unadapted: the table's mean speaker, where every clone starts
        speaker = host.model.embed_speaker.weight.detach().mean(0)
    if variant != "unadapted":
        out = Path(tmp) / f"{voice}-{variant}-{seconds:g}"
        opts = CloneOptions(name=out.name, output=out, steps=args.steps, variant=variant, progress=args.progress)
        report = clone(host, budget(refs, seconds), opts)
        host = load_vits(base)  # synthesize from what was saved, as a user would
        speaker, size = load_speaker(host, out), speaker_bytes(out)
    texts = [u.text for u in held]
    waves = [host.synthesize(t, speaker) for t in texts]
    asr = intelligibility(whisper, waves, host.sampling_rate, texts, args.language)
    return {
        "voice": voice, "variant": variant, "budget_seconds": seconds if variant != "unadapted" else 0,
        "reference_seconds": report["reference_seconds"],
        **similarity_row(encoder, waves, host.sampling_rate, held_audio),
        "wer": asr["rate"], "trainable_parameters": report["trainable_parameters"],
        "fraction_of_base": report["trainable_parameters"] / sum(p.numel() for p in host.model.parameters()),
        "bytes": size, "train_seconds": report["wall_seconds"], "held_out_loss": report["held_out_loss"],
    }  # fmt: skip


def read_cache(args: argparse.Namespace) -> dict:
    cache = {}
    if args.cache.is_file():
        for line in args.cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("base", "runs/joe-completed") == args.base:  # rows of other bases are not this table's
                cache[(row["voice"], row["variant"], row.get("budget_seconds", 0), row.get("steps"))] = row
    return cache


def rows_from_cache(args: argparse.Namespace) -> list[dict]:
    """--render-only: the table from the cached rows alone (no model, no reference audio needed).
    A voice's budgets are those its cached rows were run at (all of --seconds when it has none); a
    variant with no row at one of them is shown as not run. The instant variant appears only where
    a row exists (held-out voices)."""
    cache = read_cache(args)
    rank = {"real vs real": -2, "resynthesis": -1, **{name: i for i, name in enumerate(ALL)}}
    rows = []
    for voice, _ in args.voices:
        mine = {k: r for k, r in cache.items() if k[0] == voice}
        rows += [mine[k] for k in ((voice, f, 0, None) for f in ("real vs real", "resynthesis")) if k in mine]
        budgets = sorted({k[2] for k in mine if k[2] and k[2] in args.seconds}) or sorted(args.seconds)
        for variant in args.variants:
            if variant == "unadapted":
                wanted = [(voice, variant, 0, None)]
            elif variant == "instant":
                wanted = [k for k in mine if k[1] == "instant" and k[2] in args.seconds]
            else:
                wanted = [(voice, variant, b, args.steps) for b in budgets]
            for key in wanted:
                rows.append(
                    mine.get(key, {"voice": voice, "variant": variant, "budget_seconds": key[2], "missing": True})
                )
    rows.sort(
        key=lambda r: ([v for v, _ in args.voices].index(r["voice"]), rank[r["variant"]], r.get("budget_seconds", 0))
    )
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    if args.render_only:
        return rows_from_cache(args)
    encoder = load_speaker_encoder(args.verifier)
    whisper = load_whisper(args.whisper, device="cpu")
    multi = load_vits(args.base).config.num_speakers > 1
    variants = [v for v in args.variants if v != "embedding" or multi]
    trained_on = set(describe(Path(args.instant_base))["voices"]) if args.instant_base else set()
    if not args.instant_base:
        variants = [v for v in variants if v != "instant"]
    cache = read_cache(args)
    data, jobs = {}, []
    for voice, (refs_path, held_path) in args.voices:
        refs = read_manifest(refs_path, require_duration=False)
        held = read_manifest(held_path, require_duration=False)
        held_audio = [load_audio(u.audio, encoder.sampling_rate) for u in held]
        data[voice] = (refs, held, held_audio)
        if "wer" not in cache.get((voice, "resynthesis", 0, None), {}):  # rows of before it had a WER are remade
            for r in frame_rows(voice, encoder, whisper, args.base, refs, held, held_audio, args.language):
                r["base"] = args.base
                cache[(voice, r["variant"], 0, None)] = r
                _append(args.cache, r)
        total = sum(u.duration or audio_duration(u.audio, u.where) for u in refs)
        budgets = [s for s in args.seconds if s <= total + 1e-6] or [min(args.seconds)]  # as far as the voice allows
        jobs += [(voice, "unadapted", 0)] * ("unadapted" in variants)
        # the instant base is scored only on voices held out of its training
        jobs += [(voice, v, s) for v in variants if v != "unadapted" and (v != "instant" or voice not in trained_on)
                 for s in budgets]  # fmt: skip
    # variant by variant across the voices, so that an interrupted run has every voice's first variants
    jobs.sort(key=lambda j: (ALL.index(j[1]), j[2]))
    with tempfile.TemporaryDirectory() as tmp:
        for voice, variant, seconds in jobs:
            key = (voice, variant, seconds, None if variant in ("unadapted", "instant") else args.steps)
            if key not in cache:
                started = time.time()
                r = one(voice, variant, seconds, args, *data[voice], encoder, whisper, tmp)
                r["steps"], r["base"] = key[3], args.base
                r["bench_seconds"] = round(time.time() - started, 1)
                cache[key] = r
                _append(args.cache, r)
                print(json.dumps(r), flush=True)
    order = {v: i for i, (v, _) in enumerate(args.voices)}
    rows = [cache[(v, f, 0, None)] for v, _ in args.voices for f in ("real vs real", "resynthesis")]
    for v, f, s in jobs:
        key = (v, f, s, None if f in ("unadapted", "instant") else args.steps)
        rows.append(cache.get(key, {"voice": v, "variant": f, "budget_seconds": s, "missing": True}))
    rank = {"real vs real": -2, "resynthesis": -1, **{name: i for i, name in enumerate(ALL)}}
    rows.sort(key=lambda r: (order[r["voice"]], rank[r["variant"]], r.get("budget_seconds", 0)))
    return rows


def _append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _ci(r: dict) -> str:
    ci = r.get("similarity_ci")
    return f"{r['similarity']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{r['similarity']:.3f}"


def render(rows: list[dict], args: argparse.Namespace) -> str:
    verifier = next((r["verifier"] for r in rows if "verifier" in r), "?")
    lines = [
        "# Few-shot speaker cloning: similarity, intelligibility and cost per target voice",
        "",
        f"Made by `python bench/clone_cost.py` on {dt.date.today().isoformat()}: base `{args.base}`, "
        f"{args.steps} steps per clone, speaker similarity by `{verifier}` (resemblyzer GE2E: cosine of each "
        f"synthesized held-out sentence to the target's held-out real audio, mean with a 95 % bootstrap CI), "
        f"WER by `{args.whisper}` on the same sentences. CPU: this machine's cores, fp32.",
        *(
            [
                f"Rendered with `--render-only` from the cached rows in `{args.cache.name}`: they come from several "
                "runs of the script on this base, with the same steps and seeds.",
                "",
            ]
            if args.render_only
            else []
        ),  # fmt: skip
        *([f"**{args.label}**", ""] if args.label else [""]),
        "| voice | variant | reference s | similarity [95 % CI] | WER | trainable params (% of base) | bytes | "
        "train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("missing"):
            budget_s = f"{r['budget_seconds']:g} (budget)"
            lines.append(f"| {r['voice']} | {r['variant']} | {budget_s} | not run | – | – | – | – |")
            continue
        if r["variant"] in ("real vs real", "resynthesis"):
            what = "ceiling" if r["variant"] == "real vs real" else "base decoder on the target's own z"
            wer = f"{r['wer']:.3f}" if "wer" in r else "–"
            lines.append(f"| {r['voice']} | *{r['variant']}* ({what}) | – | {_ci(r)} | {wer} | – | – | – |")
            continue
        lines.append(
            f"| {r['voice']} | {r['variant']} | {r['reference_seconds']:g} | {_ci(r)} | {r['wer']:.3f} | "
            f"{r['trainable_parameters']:,} ({100 * r['fraction_of_base']:.2f} %) | {r['bytes']:,} | "
            f"{r['train_seconds']:g} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not r.get("missing")]
    voices = list(dict.fromkeys(r["voice"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = dict(zip(voices, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    marks = {"instant": "x", "embedding": "s", "usat": "o", "usat-decoder": "^", "usat-posterior": "v", "full": "D"}
    for voice in voices:
        mine = [r for r in rows if r["voice"] == voice]
        for r in mine:
            if r["variant"] in ("real vs real", "unadapted"):
                style = "-" if r["variant"] == "real vs real" else ":"
                axes[0].axhline(r["similarity"], color=colours[voice], ls=style, lw=1)
        for variant, mark in marks.items():
            pts = sorted((r["reference_seconds"], r["similarity"], r["wer"]) for r in mine if r["variant"] == variant)
            if pts:
                x, s, w = zip(*pts, strict=True)
                axes[0].plot(x, s, marker=mark, color=colours[voice], label=f"{voice} {variant}")
                axes[1].plot(x, w, marker=mark, color=colours[voice], label=f"{voice} {variant}")
    axes[0].set_ylabel("speaker similarity (resemblyzer GE2E cosine)")
    axes[1].set_ylabel("WER of whisper-base on the synthesis")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("seconds of reference audio")
        ax.grid(alpha=0.3)
    axes[0].set_title("solid: real vs real; dotted: unadapted base", fontsize=9)
    axes[1].legend(fontsize=7, ncol=2)
    axes[1].axhline(0.20, color="grey", ls="--", lw=1)
    axes[1].text(axes[1].get_xlim()[0], 0.205, " WER 0.20 (issue 13's bar)", fontsize=7, color="grey")
    fig.suptitle(textwrap.fill(label or "few-shot cloning cost axis", 150), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--voice", action="append", default=[], metavar="NAME=DIR", help="refs.jsonl + held.jsonl")
    parser.add_argument("--manifest", type=Path, help="one voice's references (with --held-out)")
    parser.add_argument("--held-out", type=Path, help="same speaker, other sentences")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 30, 60, 300])
    parser.add_argument("--variants", nargs="+", default=list(ALL), choices=ALL)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--instant-base", help="an instant base (tts train-instant) for the instant variant; "
                        "scored on the voices it was not trained on")  # fmt: skip
    parser.add_argument("--language", default="en")
    parser.add_argument("--whisper", default="openai/whisper-base")
    parser.add_argument("--verifier", default="resemblyzer")
    parser.add_argument("--label", default="", help="e.g. 'SYNTHETIC references' when they are")
    parser.add_argument("--report", type=Path, default=HERE / "clone_cost.md")
    parser.add_argument("--cache", type=Path, help="per-row results, for resuming (default: beside the report)")
    parser.add_argument("--progress", action="store_true", help="progress bars for each clone")
    parser.add_argument("--render-only", action="store_true", help="table and plot from the cache; runs nothing")
    args = parser.parse_args(argv)
    args.voices = [
        (n, (Path(d) / "refs.jsonl", Path(d) / "held.jsonl")) for n, d in (v.split("=", 1) for v in args.voice)
    ]
    if args.manifest:
        args.voices.append(("target", (args.manifest, args.held_out)))
    if not args.voices:
        parser.error("give --voice NAME=DIR (repeatable) or --manifest with --held-out")
    args.cache = args.cache or args.report.with_suffix(".jsonl")
    rows = run(args)
    args.report.write_text(render(rows, args), encoding="utf-8")
    plot(rows, args.report.with_suffix(".png"), args.label)
    print(f"wrote {args.report} and {args.report.with_suffix('.png')}")


if __name__ == "__main__":
    main()
