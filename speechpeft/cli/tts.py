"""``speechpeft clone`` and ``speechpeft synthesize``."""

from __future__ import annotations

import argparse
from pathlib import Path

AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clone", help="few-shot speaker cloning of a VITS model with USAT adapters")
    p.add_argument("--base", required=True, help="VITS hub id or path")
    p.add_argument("--reference", nargs="+", required=True, metavar="FILE_OR_DIR", help="reference audio")
    p.add_argument("--manifest", help="JSONL with audio_filepath and text; default: transcribe with Whisper")
    p.add_argument("--whisper", default="openai/whisper-base", help="model for transcripts without --manifest")
    p.add_argument("--language", default="en", help="language of the references (for Whisper)")
    p.add_argument("--name", required=True, help="the speaker's name")
    p.add_argument("-o", "--output", required=True, help="speaker directory to write")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument(
        "--variant",
        default="usat",
        choices=["usat", "embedding", "full"],
        help="usat: speaker vector + USAT adapters (default); embedding: the vector only; "
        "full: fine-tune the flow, duration predictor and text-encoder attention whole",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_clone)

    s = sub.add_parser("synthesize", help="speak text with a VITS model, optionally as a cloned speaker")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (model loading included)")
    s.add_argument("text", help="the text, or a .txt file with one sentence per line (numbered wavs)")
    s.add_argument("--base", required=True, help="VITS hub id or path")
    s.add_argument("--speaker", help="speaker directory from `speechpeft clone`")
    s.add_argument("--speaker-id", type=int, help="a row of a multi-speaker base's table (without --speaker)")
    s.add_argument("-o", "--output", required=True, help="out.wav (with a .txt input: out_001.wav, ...)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=run_synthesize)


def run_clone(args: argparse.Namespace) -> int:
    from ..errors import SpeechPeftError
    from ..models.vits import load_vits
    from ..train.clone import CloneOptions, Reference, clone

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SpeechPeftError(f"'{out}' exists; pass --overwrite to replace it")
    files = _reference_files(args.reference)
    texts = _manifest_texts(args.manifest) if args.manifest else _whisper_texts(files, args.whisper, args.language)
    refs = []
    for f in files:
        if f.resolve() not in texts:
            raise SpeechPeftError(f"{f}: no transcript for this reference in {args.manifest}")
        refs.append(Reference(f, texts[f.resolve()], str(f)))
    host = load_vits(args.base)
    opts = CloneOptions(
        name=args.name, output=out, steps=args.steps, variant=args.variant, progress=not args.no_progress
    )
    report = clone(host, refs, opts)
    loss = report["held_out_loss"]
    print(
        f"cloned {args.name!r} from {report['references']} references ({report['reference_seconds']:g} s) in "
        f"{report['wall_seconds']:g} s: held-out loss {loss['before']:.3f} -> {loss['after']:.3f}; "
        f"{report['trainable_parameters']:,} parameters ({100 * report['fraction_of_base']:.2f} % of the base), "
        f"{report['bytes']:,} bytes in {out}"
    )
    return 0


def run_synthesize(args: argparse.Namespace) -> int:
    import soundfile as sf

    from ..errors import SpeechPeftError
    from ..fs import atomic_write
    from ..models.vits import load_vits
    from ..train.clone import load_speaker

    host = load_vits(args.base)
    speaker = args.speaker_id
    if args.speaker:
        speaker = load_speaker(host, args.speaker)
    text_path = Path(args.text)
    numbered = text_path.suffix == ".txt" and text_path.is_file()
    if numbered:
        try:
            content = text_path.read_text("utf-8-sig")
        except UnicodeDecodeError as e:
            byte = f"byte {e.object[e.start]:#04x} at offset {e.start}"
            raise SpeechPeftError(f"{text_path}: not UTF-8 text ({byte})") from None
        lines = [(f"{text_path}:{i}", t.strip()) for i, t in enumerate(content.splitlines(), 1)]
        lines = [(w, t) for w, t in lines if t]
        if not lines:
            raise SpeechPeftError(f"{text_path}: no sentences")
    else:
        lines = [("text", args.text)]
    out = Path(args.output)
    targets = (
        [out]
        if len(lines) == 1
        else [out.with_name(f"{out.stem}_{i:03d}{out.suffix}") for i in range(1, 1 + len(lines))]
    )
    for (where, text), target in zip(lines, targets, strict=True):
        ids, _ = host.tokenize([text], [where])
        wave = host.synthesize_ids(ids, speaker, seed=args.seed)
        atomic_write(target, lambda tmp, w=wave: sf.write(tmp, w, host.sampling_rate, format="WAV"))
        print(f"wrote {target} ({len(wave) / host.sampling_rate:.2f} s at {host.sampling_rate} Hz)")
    return 0


def _reference_files(items: list[str]) -> list[Path]:
    from ..errors import SpeechPeftError

    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO)
        elif p.exists():
            files.append(p)
        else:
            raise SpeechPeftError(f"reference '{p}' does not exist")
    return files


def _manifest_texts(manifest: str) -> dict[Path, str]:
    from ..data.manifest import json_object, jsonl_lines
    from ..errors import SpeechPeftError

    path, texts = Path(manifest), {}
    for line, where in jsonl_lines(path):
        row = json_object(line, where)
        if not isinstance(row.get("audio_filepath"), str) or not isinstance(row.get("text"), str):
            raise SpeechPeftError(f"{where}: needs string fields 'audio_filepath' and 'text'")
        audio, text = Path(row["audio_filepath"]), row["text"]
        texts[(audio if audio.is_absolute() else path.parent / audio).resolve()] = str(text)
    return texts


def _whisper_texts(files: list[Path], model: str, language: str) -> dict[Path, str]:
    from ..data import load_audio
    from ..models import load_whisper

    host = load_whisper(model)
    arrays = [load_audio(f, 16_000, str(f)) for f in files]
    return {f.resolve(): t for f, t in zip(files, host.transcribe(arrays, language=language), strict=True)}
