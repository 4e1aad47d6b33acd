"""speechpeft transcribe on a tiny Whisper: adapter maps, outputs, and files that fail alone."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechpeft.adapters import LoRAConfig, save_adapter
from speechpeft.cli import main
from speechpeft.data import load_audio
from speechpeft.data.vad import merge_regions
from speechpeft.errors import SpeechPeftError
from speechpeft.infer import jobs_from_args, read_adapter_map
from speechpeft.infer.writers import join_text, parse_formats, render
from speechpeft.models import Segment, load_whisper


def tone(path: Path, seconds: float, freq: float, rate: int = 16_000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B, so it visibly changes the tiny model's output; the
    same one whatever ran before (A's initialisation draws from torch's global RNG)."""
    host = load_whisper(str(model_dir), device="cpu")
    torch.manual_seed(7 + seed)
    host.inject(LoRAConfig(rank=4, alpha=8, targets="all_linear"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if p.requires_grad and name.endswith("lora_B.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return save_adapter(host.model, out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_whisper_dir):
    root = tmp_path_factory.mktemp("transcribe")
    audio = [tone(root / f"a{i}.wav", 0.6 + 0.9 * i, 220 + 170 * i) for i in range(4)]  # a3 is 3.3 s: long-form
    adapters = [make_adapter(tiny_whisper_dir, root / f"adapter{i}", seed=i) for i in range(2)]
    return root, audio, adapters


def run_cli(model_dir, *args):
    return main(["transcribe", "--model", str(model_dir), "--language", "en", "--no-progress", *map(str, args)])


def outputs(folder: Path, names, fmt="json"):
    return {n: json.loads((folder / f"{n}.{fmt}").read_text())["segments"] for n in names}


def test_one_run_with_an_adapter_map_equals_separate_runs_per_adapter(setup, tiny_whisper_dir, tmp_path):
    root, audio, (ad0, ad1) = setup
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps({"a0.wav": str(ad0), "*a2.wav": str(ad0), "a1*": str(ad1)}))  # a3: bare model
    assert run_cli(tiny_whisper_dir, *audio, "--adapter-map", amap, "-f", "json", "-o", tmp_path / "mixed") == 0
    mixed = outputs(tmp_path / "mixed", ["a0", "a1", "a2", "a3"])
    assert run_cli(tiny_whisper_dir, audio[0], audio[2], "--adapter", ad0, "-f", "json", "-o", tmp_path / "s0") == 0
    assert run_cli(tiny_whisper_dir, audio[1], "--adapter", ad1, "-f", "json", "-o", tmp_path / "s1") == 0
    assert run_cli(tiny_whisper_dir, audio[3], "-f", "json", "-o", tmp_path / "bare") == 0
    alone = {**outputs(tmp_path / "s0", ["a0", "a2"]), **outputs(tmp_path / "s1", ["a1"])}
    alone.update(outputs(tmp_path / "bare", ["a3"]))
    assert mixed == alone
    assert all(mixed[n] for n in mixed)  # every file got segments
    # the adapters matter: the same file decodes differently with each, so the check above has teeth
    assert run_cli(tiny_whisper_dir, audio[0], "--adapter", ad1, "-f", "json", "-o", tmp_path / "x") == 0
    assert outputs(tmp_path / "x", ["a0"]) != mixed["a0"]


def test_failing_files_get_one_line_each_and_the_others_complete(setup, tiny_whisper_dir, tmp_path, capsys):
    root, audio, (ad0, _) = setup
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "folder.wav").mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 4)
    (bad / "zero.wav").write_bytes(b"")
    sf.write(bad / "nosamples.wav", np.zeros(0, np.float32), 16_000)
    (bad / "notes.txt").write_text("not audio\n")
    files = [bad / "folder.wav", bad / "corrupt.wav", bad / "zero.wav", bad / "nosamples.wav", bad / "notes.txt"]
    code = run_cli(tiny_whisper_dir, *files, audio[0], "-o", tmp_path / "out", "-f", "txt,srt")
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "out" / "a0.txt").is_file() and (tmp_path / "out" / "a0.srt").is_file()
    lines = err.strip().splitlines()
    assert len(lines) == len(files) and all(line.startswith("speechpeft: error: ") for line in lines)
    needles = ["is a directory", "cannot decode", "empty (0 bytes)", "0 samples", "cannot decode"]
    for f, needle in zip(files, needles, strict=True):
        line = next(line for line in lines if str(f) in line)
        assert needle in line, line
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a0.srt", "a0.txt"]  # no temp files left


def test_an_adapter_for_another_base_fails_its_files_only(setup, tiny_whisper_dir, tmp_path, capsys):
    from tiny import make_tiny_whisper_dir

    root, audio, (ad0, _) = setup
    other = make_adapter(make_tiny_whisper_dir(tmp_path / "other-base", seed=7), tmp_path / "foreign", seed=3)
    amap = tmp_path / "map.csv"
    amap.write_text(f"pattern,adapter\na0.wav,{other}\na1.wav,{ad0}\n")
    code = run_cli(tiny_whisper_dir, audio[0], audio[1], "--adapter-map", amap, "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "out" / "a1.txt").is_file() and not (tmp_path / "out" / "a0.txt").exists()
    (line,) = err.strip().splitlines()
    assert str(audio[0]) in line and "was made for base" in line


def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(setup, tiny_whisper_dir, tmp_path, capsys):
    _, audio, _ = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(tiny_whisper_dir, audio[0], "-o", blocker / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("speechpeft: error: cannot write to output folder")


def test_existing_outputs_are_kept_unless_overwrite(setup, tiny_whisper_dir, tmp_path, capsys):
    _, audio, _ = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "a0.txt").write_text("keep me\n")
    assert run_cli(tiny_whisper_dir, audio[0], "-o", out) == 0
    assert (out / "a0.txt").read_text() == "keep me\n"
    assert "skipped 1 file" in capsys.readouterr().out
    assert run_cli(tiny_whisper_dir, audio[0], "-o", out, "--overwrite") == 0
    assert (out / "a0.txt").read_text() != "keep me\n"


def test_adapter_maps_in_three_forms_and_their_errors(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"*.wav": "ad", "x.flac": "none"}))
    (tmp_path / "m.csv").write_text("*.wav,ad\nx.flac,\n")
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav", "adapter": "ad"}\n')
    for name in ("m.json", "m.csv"):
        amap = read_adapter_map(tmp_path / name)
        assert amap.adapter_for("dir/y.wav") == str(tmp_path / "ad")
        assert amap.adapter_for("x.flac") is None and amap.adapter_for("z.ogg") is None
    (job,) = jobs_from_args([], adapter_map=str(tmp_path / "m.jsonl"))
    assert job.audio == tmp_path / "a.wav" and job.adapter == str(tmp_path / "ad") and job.where.endswith(":1")
    (tmp_path / "bad.jsonl").write_text('{"audio_filepath": "a.wav", "adapter": "ad"}\n{"audio_filepath": "b.wav"}\n')
    with pytest.raises(SpeechPeftError, match=r"bad.jsonl:2: missing required field 'adapter'"):
        read_adapter_map(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("a.wav,ad\nb.wav\n")
    with pytest.raises(SpeechPeftError, match=r"bad.csv:2: expected 2 columns"):
        read_adapter_map(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text('{"a.wav": 3}')
    with pytest.raises(SpeechPeftError, match=r"bad.json: key 'a.wav'"):
        read_adapter_map(tmp_path / "bad.json")
    with pytest.raises(SpeechPeftError, match="not both"):
        jobs_from_args(["a.wav"], adapter="ad", adapter_map=str(tmp_path / "m.json"))


def test_subtitle_formats():
    segs = [Segment(0.0, 1.5, "Hello there."), Segment(3661.25, 3663.0, "An hour later.")]
    assert render("srt", segs, {}) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:03,000\nAn hour later.\n\n"
    )
    assert render("vtt", segs, {}) == (
        "WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n01:01:01.250 --> 01:01:03.000\nAn hour later.\n\n"
    )
    tsv = ["start\tend\ttext", "0\t1500\tHello there.", "3661250\t3663000\tAn hour later."]
    assert render("tsv", segs, {}).splitlines() == tsv
    record = json.loads(render("json", segs, {"model": "m"}))
    assert record["model"] == "m" and record["text"] == "Hello there. An hour later." and len(record["segments"]) == 2
    assert join_text(["你好", "世界", "ok"]) == "你好世界 ok"
    assert parse_formats("all") == ("txt", "srt", "vtt", "tsv", "json") and parse_formats("json,srt") == ("srt", "json")
    with pytest.raises(ValueError, match="unknown output format 'doc'"):
        parse_formats("srt,doc")


def openai_whisper_writers():
    """openai-whisper's own writers module (whisper/utils.py imports only the standard library),
    loaded from its installed files without importing the whisper package and its torch deps."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, files

    try:
        path = next(f for f in files("openai-whisper") if str(f).endswith("whisper/utils.py")).locate()
    except (PackageNotFoundError, StopIteration, TypeError):
        pytest.skip("openai-whisper is not installed (.ci/run installs it with --no-deps)")
    spec = importlib.util.spec_from_file_location("openai_whisper_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_srt_vtt_tsv_txt_equal_openai_whispers_writers_byte_for_byte():
    import io

    utils = openai_whisper_writers()
    segs = [
        Segment(0.0, 1.5004, "Hello there."),
        Segment(1.5005, 59.9996, "a --> b, tab\there"),  # rounding edges; an arrow and a tab in the text
        Segment(61.0, 3599.9994, "just under an hour"),
        Segment(3600.0, 3725.125, "你好，世界"),
        Segment(36000.5, 36001.0, "ten hours in"),
    ]
    result = {"segments": [{"start": s.start, "end": s.end, "text": " " + s.text} for s in segs]}
    for fmt, writer in (("srt", utils.WriteSRT), ("vtt", utils.WriteVTT), ("tsv", utils.WriteTSV),
                        ("txt", utils.WriteTXT)):  # fmt: skip
        theirs = io.StringIO()
        writer(".").write_result(result, theirs)
        assert render(fmt, segs, {}) == theirs.getvalue(), fmt


def test_vad_regions_merge_into_window_sized_chunks():
    regions = [(0, 10), (12, 20), (50, 60), (61, 200)]
    assert merge_regions(regions, max_samples=30, max_gap=5) == [(0, 20), (50, 60)] + [
        (61, 89), (89, 117), (117, 145), (145, 173), (173, 200)
    ]  # fmt: skip
    assert merge_regions([], 30, 5) == []


def test_m4a_decodes_through_pyav_and_without_it_the_error_says_so(tmp_path, monkeypatch):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.m4a"
    rate, seconds = 44_100, 1.0
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]  # (channels, samples)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio(path, 16_000)
    assert abs(len(audio) / 16_000 - seconds) < 0.1 and 0.1 < np.abs(audio).max() < 0.5
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(SpeechPeftError, match=r"\.m4a needs PyAV: pip install 'speechpeft\[av\]'"):
        load_audio(path, 16_000)


def test_a_host_passed_in_leaves_bare_with_bit_exact_base_weights(setup, tiny_whisper_dir, tmp_path):
    from speechpeft.adapters import adapter_layers
    from speechpeft.infer import Job, TranscribeOptions, transcribe_files

    _, audio, (ad0, ad1) = setup
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    before = {k: v.clone() for k, v in host.model.state_dict().items()}
    jobs = [Job(audio[0], str(ad0), "a0"), Job(audio[1], str(ad1), "a1"), Job(audio[2], str(ad0), "a2")]
    from speechpeft.adapters import bank

    loaded = []
    real_load_bank = bank.load_bank
    with pytest.MonkeyPatch.context() as mp:  # two adapters: one mixed batch through a bank
        mp.setattr("speechpeft.infer.transcribe.load_bank", lambda m, p: loaded.append(list(p)) or real_load_bank(m, p))
        out = transcribe_files(jobs, TranscribeOptions(language="en", output_dir=tmp_path, progress=False), host=host)
    assert sorted(out.done) == ["a0", "a1", "a2"] and not out.failures
    assert loaded == [[str(ad0), str(ad1)]]
    assert not adapter_layers(host.model) and not bank.bank_layers(host.model)
    after = host.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_one_adapter_is_merged_for_the_run_and_the_base_comes_back_bit_exact(setup, tiny_whisper_dir, tmp_path):
    """A single adapter goes down the merge path (bare-model cost), not the bank: the weights the
    decoder sees are merged ones, and afterwards the host holds its base weights bit for bit."""
    from speechpeft.adapters import adapter_layers
    from speechpeft.adapters import bank as bank_module
    from speechpeft.infer import Job, TranscribeOptions, transcribe_files

    _, audio, (ad0, _) = setup
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    before = {k: v.clone() for k, v in host.model.state_dict().items()}
    q = "model.decoder.layers.0.self_attn.q_proj"
    merged_weights = []
    real_generate = host.model.generate

    def generate(*args, **kwargs):  # what the decoder computes with, while it decodes
        layer = host.model.get_submodule(q)
        merged_weights.append((getattr(layer, "merged", False), layer.weight.detach().clone()))
        return real_generate(*args, **kwargs)

    jobs = [Job(audio[0], str(ad0), "a0"), Job(audio[2], str(ad0), "a2")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(host.model, "generate", generate)
        mp.setattr("speechpeft.infer.transcribe.load_bank", lambda *a: pytest.fail("one adapter must not use a bank"))
        out = transcribe_files(jobs, TranscribeOptions(language="en", output_dir=tmp_path, progress=False), host=host)
    assert sorted(out.done) == ["a0", "a2"] and not out.failures and merged_weights
    for merged, weight in merged_weights:
        assert merged and not torch.equal(weight, before[f"{q}.weight"])  # the adapter is in the weights
    assert not adapter_layers(host.model) and not bank_module.bank_layers(host.model)
    after = host.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_adapters_trained_with_different_windows_are_not_mixed_in_one_bank(setup, tiny_whisper_dir, tmp_path):
    """A bank decodes every row in one encoder window, so adapters recorded with different windows
    go one group at a time instead, each in its own window."""
    from speechpeft.adapters import read_adapter

    root, audio, (ad0, _) = setup
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    host.set_window(2)
    host.inject(LoRAConfig(rank=4, alpha=8, targets="all_linear"))
    short = save_adapter(host.model, tmp_path / "short-window", extra={"window_seconds": 2.0})
    assert read_adapter(short).record["host"]["window_seconds"] == 2.0
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps({"a0.wav": str(ad0), "a1.wav": str(short)}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("speechpeft.infer.transcribe.load_bank", lambda *a: pytest.fail("windows differ: no bank"))
        assert run_cli(tiny_whisper_dir, audio[0], audio[1], "--adapter-map", amap, "-f", "json", "-o",
                       tmp_path / "out") == 0  # fmt: skip
    meta = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text()) for n in ("a0", "a1")}
    assert meta["a0"]["window_seconds"] == 3.0 and meta["a1"]["window_seconds"] == 2.0


def test_short_window_batches_get_a_window_fitted_to_their_longest_file(setup, tiny_whisper_dir, tmp_path):
    """An adapter trained with a 2 s window, step 0.5 s: the 1.5 s file is decoded in a 1.5 s
    window and the 0.6 s one in 1.0 s, exactly as an explicit --window-seconds 1 decodes it; the
    bare model keeps its whole 3 s window."""
    from speechpeft.models.whisper import WhisperHost

    root, audio, _ = setup
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    host.set_window(2)
    torch.manual_seed(3)
    host.inject(LoRAConfig(rank=4, alpha=8, targets="all_linear"))
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.normal_(0, 0.5)
    short = save_adapter(host.model, tmp_path / "short-window", extra={"window_seconds": 2.0})
    seen, real = [], WhisperHost.transcribe_long

    def spy(self, arrays, *a, **k):
        seen.append(self.window_seconds)
        return real(self, arrays, *a, **k)

    files = ("--batch-size", "1", "-f", "json", audio[0], audio[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WhisperHost, "transcribe_long", spy)
        fit = tmp_path / "fit"
        assert run_cli(tiny_whisper_dir, "--adapter", short, "--window-step", "0.5", *files, "-o", fit) == 0
        assert seen == [1.5, 1.0]
        seen.clear()
        assert run_cli(tiny_whisper_dir, "--window-step", "0.5", *files, "-o", tmp_path / "bare") == 0
        assert seen == [3.0, 3.0]
        seen.clear()  # the default: the adapter's whole window (fitting cost CER on the demo's dev set)
        assert run_cli(tiny_whisper_dir, "--adapter", short, *files, "-o", tmp_path / "default") == 0
        assert seen == [2.0, 2.0]
    assert "window_fitted" not in json.loads((tmp_path / "default" / "a0.json").read_text())
    meta = json.loads((tmp_path / "fit" / "a0.json").read_text())
    assert meta["window_seconds"] == 2.0 and "0.5 s" in meta["window_fitted"]
    assert run_cli(tiny_whisper_dir, "--adapter", short, "--window-seconds", "1", "--window-step", "0",
                   "-f", "json", audio[0], "-o", tmp_path / "one") == 0  # fmt: skip
    assert outputs(tmp_path / "fit", ["a0"]) == outputs(tmp_path / "one", ["a0"])
    assert run_cli(tiny_whisper_dir, "--window-step", "-1", audio[0], "-o", tmp_path / "bad") == 2
