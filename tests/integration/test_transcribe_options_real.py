"""openai-whisper's options on the real openai/whisper-base: word timestamps at known joins of real
speech, a stretch of noise with and without fallback, and an initial prompt that fixes a name."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, REAL_MODEL, ROOT, requires_real_model

sys.path.insert(0, str(ROOT / "bench"))
from word_joins import TOLERANCE, join, join_errors  # noqa: E402

from speechpeft.cli import main
from speechpeft.data import load_audio

pytestmark = [pytest.mark.integration, requires_real_model]

CLIPS = DATA / "librivox"
NAMES = sorted(json.loads((CLIPS / "transcripts.json").read_text()))
PAUSES = [1.0, 1.6, 0.8, 2.2]  # seconds of near-silence between the five clips (as bench/word_timestamps.py)
RATE = 16_000


def joined(path):
    """The five clips, cut to their speech, joined by known pauses; returns each clip's (start, end) s."""
    audio, spans = join([load_audio(CLIPS / n, RATE) for n in NAMES], PAUSES, seed=0)
    sf.write(path, audio, RATE)
    return spans


def transcribe(tmp_path, audio, *options, out="out"):
    args = ["transcribe", "--model", REAL_MODEL, "--language", "en", "--no-progress", "-f", "json,srt",
            "--engine", "torch", "-o", str(tmp_path / out), str(audio), *options]  # fmt: skip
    assert main(args) == 0
    return json.loads((tmp_path / out / f"{audio.stem}.json").read_text())


def test_word_timestamps_at_the_joins_of_real_speech(tmp_path):
    """The words on either side of each join: the first word of a clip should start where its
    speech starts, the last end where it ends. Issue 19 asks for 90 % within 0.2 s; with the word
    edges at silero-vad's speech (the default) 9 of 10 are (bench/word_timestamps.md; alignment
    alone: 8 of 10, with a half-second miss)."""
    spans = joined(tmp_path / "joined.wav")
    record = transcribe(tmp_path, tmp_path / "joined.wav", "--word-timestamps")
    words = [w for seg in record["segments"] for w in seg["words"]]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(w["start"] <= w["end"] for w in words)
    errors = join_errors(words, spans)
    close = sum(abs(e) <= TOLERANCE for e in errors)
    print("join errors (s):", [round(e, 2) for e in errors], f"{close}/{len(errors)} within {TOLERANCE} s")
    assert close >= 0.9 * len(errors) and max(map(abs, errors)) <= 0.3
    srt = (tmp_path / "out" / "joined.srt").read_text(encoding="utf-8")
    first = f"1\n00:00:00,{round(words[0]['start'] * 1000):03d} --> "  # cues follow the words
    assert words[0]["start"] < 1 and srt.startswith(first)


def test_a_stretch_of_noise_gives_no_words_with_fallback_and_no_speech(tmp_path):
    """10 s of white noise between two clips. With openai-whisper's fallback and no-speech
    thresholds no word lands in it; the issue asked to show that without them some do, and on
    this input whisper-base writes none either (white, pink, quiet and humming noise tried)."""
    a = load_audio(CLIPS / NAMES[1], RATE)
    b = load_audio(CLIPS / NAMES[4], RATE)
    noise = np.random.default_rng(1).normal(0, 0.05, 10 * RATE).astype(np.float32)
    sf.write(tmp_path / "noisy.wav", np.concatenate([a, noise, b]), RATE)
    n0, n1 = len(a) / RATE, (len(a) + len(noise)) / RATE
    fallback = ["--temperature", "0,0.2,0.4,0.6,0.8,1.0", "--no-speech-threshold", "0.6", "--word-timestamps"]
    results = {}
    for label, options in (("plain", ["--word-timestamps"]), ("fallback", fallback)):
        record = transcribe(tmp_path, tmp_path / "noisy.wav", *options, out=label)
        inside = [
            w["word"] for s in record["segments"] for w in s["words"] if n0 + 0.2 < w["start"] and w["end"] < n1 - 0.2
        ]
        results[label] = (inside, " ".join(s["text"] for s in record["segments"]), record)
    assert results["fallback"][0] == []
    assert results["plain"][0] == []  # the honest other half: no hallucination here to remove
    for label in results:  # both still read the speech on either side
        assert "ill-disposed young man" in results[label][1] and "amiable himself" in results[label][1]
    assert all(s["temperature"] == 0.0 for s in results["fallback"][2]["segments"])
    assert results["fallback"][2]["decoding"]["no_speech_threshold"] == 0.6


@pytest.mark.skipif(  # CI (SPEECHPEFT_REQUIRE_TOOLS) installs espeak-ng: there its absence fails instead
    shutil.which("espeak-ng") is None and not os.environ.get("SPEECHPEFT_REQUIRE_TOOLS"),
    reason="needs espeak-ng (apt-get install -y espeak-ng)",
)
def test_an_initial_prompt_fixes_the_spelling_of_a_name(tmp_path):
    """SYNTHETIC speech (espeak-ng): whisper-base alone writes "We met Marequist at the station."."""
    wav = tmp_path / "name.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), "We met Xiomara Quispe at the station."],
                   check=True)  # fmt: skip
    bare = transcribe(tmp_path, wav, out="bare")["text"]
    prompted = transcribe(tmp_path, wav, "--initial-prompt", "Xiomara Quispe", out="prompted")
    assert "Xiomara Quispe" not in bare
    assert "Xiomara Quispe" in prompted["text"]
    assert prompted["decoding"]["initial_prompt"] == "Xiomara Quispe"
