"""The cost axis of few-shot speaker cloning: speaker similarity and intelligibility against
seconds of reference audio and bytes per speaker, for three variants:

- embedding:  only a new speaker vector (the base's speaker table, from its mean);
- usat:       the vector plus USAT's flow and phoneme adapters (speechpeft's default);
- full:       the vector plus the flow, duration predictor and text-encoder attention fine-tuned whole.

    python bench/clone_cost.py --base PATH_OR_ID --references DIR --manifest refs.jsonl \\
        --held-out held.jsonl --seconds 10 30 60 300 --language en

The references (a manifest of audio_filepath + text, one speaker) are taken in order until each
budget of seconds is filled. The held-out manifest (same speaker, other sentences) gives the
texts to synthesize and the real recordings the similarity is measured against. Writes a
markdown table and a plot (default bench/clone_cost.md / .png).

No pretrained multi-speaker VITS can be downloaded on this project's machines, so no real
figures are committed yet; tests/unit/test_clone_cost.py runs this script on a tiny random
model to keep it working.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from speechpeft.data import load_audio  # noqa: E402
from speechpeft.eval.tts import intelligibility, speaker_bytes, speaker_similarity  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.models.speaker_encoder import load_speaker_encoder  # noqa: E402
from speechpeft.models.vits import load_vits  # noqa: E402
from speechpeft.train.clone import VARIANTS, CloneOptions, Reference, clone, load_speaker  # noqa: E402


def read_manifest(path: Path) -> list[tuple[Path, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [((path.parent / r["audio_filepath"]).resolve(), r["text"]) for r in rows]


def budget(rows: list[tuple[Path, str]], seconds: float, rate: int) -> list[Reference]:
    out, total = [], 0.0
    for audio, text in rows:
        if total >= seconds:
            break
        out.append(Reference(audio, text, str(audio)))
        total += len(load_audio(audio, rate)) / rate
    return out


def run(args: argparse.Namespace) -> list[dict]:
    train_rows, held_rows = read_manifest(args.manifest), read_manifest(args.held_out)
    encoder = load_speaker_encoder(args.verifier)
    whisper = load_whisper(args.whisper, device="cpu")
    held_audio = [load_audio(a, encoder.sampling_rate) for a, _ in held_rows]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            for variant in args.variants:
                host = load_vits(args.base)
                refs = budget(train_rows, seconds, host.sampling_rate)
                out = Path(tmp) / f"{variant}-{seconds:g}"
                opts = CloneOptions(name=out.name, output=out, steps=args.steps, variant=variant, progress=False)
                report = clone(host, refs, opts)
                host = load_vits(args.base)  # synthesize from what was saved, as a user would
                speaker = load_speaker(host, out)
                waves = [host.synthesize_ids(host.tokenize([t])[0], speaker) for _, t in held_rows]
                sim = speaker_similarity(encoder, waves, host.sampling_rate, held_audio, encoder.sampling_rate)
                asr = intelligibility(whisper, waves, host.sampling_rate, [t for _, t in held_rows], args.language)
                rows.append({
                    "variant": variant, "budget_seconds": seconds, "reference_seconds": report["reference_seconds"],
                    "similarity": sim["cosine"], "verifier": sim["verifier"], "wer": asr["rate"],
                    "trainable_parameters": report["trainable_parameters"], "bytes": speaker_bytes(out),
                    "held_out_loss": report["held_out_loss"],
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Few-shot speaker cloning: similarity and intelligibility vs reference seconds and bytes",
        "",
        f"Made by `python bench/clone_cost.py` on {dt.date.today().isoformat()}: base `{args.base}`, "
        f"{args.steps} steps per clone, verifier `{rows[0]['verifier'] if rows else '?'}`, ASR `{args.whisper}`.",
        *([f"**{args.label}**", ""] if args.label else [""]),
        "| variant | reference s | similarity | WER | trainable params | bytes | held-out loss before -> after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = r["held_out_loss"]
        lines.append(
            f"| {r['variant']} | {r['reference_seconds']:g} | {r['similarity']:.3f} | {r['wer']:.3f} | "
            f"{r['trainable_parameters']:,} | {r['bytes']:,} | {loss['before']:.3f} -> {loss['after']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        x = [r["reference_seconds"] for r in mine]
        axes[0].plot(x, [r["similarity"] for r in mine], marker="o", label=variant)
        axes[1].plot(x, [r["wer"] for r in mine], marker="o", label=variant)
    for ax, name in zip(axes, ("speaker similarity (cosine)", "WER of Whisper on the synthesis"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("seconds of reference audio")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(label or "few-shot cloning cost axis")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--manifest", type=Path, required=True, help="the target speaker's references")
    parser.add_argument("--held-out", type=Path, required=True, help="same speaker, other sentences")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 30, 60, 300])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--language", default="en")
    parser.add_argument("--whisper", default="openai/whisper-base")
    parser.add_argument("--verifier", default="resemblyzer")
    parser.add_argument("--label", default="", help="e.g. 'SYNTHETIC references' when they are")
    parser.add_argument("--report", type=Path, default=HERE / "clone_cost.md")
    args = parser.parse_args(argv)
    rows = run(args)
    args.report.write_text(render(rows, args), encoding="utf-8")
    plot(rows, args.report.with_suffix(".png"), args.label)
    print(f"wrote {args.report} and {args.report.with_suffix('.png')}")


if __name__ == "__main__":
    main()
