"""Bad input, CLI by CLI: each case exits 2 (1 where other files of a batch could complete) with
exactly one line on stderr that names the culprit, no traceback, and no partial output left behind.
Odd but valid input (other sampling rates, six channels, silence, a BOM...) simply works.

The committed corpus is tests/data/bad/ (made by its make_bad.py); cases that need a model, an
adapter or a two-hour file build them here, on tiny random models.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from tiny import make_tiny_vits_dir, make_tiny_whisper_dir

from speechpeft.adapters import LoRAConfig, save_adapter
from speechpeft.cli import main
from speechpeft.models import load_whisper

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


@dataclass
class Env:
    tmp: Path
    model: Path  # a tiny Whisper directory
    adapter: Path  # a LoRA adapter made for it
    foreign: Path  # a LoRA adapter made for another tiny Whisper
    vits: Path
    out: Path  # where a case's outputs would go; must hold nothing afterwards


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    model = make_tiny_whisper_dir(root / "model")
    other = make_tiny_whisper_dir(root / "other-model", seed=5)

    def adapter(model_dir, out):
        host = load_whisper(str(model_dir), device="cpu")
        host.inject(LoRAConfig(rank=2, targets="attn_qv"))
        return save_adapter(host.model, out)

    return (
        root,
        model,
        adapter(model, root / "adapter"),
        adapter(other, root / "foreign"),
        make_tiny_vits_dir(root / "vits", num_speakers=1),
    )


@pytest.fixture
def env(shared, tmp_path):
    root, model, adapter, foreign, vits = shared
    return Env(tmp_path, model, adapter, foreign, vits, tmp_path / "out")


def recipe(env: Env, manifest: Path | str, **sections: str) -> Path:
    """A tiny finetune recipe on ``manifest``; ``sections`` add YAML lines verbatim, e.g. train="  lr: -1"."""
    lines = [
        "# speechpeft finetune --recipe <this file>",
        "name: bad",
        f"output_dir: {env.out}",
        f"model:\n  name: {env.model}\n  device: cpu\n  window_seconds: 3",
        "adapter:\n  kind: s2lora\n  rank: 4",
        f"data:\n  train: {manifest}\n  dev: {manifest}\n  test: {manifest}",
        "train:\n  max_steps: 2\n  batch_size: 2\n  eval_every: 2" + ("\n" + sections.pop("train", "")).rstrip(),
        *sections.values(),
    ]  # fmt: skip
    path = env.tmp / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune(env: Env, manifest: Path | str, **sections: str) -> list[str]:
    return ["finetune", "--recipe", str(recipe(env, manifest, **sections)), "--no-progress"]


def transcribe(env: Env, *files: Path | str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["transcribe", *map(str, files), "--model", str(env.model), "--language", "en", "--no-progress"]
    return [*args, "-o", str(env.out), *extra]


def evaluate(env: Env, manifest: Path | str, *extra: str) -> list[str]:
    args = ["evaluate", "--manifest", str(manifest), "--model", str(env.model), "--no-progress"]
    return [*args, "-o", str(env.out / "result"), *extra]


def copy_adapter(env: Env, edit: Callable[[Path], None]) -> Path:
    """A copy of the good adapter, damaged by ``edit``."""
    target = env.tmp / "damaged"
    shutil.copytree(env.adapter, target)
    edit(target)
    return target


def rewrite_tensors(folder: Path, change: Callable[[dict], None], keep_checksum: bool = False) -> None:
    """Rewrite adapter_model.safetensors with ``change`` applied, its record's checksum recomputed
    (a consistent file of the wrong shape) unless ``keep_checksum``."""
    from safetensors import safe_open

    from speechpeft.adapters.io import tensors_sha256

    path = folder / "adapter_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(path)
    change(tensors)
    record = json.loads(meta["speechpeft"])
    if not keep_checksum:
        record["tensors_sha256"] = tensors_sha256(tensors)
    meta["speechpeft"] = json.dumps(record)
    save_file(tensors, str(path), metadata=meta)


def edit_record(folder: Path, change: Callable[[dict], None]) -> None:
    from safetensors import safe_open

    path = folder / "adapter_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    record = json.loads(meta["speechpeft"])
    change(record)
    meta["speechpeft"] = json.dumps(record)
    save_file(load_file(path), str(path), metadata=meta)


def two_hours(env: Env) -> Path:
    path = env.tmp / "two-hours.flac"
    with sf.SoundFile(path, "w", 8_000, 1, subtype="PCM_16") as f:  # silence: a few kB of FLAC
        block = np.zeros(8_000 * 60, np.int16)
        for _ in range(120):
            f.write(block)
    return path


def manifest_with(env: Env, row: dict, name: str = "m.jsonl") -> Path:
    good = {"audio_filepath": str(BAD / "good.wav"), "text": "你好", "duration": 0.6, "language": "zh"}
    path = env.tmp / name
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **row}, ensure_ascii=False) + "\n", "utf-8")
    return path


def export(env: Env, adapter: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["export", "--no-progress", "--adapter", str(adapter), "-o", str(out or env.out), *extra]


def damaged(env: Env, change: Callable[[dict], None], checksum: bool = False) -> Path:
    """The good adapter with its tensors changed; the record's checksum kept (``checksum``) or recomputed."""
    return copy_adapter(env, lambda d: rewrite_tensors(d, change, keep_checksum=checksum))


def truncate(folder: Path) -> None:
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])


def lora_peft_dir(env: Env) -> Path:
    """A plain PEFT LoRA directory (no speechpeft record) whose adapter_config.json is missing."""
    target = env.tmp / "peft-no-json"
    target.mkdir()
    tensors = load_file(env.adapter / "adapter_model.safetensors")
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    return target


def pickle_dir(env: Env) -> Path:
    target = env.tmp / "pickled"
    target.mkdir()
    torch.save({"w": torch.zeros(2)}, target / "adapter_model.bin")
    return target


def clone(env: Env, *refs: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return ["clone", "--base", str(env.vits), "--reference", *map(str, refs), "--name", "x", "-o", str(env.out),
            "--steps", "2", "--no-progress", *extra]  # fmt: skip


def synthesize(env: Env, text: str) -> list[str]:
    return ["synthesize", "--base", str(env.vits), text, "-o", str(env.out / "x.wav"), "--no-progress"]


def silent(env: Env) -> Path:
    sf.write(env.tmp / "silent.wav", np.zeros(32_000, np.float32), 16_000)
    return env.tmp / "silent.wav"


def short(env: Env) -> Path:
    t = np.arange(4_000) / 16_000
    sf.write(env.tmp / "short.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16_000)
    return env.tmp / "short.wav"


def a_file(env: Env) -> Path:
    (env.tmp / "a-file").write_text("x")
    return env.tmp / "a-file"


# (id, argv builder, exit code, what the one stderr line must name)
CASES: list[tuple[str, Callable[[Env], list[str]], int, Callable[[Env], str]]] = [
    # transcribe: a file that fails does so alone (exit 1)
    ("transcribe-truncated-flac", lambda e: transcribe(e, BAD / "truncated.flac"), 1, lambda e: "truncated.flac"),
    ("transcribe-wrong-extension", lambda e: transcribe(e, BAD / "image.wav"), 1, lambda e: "image.wav"),
    ("transcribe-0-bytes", lambda e: transcribe(e, BAD / "zero-bytes.wav"), 1, lambda e: "zero-bytes.wav: "),
    ("transcribe-0-samples", lambda e: transcribe(e, BAD / "zero-samples.wav"), 1, lambda e: "0 samples"),
    ("transcribe-nan", lambda e: transcribe(e, BAD / "nan.wav"), 1, lambda e: "nan.wav' holds NaN or inf"),
    ("transcribe-inf", lambda e: transcribe(e, BAD / "inf.wav"), 1, lambda e: "inf.wav' holds NaN or inf"),
    ("transcribe-directory", lambda e: transcribe(e, BAD), 1, lambda e: "is a directory"),
    ("transcribe-missing-file", lambda e: transcribe(e, BAD / "nope.wav"), 1, lambda e: "nope.wav"),
    ("transcribe-foreign-adapter", lambda e: transcribe(e, BAD / "good.wav", extra=("--adapter", str(e.foreign))),
     1, lambda e: "was made for base"),
    ("transcribe-output-under-a-file", lambda e: [*transcribe(e, BAD / "good.wav")[:-2], "-o",
                                                  str(a_file(e) / "out")], 2, lambda e: "a-file"),
    ("transcribe-bad-format", lambda e: transcribe(e, BAD / "good.wav", extra=("-f", "docx")), 2, lambda e: "docx"),
    # finetune: manifests
    ("finetune-trailing-comma", lambda e: finetune(e, BAD / "trailing-comma.jsonl"), 2,
     lambda e: "trailing-comma.jsonl:2: not valid JSON"),
    ("finetune-duplicate-keys", lambda e: finetune(e, BAD / "duplicate-keys.jsonl"), 2,
     lambda e: "duplicate-keys.jsonl:2: key 'text' appears twice"),
    ("finetune-not-utf8", lambda e: finetune(e, BAD / "not-utf8.jsonl"), 2, lambda e: "not-utf8.jsonl:2: not UTF-8"),
    ("finetune-missing-text", lambda e: finetune(e, BAD / "missing-text.jsonl"), 2,
     lambda e: "missing-text.jsonl:2: missing required field 'text'"),
    ("finetune-dotdot-path", lambda e: finetune(e, BAD / "dotdot.jsonl"), 2, lambda e: "dotdot.jsonl:2: audio file"),
    ("finetune-corrupt-audio", lambda e: finetune(e, BAD / "bad-audio.jsonl"), 2,
     lambda e: "bad-audio.jsonl:2: cannot decode"),
    ("finetune-huge-line", lambda e: finetune(e, manifest_with(e, {"text": "好" * 400_000})), 2,
     lambda e: "m.jsonl:2: the line is 1.1 MiB"),
    ("finetune-text-too-long-for-the-decoder", lambda e: finetune(e, manifest_with(e, {"text": "好" * 200})), 2,
     lambda e: "m.jsonl:2: is 6"),
    ("finetune-two-hour-file", lambda e: finetune(e, manifest_with(e, {"audio_filepath": str(two_hours(e))})), 2,
     lambda e: "lasts 7200.00 s, longer than the 3 s allowed"),
    # finetune: recipes and arguments
    ("finetune-wrong-type", lambda e: finetune(e, BAD / "bom.jsonl", train="  lr: fast"), 2,
     lambda e: "bad value for 'train.lr'"),
    ("finetune-negative-lr", lambda e: finetune(e, BAD / "bom.jsonl", train="  lr: -0.001"), 2,
     lambda e: "train.lr must be > 0"),
    ("finetune-unknown-adapter-kind", lambda e: ["finetune", "--recipe", str(recipe(e, BAD / "bom.jsonl")),
                                                 "adapter.kind=dora"], 2, lambda e: "adapter.kind must be one of"),
    ("finetune-yaml-alias-bomb", lambda e: finetune(e, BAD / "bom.jsonl", bomb=ALIAS_BOMB), 2,
     lambda e: "YAML aliases"),
    ("finetune-no-recipe", lambda e: ["finetune"], 2, lambda e: "required: --recipe"),
    ("finetune-unknown-flag", lambda e: [*finetune(e, BAD / "bom.jsonl"), "--bogus"], 2, lambda e: "--bogus"),
    # evaluate
    ("evaluate-corrupt-audio", lambda e: evaluate(e, BAD / "bad-audio.jsonl"), 2, lambda e: "bad-audio.jsonl:2"),
    ("evaluate-foreign-adapter", lambda e: evaluate(e, BAD / "bom.jsonl", "--adapter", str(e.foreign)), 2,
     lambda e: "was made for base"),
    ("evaluate-missing-manifest", lambda e: evaluate(e, e.tmp / "none.jsonl"), 2, lambda e: "none.jsonl"),
    # export and adapters inspect: adapter folders
    ("export-missing-json-in-a-peft-dir", lambda e: export(e, lora_peft_dir(e)), 2,
     lambda e: "adapter_config.json: file not found"),
    ("export-missing-tensor", lambda e: export(e, damaged(e, lambda t: t.pop(sorted(t)[0]))), 2,
     lambda e: "missing tensor"),
    ("export-renamed-tensor", lambda e: export(e, damaged(e, lambda t: t.update(renamed=t.pop(sorted(t)[0])))), 2,
     lambda e: "missing tensor"),
    ("export-tampered-tensors", lambda e: export(e, damaged(e, lambda t: t[sorted(t)[0]].add_(1), checksum=True)), 2,
     lambda e: "do not match the checksum"),
    ("export-tampered-header", lambda e: export(e, copy_adapter(e, lambda d: edit_record(
        d, lambda r: r["config"].update(rank=3)))), 2, lambda e: "has shape (2, 64), expected (3, 64)"),
    ("export-pickle-only", lambda e: export(e, pickle_dir(e)), 2, lambda e: "adapter_model.bin, a pickle"),
    ("export-over-a-file", lambda e: export(e, e.adapter, a_file(e), "--overwrite"), 2, lambda e: "a-file' is a file"),
    ("inspect-truncated", lambda e: ["adapters", "inspect", str(copy_adapter(e, truncate))], 2,
     lambda e: "truncated or corrupt"),
    ("inspect-missing", lambda e: ["adapters", "inspect", str(e.tmp / "nothing")], 2,
     lambda e: "nothing' does not exist"),
    ("inspect-pickle-only", lambda e: ["adapters", "inspect", str(pickle_dir(e))], 2, lambda e: "a pickle"),
    # clone and synthesize
    ("clone-silent-reference", lambda e: clone(e, silent(e), e.tmp / "ref0.wav", e.tmp / "ref1.wav",
                                               extra=("--manifest", str(clone_manifest(e, "silent.wav")))),
     2, lambda e: "silent.wav"),
    ("clone-too-short-reference", lambda e: clone(e, short(e), e.tmp / "ref0.wav", e.tmp / "ref1.wav",
                                                  extra=("--manifest", str(clone_manifest(e, "short.wav")))),
     2, lambda e: "short.wav"),
    ("clone-manifest-not-utf8", lambda e: clone(e, BAD / "good.wav", extra=("--manifest", str(BAD / "not-utf8.jsonl"))),
     2, lambda e: "not-utf8.jsonl:2: not UTF-8"),
    ("synthesize-unspellable", lambda e: synthesize(e, "καλημέρα"), 2, lambda e: "cannot spell"),
    ("synthesize-text-not-utf8", lambda e: synthesize(e, str(latin1_text(e))), 2, lambda e: "lines.txt: not UTF-8"),
]  # fmt: skip

ALIAS_BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['x'] * 9)}]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
)


def clone_manifest(env: Env, name: str) -> Path:
    """References: two good one-speaker clips and ``name``."""
    rows = []
    for i in range(2):
        t = np.arange(24_000) / 16_000
        sf.write(env.tmp / f"ref{i}.wav", (0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t)).astype(np.float32), 16_000)
        rows.append({"audio_filepath": f"ref{i}.wav", "text": "hello there"})
    rows.append({"audio_filepath": name, "text": "a small cat"})
    path = env.tmp / "refs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def latin1_text(env: Env) -> Path:
    path = env.tmp / "lines.txt"
    path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit_and_leaves_nothing_behind(env, case, capsys):
    _, build, code, culprit = case
    argv = build(env)
    capsys.readouterr()
    assert main(argv) == code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("speechpeft: error: ") and culprit(env) in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert listing(env.out) == [], listing(env.out)  # no partial output, no temp files


def test_there_are_at_least_25_cases_across_every_cli():
    assert len(CASES) >= 25
    commands = {c[0].split("-")[0] for c in CASES}
    assert commands >= {"transcribe", "finetune", "evaluate", "export", "inspect", "clone", "synthesize"}


ODD_BUT_VALID = ["rate-8k.wav", "rate-44k.wav", "rate-48k.flac", "six-channels.wav", "silence.wav", "clipped.wav"]


def test_odd_but_valid_audio_transcribes_and_a_bad_file_fails_alone(env, capsys):
    files = [BAD / n for n in ODD_BUT_VALID] + [BAD / "truncated.flac"]
    assert main(transcribe(env, *files)) == 1
    _, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert "truncated.flac" in line
    assert listing(env.out) == sorted(f"{Path(n).stem}.txt" for n in ODD_BUT_VALID)


def test_a_bom_and_crlf_line_endings_are_read(env):
    for name in ("bom.jsonl", "crlf.jsonl"):
        assert main(evaluate(env, BAD / name)) == 0
        result = json.loads((env.out / "result.json").read_text(encoding="utf-8"))
        assert len(result["utterances"]) == 2
        shutil.rmtree(env.out)
