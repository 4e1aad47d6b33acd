"""Why do USAT clones lose intelligibility? A dev-only study on the completed joe base.

bench/clone_cost.md scores clones on each voice's ``held.jsonl`` (the test). This study never
reads it: its dev set is the last ``--dev`` sentences of ``refs.jsonl``, which no budget up to
``--seconds`` reaches (checked). For every voice it measures, on dev:

- resynthesis: the base decoder given the posterior encoder's mean z of the real dev audio, i.e.
  the target the prior side is trained to reproduce. Its WER says whether that target is
  intelligible at all;
- each clone configuration, synthesized several ways from the same saved speaker:
  ``ns=S`` (the prior's noise scale at inference; the voice's default is 0.667) and
  ``base-durations`` (the clone's adapters, except the duration predictor's).

    python bench/clone_study.py --base runs/joe-completed --voice kal=data/voices_demo/kal ...
    python bench/clone_study.py --render                   # the table from the cache

Results are kept in bench/clone_study.jsonl (one row per voice, configuration and synthesis mode).
The speech is SYNTHETIC (festival voices of real speakers; the LibriVox reader is real).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from speechpeft.adapters.usat import USATAdapter  # noqa: E402
from speechpeft.data import load_audio  # noqa: E402
from speechpeft.data.audio import audio_duration  # noqa: E402
from speechpeft.data.manifest import read_manifest  # noqa: E402
from speechpeft.eval.tts import intelligibility, speaker_similarity  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.models.speaker_encoder import load_speaker_encoder  # noqa: E402
from speechpeft.models.vits_build import load_vits  # noqa: E402
from speechpeft.train.clone import CloneOptions, Reference, clone, load_speaker  # noqa: E402

CACHE = HERE / "clone_study.jsonl"
REPORT = HERE / "clone_study.md"
# name -> (what it tests, CloneOptions overrides)
CONFIGS: dict[str, tuple[str, dict]] = {
    "usat": ("the default: USAT flow + phoneme adapters, KL + duration", {"variant": "usat"}),
    "usat-decoder": ("+ decoder adapters by mel L1", {"variant": "usat-decoder"}),
    "usat-posterior": ("+ posterior-encoder adapters, same mel L1", {"variant": "usat-posterior"}),
}
MODES = {"ns=0.667": {}, "ns=0.333": {"noise_scale": 0.333}, "ns=0": {"noise_scale": 0.0}, "base-durations": {}}


def take(rows, seconds):
    out, total = [], 0.0
    for u in rows:
        if total >= seconds:
            break
        out.append(u)
        total += u.duration or audio_duration(u.audio, u.where)
    return out


def score(encoder, whisper, waves, rate, texts, dev_audio) -> dict:
    sim = speaker_similarity(encoder, waves, rate, dev_audio, encoder.sampling_rate)
    asr = intelligibility(whisper, waves, rate, texts, "en")
    return {"similarity": round(sim["cosine"], 4), "wer": round(asr["rate"], 4), "hypotheses": asr["hypotheses"]}


def synthesize(host, texts, speaker, mode) -> list:
    if mode == "base-durations":  # the duration predictor's adapters contribute nothing
        for name, m in host.model.named_modules():
            if isinstance(m, USATAdapter) and name.startswith("duration_predictor"):
                torch.nn.init.zeros_(m.up.weight)
                torch.nn.init.zeros_(m.up.bias)
    waves = []
    for t in texts:
        ids, _ = host.tokenize([t])
        out = host.infer(ids, speaker=speaker, seed=0, **MODES[mode])
        waves.append(out.waveform[0, : int(out.samples[0])].float().cpu().numpy())
    return waves


def run(args) -> None:
    done = set()
    if CACHE.is_file():
        for line in CACHE.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done.add((r["voice"], r["config"], r["mode"], r.get("steps")))
    encoder = load_speaker_encoder("resemblyzer")
    whisper = load_whisper("openai/whisper-base", device="cpu")
    for voice, folder in (v.split("=", 1) for v in args.voice):
        refs = read_manifest(Path(folder) / "refs.jsonl", require_duration=False)
        train, dev = take(refs, args.seconds), refs[-args.dev :]
        if len(train) + len(dev) > len(refs):
            sys.exit(f"{voice}: {len(refs)} references cannot hold {args.seconds} s of training and {args.dev} dev")
        texts = [u.text for u in dev]
        dev_audio = [load_audio(u.audio, encoder.sampling_rate) for u in dev]
        if (voice, "resynthesis", "posterior mean", None) not in done:
            host = load_vits(args.base)
            waves = []
            for u in dev:
                spec, frames = host.spectrogram([load_audio(u.audio, host.sampling_rate)])
                mean, _ = host.posterior(spec, frames)
                waves.append(host.model.decoder(mean, None)[0, 0].detach().numpy())
            row = {"voice": voice, "config": "resynthesis", "mode": "posterior mean", "steps": None}
            _keep({**row, **score(encoder, whisper, waves, host.sampling_rate, texts, dev_audio)})
            host = load_vits(args.base)
            row = {"voice": voice, "config": "unadapted", "mode": "ns=0.667", "steps": None}
            _keep({**row, **score(encoder, whisper, synthesize(host, texts, None, "ns=0.667"), host.sampling_rate,
                                  texts, dev_audio)})  # fmt: skip
        for name in args.configs:
            if all((voice, name, m, args.steps) in done for m in MODES):
                continue
            _, overrides = CONFIGS[name]
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "speaker"
                opts = CloneOptions(name=voice, output=out, steps=args.steps, progress=False, **overrides)
                report = clone(load_vits(args.base), [Reference(u.audio, u.text, u.where) for u in train], opts)
                for mode in MODES:
                    host = load_vits(args.base)
                    speaker = load_speaker(host, out)
                    row = {"voice": voice, "config": name, "mode": mode, "steps": args.steps,
                           "train_seconds": report["wall_seconds"],
                           "held_out_loss": report["held_out_loss"]}  # fmt: skip
                    _keep({**row, **score(encoder, whisper, synthesize(host, texts, speaker, mode),
                                          host.sampling_rate, texts, dev_audio)})  # fmt: skip


def _keep(row: dict) -> None:
    print(json.dumps({k: v for k, v in row.items() if k != "hypotheses"}), flush=True)
    with CACHE.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def render() -> None:
    rows = [json.loads(line) for line in CACHE.read_text(encoding="utf-8").splitlines()]
    lines = [
        "# Clone intelligibility study (dev only)",
        "",
        f"Rendered by `python bench/clone_study.py --render` on {dt.date.today().isoformat()} from "
        "bench/clone_study.jsonl. Dev: the last sentences of each voice's refs.jsonl, never trained on; "
        "held.jsonl (bench/clone_cost.md's test) is not read. WER by openai/whisper-base, similarity by "
        "resemblyzer against the dev audio. Festival voices: real speakers, SYNTHETIC speech.",
        "",
        "Configurations no longer in the code: **usat-synth** (2026-12-03, commit 5b7aec6, reverted): the "
        "usat-decoder adapters trained by mel L1 through the synthesis path (the prior along the MAS alignment, "
        "back through the flow) with the duration loss and no KL. It was removed because it made kal "
        "unintelligible (dev WER 1.0; 0.69 with the base durations).",
        "",
        "| voice | configuration | synthesis | steps | dev similarity | dev WER | held-out loss before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = r.get("held_out_loss")
        loss = f"{loss['before']:g} → {loss['after']:g}" if loss else "–"
        lines.append(f"| {r['voice']} | {r['config']} | {r['mode']} | {r['steps'] or '–'} | {r['similarity']:.3f} | "
                     f"{r['wer']:.3f} | {loss} |")  # fmt: skip
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {REPORT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="runs/joe-completed")
    p.add_argument("--voice", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--dev", type=int, default=10)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--render", action="store_true")
    args = p.parse_args()
    if not args.render:
        run(args)
    render()


if __name__ == "__main__":
    main()
