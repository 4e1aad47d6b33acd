"""Build the SYNTHETIC unseen-language corpus of bench/cpt.py (a miniature of the Ainu experiment).

    apt-get install -y espeak-ng sox
    python data/unseen_lang_demo/make_corpus.py [--out DIR] [--scale 1.0]

Four *source* languages (English, German, French, Polish: untranscribed, to pretrain a small
wav2vec 2.0 from scratch) and one *target* language the source set lacks: Maori, a Polynesian
language of CV syllables, five vowels with phonemic length and ten consonants, far from the
clusters and reduced vowels of the four sources and, like Ainu, unrelated to any of them. The
target comes as untranscribed audio (continued pretraining; voices and sentences of its own) and
as small transcribed train / dev / test splits, each with voices no other split has.

Each utterance: espeak-ng (language + voice variant, pitch, speed) -> sox: 16 kHz, a pitch shift
of the voice's cents, optional reverb -> white noise at the voice's SNR -> Ogg Vorbis.
Deterministic. The corpus is not committed (about 30 MB); this script remakes it in minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from words import maori_sentences, source_sentence  # noqa: E402

RATE = 16_000
TARGET = "mi"


@dataclass(frozen=True)
class Voice:
    id: str
    split: str  # source, untranscribed, train, dev, test
    language: str  # espeak-ng language
    variant: str
    pitch: int
    speed: int
    cents: int
    reverb: int
    snr_db: float
    count: int  # utterances at scale 1


def _voices() -> list[Voice]:
    out = []
    variants = ["m1", "f2", "m3", "f4"]
    for li, lang in enumerate(["en-us", "de", "fr-fr", "pl"]):
        for vi, var in enumerate(variants):
            out.append(Voice(f"{lang[:2]}{vi + 1}", "source", lang, var, 40 + 12 * vi, 150 + 8 * li, -150 + 90 * vi,
                             10 * (vi % 2), 25 + vi, 60))  # fmt: skip
    target = [  # (id, split, variant, pitch, speed, cents, reverb, snr, count)
        ("u1", "untranscribed", "m2", 45, 145, 0, 0, 28, 100),
        ("u2", "untranscribed", "f1", 60, 150, 100, 10, 26, 100),
        ("u3", "untranscribed", "m4", 35, 160, -120, 0, 27, 100),
        ("u4", "untranscribed", "f3", 70, 140, 150, 20, 25, 100),
        ("u5", "untranscribed", "m5", 50, 155, -60, 0, 29, 100),
        ("u6", "untranscribed", "f5", 65, 145, 80, 10, 24, 100),
        ("a1", "train", "m6", 42, 150, -40, 0, 27, 100),
        ("a2", "train", "Annie", 62, 145, 60, 10, 26, 100),
        ("a3", "train", "m7", 38, 155, -90, 0, 28, 100),
        ("d1", "dev", "belinda", 58, 150, 40, 0, 27, 30),
        ("d2", "dev", "Mike", 44, 150, -30, 10, 26, 30),
        ("t1", "test", "linda", 60, 145, 70, 0, 27, 50),
        ("t2", "test", "Andy", 40, 155, -70, 10, 26, 50),
    ]  # fmt: skip
    out += [Voice(i, s, TARGET, v, p, sp, c, r, n, k) for i, s, v, p, sp, c, r, n, k in target]
    return out


VOICES = _voices()


def plan(scale: float) -> list[tuple[str, Voice, str]]:
    """(utterance id, voice, text); target sentences never repeat across splits."""
    items, used = [], set()
    for v in VOICES:
        n = max(1, round(v.count * scale))
        if v.split == "source":
            rng = random.Random(v.id)
            texts = [source_sentence(rng, v.language) for _ in range(n)]
        else:
            texts = maori_sentences(seed=sum(map(ord, v.id)), n=n, exclude=used)
            used.update(texts)
        items += [(f"{v.id}_{i:03d}", v, t) for i, t in enumerate(texts)]
    return items


def synthesize(text: str, v: Voice, seed: int, out: Path, tmp: Path) -> float:
    raw, shifted = tmp / f"{out.stem}.raw.wav", tmp / f"{out.stem}.wav"
    subprocess.run(["espeak-ng", "-v", f"{v.language}+{v.variant}", "-p", str(v.pitch), "-s", str(v.speed), "-w",
                    str(raw), text], check=True, capture_output=True)  # fmt: skip
    effects = ["gain", "-6", "pitch", str(v.cents)] + (["reverb", str(v.reverb)] if v.reverb else [])
    fmt = ["-r", str(RATE), "-c", "1", "-e", "floating-point", "-b", "32"]
    subprocess.run(["sox", "-G", str(raw), *fmt, str(shifted), *effects, "rate", str(RATE)], check=True)
    audio, rate = sf.read(shifted, dtype="float64")
    rng = np.random.default_rng(seed)
    audio = audio + rng.standard_normal(audio.size) * np.sqrt(np.mean(audio**2) / 10 ** (v.snr_db / 10))
    audio = 0.7 * audio / np.abs(audio).max()
    sf.write(out, audio.astype(np.float32), RATE, format="OGG", subtype="VORBIS")
    return round(audio.size / RATE, 3)


def build(out: Path, scale: float = 1.0) -> dict[str, Path]:
    """Make the corpus under ``out`` (audio/ and one manifest per split); returns split -> manifest."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"make_corpus: {tool} not found; apt-get install -y espeak-ng sox")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    items = plan(scale)

    def make(it: tuple[str, Voice, str]) -> float:
        path = out / "audio" / f"{it[0]}.ogg"
        if path.is_file():
            return round(sf.info(path).frames / RATE, 3)
        return synthesize(it[2], it[1], int.from_bytes(it[0].encode(), "little") % 2**32, path, Path(tmp))

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        durations = list(pool.map(make, items))
    rows: dict[str, list[dict]] = {}
    for (uid, v, text), dur in zip(items, durations, strict=True):
        row = {"audio_filepath": f"audio/{uid}.ogg", "duration": dur, "language": v.language, "speaker": v.id}
        if v.split not in ("source", "untranscribed"):
            row["text"] = text
        rows.setdefault(v.split, []).append(row)
    manifests = {}
    for split, lines in rows.items():
        manifests[split] = out / f"{split}.jsonl"
        manifests[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), "utf-8")
        print(f"{split}: {len(lines)} utterances, {sum(r['duration'] for r in lines) / 60:.1f} min (SYNTHETIC)")
    return manifests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where audio/ and the manifests go (default: here)")
    parser.add_argument("--scale", type=float, default=1.0, help="utterances per voice x this (tests use 0.05)")
    args = parser.parse_args()
    build(args.out, args.scale)


if __name__ == "__main__":
    main()
