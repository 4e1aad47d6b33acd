"""`speechpeft serve` on a tiny Whisper: OpenAI's client, batching across adapters, and faults.

Every served transcript is checked against `speechpeft transcribe --adapter X` on the same file.
"""

import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import DATA
from serve_helpers import running_server
from tiny import make_tiny_whisper_dir, random_lora_adapter

from speechpeft.cli import main

CLIPS = sorted((DATA / "librivox").glob("*.flac"))[:2]
ADAPTERS = ("a1", "a2", "a3")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = make_tiny_whisper_dir(root / "whisper-base")  # its short name, as OpenAI's clients say it: "base"
    for i, name in enumerate(ADAPTERS, 1):
        random_lora_adapter(base, root / "adapters" / name, seed=i, std=0.5)
    random_lora_adapter(make_tiny_whisper_dir(root / "other", seed=1), root / "adapters" / "other-base", 9, std=0.5)
    expected = {}
    for adapter in (None, *ADAPTERS):
        out = root / "cli" / str(adapter)
        args = ["transcribe", *map(str, CLIPS), "--model", str(base), "-f", "json", "-o", str(out), "--no-progress"]
        assert main(args + (["--adapter", str(root / "adapters" / adapter)] if adapter else [])) == 0
        expected[adapter] = {c.name: json.loads((out / f"{c.stem}.json").read_text())["text"] for c in CLIPS}
    assert len({tuple(v.values()) for v in expected.values()}) == 4, "the adapters should change the output"
    return root, base, expected


@pytest.fixture(scope="module")
def server(setup):
    root, base, _ = setup
    with running_server(base, adapters=str(root / "adapters"), max_batch=8, max_wait_ms=300) as (url, app):
        yield url, app


def post(url, clip, model, **fields):
    files = {"file": (clip.name, clip.read_bytes(), "audio/flac")}
    return httpx.post(f"{url}/v1/audio/transcriptions", files=files, data={"model": model, **fields}, timeout=120)


def test_the_openai_client_transcribes_with_the_base_and_with_an_adapter_as_the_cli_does(setup, server):
    openai = pytest.importorskip("openai")
    _, _, expected = setup
    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused")
    for model, adapter in (("base", None), ("a2", "a2")):
        for clip in CLIPS[:2]:
            with open(clip, "rb") as f:
                out = client.audio.transcriptions.create(model=model, file=f)
            assert out.text == expected[adapter][clip.name], (model, clip.name)


def test_concurrent_requests_for_three_adapters_and_the_base_share_batches_and_equal_the_cli(setup, server):
    _, _, expected = setup
    url, app = server
    work = [(clip, adapter) for clip in CLIPS[:2] for adapter in (None, *ADAPTERS)]
    with ThreadPoolExecutor(len(work)) as pool:
        replies = list(pool.map(lambda w: post(url, w[0], w[1] or "base"), work))
    for (clip, adapter), r in zip(work, replies, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["text"] == expected[adapter][clip.name], (clip.name, adapter)  # token for token
    text = httpx.get(f"{url}/metrics").text
    one = float(re.search(r'speechpeft_batch_adapters_bucket\{le="1.0"\} (\S+)', text).group(1))
    total = float(re.search(r"speechpeft_batch_adapters_count (\S+)", text).group(1))
    assert total > one, "no decode call mixed adapters"
    assert re.search(r'speechpeft_requests_total\{adapter="a3",status="200"\} [1-9]', text)


def test_models_lists_the_base_and_every_adapter_and_formats_follow_openai(setup, server):
    url, _ = server
    rows = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert rows[str(setup[1])]["kind"] == "base" and "base" in rows[str(setup[1])]["aliases"]
    assert {"a1", "a2", "a3", "other-base"} <= set(rows) and rows["a1"]["kind"] == "lora" and rows["a1"]["parameters"]
    clip = CLIPS[0]
    text = setup[2][None][clip.name]
    assert post(url, clip, "base", response_format="text").text == text + "\n"
    assert post(url, clip, "base", response_format="srt").text.startswith("1\n00:00:")
    assert post(url, clip, "base", response_format="vtt").text.startswith("WEBVTT\n\n")
    verbose = post(url, clip, "base", response_format="verbose_json").json()
    assert verbose["text"] == text and verbose["segments"] and verbose["duration"] > 4


def one_line_error(r, status, needle):
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]["message"]
    assert needle in message and "\n" not in message and "Traceback" not in message, message
    return message


def test_bad_requests_get_their_status_and_one_line_and_the_server_keeps_serving(setup, server):
    url, _ = server
    clip = CLIPS[0]
    files = {"file": ("empty.wav", b"", "audio/wav")}
    one_line_error(httpx.post(f"{url}/v1/audio/transcriptions", files=files, data={"model": "base"}), 400, "empty")
    files = {"file": ("noise.wav", b"RIFF" + bytes(range(256)) * 4, "audio/wav")}
    one_line_error(httpx.post(f"{url}/v1/audio/transcriptions", files=files, data={"model": "base"}), 400, "noise.wav")
    message = one_line_error(post(url, clip, "nope"), 404, "no adapter 'nope'; available: a1, a2, a3, other-base")
    assert "base" in message
    one_line_error(post(url, clip, "../adapters/a1"), 404, "no adapter")
    one_line_error(post(url, clip, "other-base"), 400, "was made for base")
    one_line_error(post(url, clip, "base", temperature="0.4"), 400, "only 0")
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nunterminated'
    r = httpx.post(f"{url}/v1/audio/transcriptions", content=body,
                   headers={"content-type": "multipart/form-data; boundary=xyz"})  # fmt: skip
    assert r.status_code == 400 and "\n" not in r.json()["error"]["message"]
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:  # gone mid-upload
        s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n")  # fmt: skip
    assert post(url, clip, "a1").json()["text"] == setup[2]["a1"][clip.name]


def test_fifty_requests_against_a_queue_of_eight_get_200_or_503_with_retry_after(setup):
    root, base, expected = setup
    with running_server(base, adapters=str(root / "adapters"), max_batch=1, queue_size=8) as (url, _):
        with ThreadPoolExecutor(50) as pool:
            replies = list(pool.map(lambda i: post(url, CLIPS[i % 2], ADAPTERS[i % 3]), range(50)))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 8, codes
        busy = next(r for r in replies if r.status_code == 503)
        assert busy.headers["retry-after"] and "busy" in busy.json()["error"]["message"]
        for i, r in enumerate(replies):
            if r.status_code == 200:
                assert r.json()["text"] == expected[ADAPTERS[i % 3]][CLIPS[i % 2].name]
        assert post(url, CLIPS[0], "base").json()["text"] == expected[None][CLIPS[0].name]


def test_a_folder_added_after_start_is_served_and_its_file_is_read_once(setup, server, monkeypatch):
    import shutil

    import speechpeft.serve.pool as pool_module

    root, _, expected = setup
    url, _ = server
    reads, real = [], pool_module.read_adapter
    monkeypatch.setattr(pool_module, "read_adapter", lambda path: reads.append(str(path)) or real(path))
    late = root / "adapters" / "late"
    shutil.copytree(root / "adapters" / "a1", late)  # a1's weights under a new name
    try:
        assert "late" in [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        for _ in range(3):
            assert post(url, CLIPS[0], "late").json()["text"] == expected["a1"][CLIPS[0].name]
        assert reads == [str(late)], reads
    finally:
        shutil.rmtree(late)


def test_with_vad_a_long_file_is_served_as_its_chunks_equal_to_transcribe_vad(setup, tmp_path):
    pytest.importorskip("silero_vad")
    import numpy as np
    import soundfile as sf

    root, base, _ = setup
    gap = np.zeros(8000, np.float32)
    audio = np.concatenate([p for c in CLIPS for p in (sf.read(c, dtype="float32")[0], gap)])
    sf.write(tmp_path / "long.wav", audio, 16_000)  # 11 s: past the tiny model's 3 s window
    args = ["transcribe", str(tmp_path / "long.wav"), "--model", str(base), "--adapter", str(root / "adapters" / "a1")]
    assert main([*args, "--vad", "-f", "json", "-o", str(tmp_path / "cli"), "--no-progress"]) == 0
    want = json.loads((tmp_path / "cli" / "long.json").read_text())
    with running_server(base, adapters=str(root / "adapters"), vad=True) as (url, _):
        got = post(url, tmp_path / "long.wav", "a1", response_format="verbose_json").json()
    assert len(want["segments"]) > 1
    assert [(s["start"], s["end"], s["text"]) for s in got["segments"]] == [
        (s["start"], s["end"], s["text"]) for s in want["segments"]
    ]
