"""``speechpeft clone`` and ``speechpeft synthesize``."""

from __future__ import annotations

import argparse
from pathlib import Path

AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clone", help="few-shot speaker cloning of a VITS model with USAT adapters")
    p.add_argument("--base", required=True, help="VITS hub id or path")
    p.add_argument(
        "--reference", nargs="+", metavar="FILE_OR_DIR", help="reference audio (folders are searched recursively)"
    )
    p.add_argument(
        "--manifest",
        help="JSONL with audio_filepath and text: alone, it lists the references; with --reference, it gives "
        "their transcripts. Without it, Whisper transcribes the references",
    )
    p.add_argument("--whisper", default="openai/whisper-base", help="model for transcripts without --manifest")
    p.add_argument("--language", default="en", help="language of the references (for Whisper)")
    p.add_argument("--name", required=True, help="the speaker's name")
    p.add_argument("-o", "--output", required=True, help="speaker directory to write")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument(
        "--variant",
        default="usat",
        choices=["usat", "instant", "embedding", "usat-decoder", "usat-posterior", "full"],
        help="usat: speaker vector + USAT adapters (default); instant: no training, the speaker input of an "
        "instant base (tts train-instant) from the references' verifier embedding; embedding: the vector only; "
        "usat-decoder: usat plus adapters in the decoder, trained by mel reconstruction (for a single-speaker base, "
        "whose decoder knows one timbre); usat-posterior: usat-decoder plus posterior-encoder adapters, so that the "
        "target's latents become ones the decoder renders (a base completed on its own voice only); "
        "full: fine-tune the flow, duration predictor and text-encoder attention "
        "whole",
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

    t = sub.add_parser("tts", help="VITS voice maintenance")
    tsub = t.add_subparsers(dest="tts_command", required=True, metavar="COMMAND")
    c = tsub.add_parser(
        "complete-base",
        help="train the posterior side an inference-only voice lacks (needed by clone), from its own speech",
    )
    c.add_argument("--base", required=True, help="VITS hub id or path (e.g. a Piper voice converted to transformers)")
    c.add_argument("-o", "--output", required=True, help="folder for the completed voice (save_pretrained layout)")
    c.add_argument(
        "--texts", help="UTF-8 file, one sentence per line, in the voice's language (default: built-in English)"
    )
    c.add_argument("--sentences", type=int, default=240, help="teacher sentences the voice reads")
    c.add_argument("--held-out", type=int, default=12, help="more sentences, only for the before/after report")
    c.add_argument("--steps", type=int, default=2000)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument(
        "--augment", type=int, default=0, metavar="N",
        help="N resampled copies of each teacher sentence (pitch and formants moved together), so the posterior "
        "reads other voices' speech as latents this voice can render; start --base from a completed voice to refine it",
    )  # fmt: skip
    c.add_argument("--shift", type=float, default=0.25, help="resampling factors within [1/(1+SHIFT), 1+SHIFT]")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=run_complete_base)
    i = tsub.add_parser(
        "train-instant",
        help="give a completed single-speaker voice a speaker input, trained on several voices, for clone --variant "
        "instant (a new voice with no training step)",
    )
    i.add_argument("--base", required=True, help="a completed single-speaker VITS voice (tts complete-base)")
    i.add_argument(
        "--voice", action="append", required=True, metavar="NAME=MANIFEST",
        help="a training voice: JSONL with audio_filepath and text (repeat; at least 2)",
    )  # fmt: skip
    i.add_argument("-o", "--output", required=True, help="folder for the instant base")
    i.add_argument("--steps", type=int, default=400)
    i.add_argument("--width", type=int, default=64, help="size of the speaker conditioning vector")
    i.add_argument("--lr", type=float, default=1e-3)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=run_train_instant)


def run_clone(args: argparse.Namespace) -> int:
    from ..data.manifest import read_manifest
    from ..errors import SpeechPeftError
    from ..models.vits_build import load_vits
    from ..train.clone import CloneOptions, Reference, clone

    _one_process("clone")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SpeechPeftError(f"'{out}' exists; pass --overwrite to replace it")
    if not args.reference and not args.manifest:
        raise SpeechPeftError("give the references: --reference FILE_OR_DIR..., or --manifest M (or both)")
    listed = read_manifest(args.manifest, require_duration=False) if args.manifest else []
    if args.reference:
        files = _reference_files(args.reference)
        texts = {u.audio: (u.text, u.where) for u in listed}
        if not listed and args.variant == "instant":  # no transcripts needed: only the voice is used
            texts = {f.resolve(): ("", str(f)) for f in files}
        elif not listed:
            texts = {f: (t, str(f)) for f, t in _whisper_texts(files, args.whisper, args.language).items()}
        refs = []
        for f in files:
            if f.resolve() not in texts:
                raise SpeechPeftError(f"{f}: no transcript for this reference in {args.manifest}")
            text, _ = texts[f.resolve()]
            refs.append(Reference(f, text, str(f)))
    else:
        refs = [Reference(u.audio, u.text, u.where) for u in listed]
    host = load_vits(args.base)
    opts = CloneOptions(
        name=args.name, output=out, steps=args.steps, variant=args.variant, progress=not args.no_progress
    )
    report = clone(host, refs, opts)
    loss = report["held_out_loss"]
    loss = f"held-out loss {loss['before']:.3f} -> {loss['after']:.3f}" if loss else "no training step"
    print(
        f"cloned {args.name!r} from {report['references']} references ({report['reference_seconds']:g} s) in "
        f"{report['wall_seconds']:g} s: {loss}; "
        f"{report['trainable_parameters']:,} parameters ({100 * report['fraction_of_base']:.2f} % of the base), "
        f"{report['bytes']:,} bytes in {out}"
    )
    return 0


def run_synthesize(args: argparse.Namespace) -> int:
    import soundfile as sf

    from ..fs import atomic_write
    from ..models.vits_build import load_vits
    from ..train.clone import load_speaker

    host = load_vits(args.base)
    speaker = args.speaker_id
    if args.speaker:
        speaker = load_speaker(host, args.speaker)
    text_path = Path(args.text)
    numbered = text_path.suffix == ".txt" and text_path.is_file()
    if numbered:
        lines = _text_lines(text_path)
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


def _resampled_note(before: dict, after: dict) -> str:
    key = "z_relative_error_resampled"
    return f" (resampled copies {before[key]:.3f} -> {after[key]:.3f})" if key in after else ""


def run_complete_base(args: argparse.Namespace) -> int:
    from ..data.english_sentences import english_sentences
    from ..errors import SpeechPeftError
    from ..models.vits_build import load_vits
    from ..train.complete_base import CompleteOptions, complete_base

    _one_process("tts complete-base")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SpeechPeftError(f"'{out}' exists; pass --overwrite to replace it")
    opts = CompleteOptions(
        output=out, sentences=args.sentences, held_out=args.held_out, steps=args.steps,
        batch_size=args.batch_size, augment=args.augment, shift=args.shift, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    host = load_vits(args.base)
    if args.texts:
        texts = [t for _, t in _text_lines(Path(args.texts))]
    elif getattr(host.front, "voice", "").startswith("en"):
        texts = english_sentences(opts.sentences + opts.held_out, args.seed)
    else:
        raise SpeechPeftError(f"{args.base}: not an English voice; give --texts with sentences in its language")
    report = complete_base(host, texts, opts)
    before, after = report["held_out"]["before"], report["held_out"]["after"]
    print(
        f"completed {args.base} in {report['wall_seconds']:g} s "
        f"({report['trained_parameters']:,} parameters trained on "
        f"{report['teacher_seconds']:g} s of its own speech): held-out posterior NLL {before['posterior_nll']:.3f} -> "
        f"{after['posterior_nll']:.3f}, z relative error {before['z_relative_error']:.3f} -> "
        f"{after['z_relative_error']:.3f}{_resampled_note(before, after)}, duration NLL "
        f"{before['duration_nll']:.3f} -> {after['duration_nll']:.3f}; wrote {out}"
    )
    return 0


def run_train_instant(args: argparse.Namespace) -> int:
    from ..data.manifest import read_manifest
    from ..errors import SpeechPeftError
    from ..models.vits_build import load_vits
    from ..train.clone import Reference
    from ..train.instant import InstantOptions, train_instant

    _one_process("tts train-instant")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SpeechPeftError(f"'{out}' exists; pass --overwrite to replace it")
    voices = {}
    for item in args.voice:
        name, sep, manifest = item.partition("=")
        if not sep or not name or not manifest:
            raise SpeechPeftError(f"--voice {item!r}: expected NAME=MANIFEST")
        if name in voices:
            raise SpeechPeftError(f"--voice {name!r} is given twice")
        voices[name] = [Reference(u.audio, u.text, u.where) for u in read_manifest(manifest, require_duration=False)]
    opts = InstantOptions(output=out, steps=args.steps, lr=args.lr, width=args.width, seed=args.seed,
                          progress=not args.no_progress)  # fmt: skip
    report = train_instant(load_vits(args.base), voices, opts)
    before, after = report["held_out"]["before"], report["held_out"]["after"]
    print(
        f"trained speaker conditioning on {len(voices)} voices in {report['wall_seconds']:g} s "
        f"({report['trained_parameters']:,} parameters): held-out KL + duration {before['kl_duration']:.3f} -> "
        f"{after['kl_duration']:.3f}, mel L1 {before['mel_l1']:.3f} -> {after['mel_l1']:.3f}; wrote {out}"
    )
    return 0


def _text_lines(path: Path) -> list[tuple[str, str]]:
    """(where, sentence) for each non-empty line of a UTF-8 text file.

    Raises:
        SpeechPeftError: unreadable, not UTF-8, or no sentences.
    """
    from ..errors import SpeechPeftError

    try:
        content = path.read_text("utf-8-sig")
    except UnicodeDecodeError as e:
        byte = f"byte {e.object[e.start]:#04x} at offset {e.start}"
        raise SpeechPeftError(f"{path}: not UTF-8 text ({byte})") from None
    except OSError as e:
        raise SpeechPeftError(f"{path}: {e.strerror}") from None
    lines = [(f"{path}:{i}", t.strip()) for i, t in enumerate(content.splitlines(), 1)]
    lines = [(w, t) for w, t in lines if t]
    if not lines:
        raise SpeechPeftError(f"{path}: no sentences")
    return lines


def _reference_files(items: list[str]) -> list[Path]:
    from ..errors import SpeechPeftError

    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO and f.is_file())
        elif p.exists():
            files.append(p)
        else:
            raise SpeechPeftError(f"reference '{p}' does not exist")
    return files


def _whisper_texts(files: list[Path], model: str, language: str) -> dict[Path, str]:
    from ..data import load_audio
    from ..models import load_whisper

    host = load_whisper(model)
    arrays = [load_audio(f, 16_000, str(f)) for f in files]
    return {f.resolve(): t for f, t in zip(files, host.transcribe(arrays, language=language), strict=True)}


def _one_process(command: str) -> None:
    """Cloning trains on 10-300 s of references, which one device holds many times over: under
    torchrun it refuses rather than train the same thing N times.

    Raises:
        SharedError: launched with more than one process.
    """
    from ..distributed import SharedError, launched_size

    if launched_size() > 1:
        raise SharedError(f"speechpeft {command} runs in one process; launch it without torchrun")
