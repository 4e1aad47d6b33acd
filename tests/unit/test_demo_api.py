"""The demo page's API through gradio_client, on tiny models: each endpoint, and bad input.

What the page shows must be what the library and the CLI compute: the Transcribe downloads
are compared with `speechpeft transcribe` on the same file, the Compare rows with one CLI run
per adapter.
"""

import json
import threading

import httpx
import numpy as np
import pytest
import soundfile as sf
from demo_helpers import running_demo
from gradio_client import Client, handle_file
from tiny import make_clone_references, make_tiny_vits_dir, make_tiny_whisper_dir, random_lora_adapter

from speechpeft.cli import main

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_whisper_dir):
    root = tmp_path_factory.mktemp("demo")
    other = make_tiny_whisper_dir(root / "other-whisper", seed=1)
    adapters = root / "adapters"
    for name, seed in (("a1", 1), ("a2", 2)):
        random_lora_adapter(tiny_whisper_dir, adapters / name, seed, std=0.5)
    random_lora_adapter(other, adapters / "other-base", 3, std=0.5)
    vits = make_tiny_vits_dir(root / "vits", num_speakers=1)
    refs = make_clone_references(root / "refs", n=10)
    t = np.arange(int(2.5 * 16_000)) / 16_000
    sf.write(root / "clip.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16_000)
    sf.write(root / "long.wav", np.zeros(int(9 * 16_000), np.float32) + 0.01, 16_000)
    config = dict(asr_models=(str(tiny_whisper_dir),), adapters=(str(adapters),), tts_base=str(vits),
                  max_seconds=8.0, max_upload_mb=1.0, clone_steps=5, clone_min_seconds=5.0)  # fmt: skip
    with running_demo(**config) as (demo, url):
        yield {"root": root, "url": url, "demo": demo, "model": str(tiny_whisper_dir), "adapters": adapters,
               "refs": refs, "client": Client(url, verbose=False)}  # fmt: skip


def cli_outputs(served, adapter, out):
    args = ["transcribe", str(served["root"] / "clip.wav"), "--model", served["model"], "-f", "all", "-o", str(out)]
    assert main([*args, *(["--adapter", str(served["adapters"] / adapter)] if adapter else []), "--no-progress"]) == 0
    return {f: (out / f"clip.{f}").read_text("utf-8") for f in FORMATS}


def test_transcribe_downloads_are_what_the_cli_writes(served, tmp_path):
    status, text, files = served["client"].predict(
        handle_file(served["root"] / "clip.wav"), served["model"], "a1", "", 1, False, api_name="/transcribe"
    )
    assert status.startswith("done:"), status
    got = {p.rsplit(".", 1)[1]: open(p, encoding="utf-8").read() for p in files}
    assert sorted(got) == sorted(FORMATS) and all(p.rsplit("/", 1)[1].startswith("clip.") for p in files)
    want = cli_outputs(served, "a1", tmp_path / "cli")
    for fmt in ("txt", "srt", "vtt", "tsv"):
        assert got[fmt] == want[fmt], fmt
    page, cli = json.loads(got["json"]), json.loads(want["json"])
    assert page["segments"] == cli["segments"] and page["text"] == cli["text"]
    assert len(text.splitlines()) == len(page["segments"]) and text.startswith("[00:")


def test_compare_gives_one_row_per_adapter_from_one_mixed_batch_equal_to_separate_runs(served, tmp_path):
    status, table = served["client"].predict(
        handle_file(served["root"] / "clip.wav"), served["model"], ["a1", "a2"], "", 1, "", "basic", api_name="/compare"
    )
    assert "3 output(s)" in status and "one mixed-adapter batch" in status, status
    assert table.count('class="compare-row"') == 3
    texts = [json.loads(cli_outputs(served, a, tmp_path / str(a))["json"])["text"] for a in (None, "a1", "a2")]
    assert len(set(texts)) == 3, "the adapters should change the tiny model's output"
    import html

    for text in texts:
        assert html.escape(text) in table


def test_compare_with_a_reference_scores_and_highlights_each_output(served):
    _, table = served["client"].predict(
        handle_file(served["root"] / "clip.wav"),
        served["model"],
        ["a1"],
        "",
        1,
        "hello world",
        "basic",
        api_name="/compare",
    )
    assert "<th>WER</th>" in table and table.count('class="compare-row"') == 2
    assert "[hello]" in table or 'class="op-delete"' in table  # the reference's words appear in the diff


def test_clone_then_speak_gives_audio_and_a_named_similarity(served):
    client = served["client"]
    refs = sorted(served["refs"].parent.glob("*.wav"))
    texts = "\n".join(json.loads(line)["text"] for line in served["refs"].read_text().splitlines())
    status = client.predict([handle_file(f) for f in refs], None, texts, "kid", 5, api_name="/clone")
    assert status.startswith("trained 'kid' on 10 clips"), status
    status, audio, similarity = client.predict("hello cat", api_name="/speak")
    wave, rate = sf.read(audio)
    assert rate == 16_000 and len(wave) > 0 and np.abs(wave).max() > 0
    assert "resemblyzer" in similarity and "base voice alone" in similarity


def test_speak_before_any_clone_is_one_line(served):
    status, audio, _ = Client(served["url"], verbose=False).predict("hello", api_name="/speak")
    assert audio is None and status.startswith("no cloned voice in this session")


def _bad(served, tmp_path, case):
    clip = served["root"] / "clip.wav"
    adapter = "a1"
    if case == "empty":
        clip = tmp_path / "empty.wav"
        clip.write_bytes(b"")
    elif case == "corrupt":
        clip = tmp_path / "corrupt.wav"
        clip.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    elif case == "too long":
        clip = served["root"] / "long.wav"
    elif case == "other base":
        adapter = "other-base"
    return clip, adapter


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "empty.wav: the file is empty (0 bytes)"),
        ("corrupt", "cannot decode 'corrupt.wav'"),
        ("too long", "long.wav: 9.0 s of audio; this demo takes at most 8 s"),
        ("other base", "adapter 'other-base' was made for base"),
    ],
)
def test_bad_input_is_one_line_without_private_paths_and_the_app_keeps_serving(served, tmp_path, case, message):
    client = served["client"]
    clip, adapter = _bad(served, tmp_path, case)
    status, text, files = client.predict(
        handle_file(clip), served["model"], adapter, "", 1, False, api_name="/transcribe"
    )
    assert message in status and "\n" not in status and "Traceback" not in status, status
    assert str(served["demo"].workspace.root) not in status and files is None and text == ""
    status, _, _ = client.predict(handle_file(served["root"] / "clip.wav"), served["model"], "", "", 1, False,
                                  api_name="/transcribe")  # fmt: skip
    assert status.startswith("done:"), status


def test_an_upload_over_the_size_limit_is_refused_by_the_server(served, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(16_000 * 40, np.float32), 16_000)  # 1.3 MB of PCM > 1 MB
    r = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("big.wav", big.read_bytes(), "audio/wav")})
    assert r.status_code == 413 and "maximum allowed size" in r.text


def test_a_name_with_path_parts_is_never_used_as_a_path(served):
    """The browser's file name reaches the server as sent; the demo copies the upload under its own name."""
    client = served["client"]
    audio = (served["root"] / "clip.wav").read_bytes()
    r = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("../../etc/passwd", audio, "audio/wav")})
    assert r.status_code == 200
    (server_path,) = r.json()
    root = served["demo"].workspace.root
    assert str(root) in server_path  # gradio keeps the upload inside the demo's workspace
    status, text, files = client.predict({"path": server_path, "meta": {"_type": "gradio.FileData"}},
                                         served["model"], "", "", 1, False, api_name="/transcribe")  # fmt: skip
    assert status.startswith("done:"), status
    assert sorted(f.rsplit("/", 1)[1] for f in files) == sorted(f"passwd.{f}" for f in FORMATS), files
    assert "etc" not in server_path.split("/gradio/", 1)[1], server_path  # gradio kept the last part only


def test_training_jobs_run_one_at_a_time_and_the_other_waits_in_the_queue(served):
    refs = sorted(served["refs"].parent.glob("*.wav"))
    texts = "\n".join(json.loads(line)["text"] for line in served["refs"].read_text().splitlines())
    args = ([handle_file(f) for f in refs], None, texts, "q", 60)
    jobs = [Client(served["url"], verbose=False).submit(*args, api_name="/clone") for _ in range(2)]
    waited, both_training, tick = False, False, threading.Event()
    while not all(j.done() for j in jobs):
        states = [j.status() for j in jobs]
        codes = {s.code.name for s in states}
        training = [s for s in states if s.code.name == "PROGRESS"]  # the page reports every step
        queued = [s for s in states if s.code.name == "IN_QUEUE"]
        both_training |= len(training) == 2
        waited |= len(training) == 1 and len(queued) == 1 and queued[0].rank == 0 and "FINISHED" not in codes
        tick.wait(0.05)
    assert all(j.result().startswith("trained") for j in jobs)
    assert waited, "no training job was seen waiting, first in the queue, behind the other"
    assert not both_training, "two training jobs ran at once"
