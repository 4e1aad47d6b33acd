"""`speechpeft serve` on the real openai/whisper-base: OpenAI's own client on real LibriVox speech."""

import json

import pytest
from conftest import DATA, REAL_MODEL, requires_real_model
from serve_helpers import running_server
from tiny import random_lora_adapter

from speechpeft.eval import error_rate, make_normaliser

pytestmark = [pytest.mark.integration, requires_real_model]

CLIPS = sorted((DATA / "librivox").glob("*.flac"))
TRANSCRIPTS = json.loads((DATA / "librivox" / "transcripts.json").read_text())


def test_the_openai_client_gets_the_librivox_clips_right_from_the_real_base_and_through_an_adapter(tmp_path):
    openai = pytest.importorskip("openai")
    # random weights small enough to keep the words: the server's plumbing is under test, not the adapter
    random_lora_adapter(REAL_MODEL, tmp_path / "adapters" / "gentle", seed=1, std=0.05, targets="attn_qv")
    with running_server(REAL_MODEL, adapters=str(tmp_path / "adapters")) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        for model in ("base", "gentle"):
            hyps = []
            for clip in CLIPS:
                with open(clip, "rb") as f:
                    hyps.append(client.audio.transcriptions.create(model=model, file=f, language="en").text)
            refs = [TRANSCRIPTS[c.name] for c in CLIPS]
            wer = error_rate(refs, hyps, "wer", make_normaliser("whisper_en")).rate
            assert wer <= 0.08, (model, wer, hyps)
