"""Build the SYNTHETIC multilingual corpus of bench/master_asr.py (Master-ASR on whisper-base).

    apt-get install -y espeak-ng sox
    python data/multilingual_demo/make_corpus.py [--out DIR] [--scale 1.0]

Five stage-1 languages Whisper knows (English, German, French, Spanish, Italian) and one more for
stage 2 (Polish, about 10 minutes of training audio). Each language has two training voices and
one voice of its own for dev and one for test (espeak-ng variants, pitches, speeds, pitch shifts,
reverb and noise, as in data/unseen_lang_demo). The "sentences" are seeded strings of 5 to 8
common words: what is learnt is to read espeak-ng's voices; no sentence is in two splits.

Manifests carry Whisper's language code per utterance: train/dev/test.jsonl (stage 1) and
new_train/new_dev/new_test.jsonl (stage 2). Deterministic; not committed (about 15 MB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent


def _sibling(name: str, file: str):
    """A module of data/unseen_lang_demo by path (its names clash with this folder's)."""
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "unseen_lang_demo" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_words = _sibling("unseen_lang_words", "words.py")
sys.modules["words"] = _words  # what unseen_lang_demo/make_corpus.py imports
_voice = _sibling("unseen_lang_make_corpus", "make_corpus.py")
RATE, Voice, synthesize, SOURCE_WORDS = _voice.RATE, _voice.Voice, _voice.synthesize, _words.SOURCE_WORDS

WORDS = {
    **SOURCE_WORDS,
    "es": (
        "la casa mañana río pequeño verde ventana mesa agua gente siempre porque través niños jardín"
        " invierno amarillo cocina pregunta respuesta entre montaña adelante noche amable hermano"
        " puente calle rápido naranja trueno plata tiempo cuadro carta médico mercado estación"
        " cumpleaños vacaciones ayer pronto juntos aveces feliz mucho todavía pájaro"
    ).split(),
    "it": (
        "la casa mattina fiume piccolo verde finestra tavolo acqua gente sempre perché attraverso"
        " bambini giardino inverno giallo cucina domanda risposta tra montagna avanti sera gentile"
        " fratello pensiero ponte strada veloce arancia tuono argento tempo quadro lettera medico"
        " mercato stazione compleanno vacanze ieri domani insieme spesso felice molto già uccello"
    ).split(),
}
STAGE1 = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}  # Whisper code -> espeak-ng
NEW = {"pl": "pl"}
# (variant, pitch, speed, cents, reverb, snr); two for train, then dev, then test
VOICE_KINDS = [("m1", 45, 150, -60, 0, 27), ("f2", 62, 145, 80, 10, 26), ("m3", 40, 160, -120, 10, 25),
               ("f4", 66, 150, 120, 0, 28)]  # fmt: skip


def _voices(scale: float) -> list[tuple[str, str, Voice]]:
    """(manifest prefix, Whisper code, voice) for every voice of every language."""
    out = []
    for prefix, table, counts in (("", STAGE1, (40, 40, 10, 20)), ("new_", NEW, (85, 85, 10, 20))):
        for li, (code, espeak) in enumerate(table.items()):
            for vi, ((var, pitch, speed, cents, reverb, snr), split, n) in enumerate(
                zip(VOICE_KINDS, ("train", "train", "dev", "test"), counts, strict=True)
            ):
                voice = Voice(f"{code}{vi + 1}", split, espeak, var, pitch + 2 * li, speed + 3 * li, cents, reverb,
                              snr, max(1, round(n * scale)))  # fmt: skip
                out.append((prefix, code, voice))
    return out


def sentence(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(5, 8)))


def build(out: Path, scale: float = 1.0) -> dict[str, Path]:
    """Make the corpus under ``out``; returns manifest name -> path."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"make_corpus: {tool} not found; apt-get install -y espeak-ng sox")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    items, used = [], set()
    for prefix, code, v in _voices(scale):
        rng = random.Random(f"{v.id}/{v.split}")
        for i in range(v.count):
            text = sentence(rng, WORDS[v.language])
            while text in used:
                text = sentence(rng, WORDS[v.language])
            used.add(text)
            items.append((f"{prefix}{v.split}", code, f"{v.id}_{v.split}_{i:03d}", v, text))

    def make(it) -> float:
        path = out / "audio" / f"{it[2]}.ogg"
        if path.is_file():
            return round(sf.info(path).frames / RATE, 3)
        return synthesize(it[4], it[3], int.from_bytes(it[2].encode()[:8], "little") % 2**32, path, Path(tmp))

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        durations = list(pool.map(make, items))
    rows: dict[str, list[dict]] = {}
    for (name, code, uid, v, text), dur in zip(items, durations, strict=True):
        rows.setdefault(name, []).append({"audio_filepath": f"audio/{uid}.ogg", "text": text, "duration": dur,
                                          "language": code, "speaker": v.id})  # fmt: skip
    manifests = {}
    for name, lines in rows.items():
        manifests[name] = out / f"{name}.jsonl"
        tmp_path = manifests[name].with_suffix(".jsonl.tmp")
        tmp_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), "utf-8")
        tmp_path.replace(manifests[name])
        print(f"{name}: {len(lines)} utterances, {sum(r['duration'] for r in lines) / 60:.1f} min (SYNTHETIC)")
    return manifests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where audio/ and the manifests go (default: here)")
    parser.add_argument("--scale", type=float, default=1.0, help="utterances per voice x this (tests use 0.1)")
    args = parser.parse_args()
    build(args.out, args.scale)


if __name__ == "__main__":
    main()
