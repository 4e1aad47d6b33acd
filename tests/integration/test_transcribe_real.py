"""`speechpeft transcribe` with the real openai/whisper-base on real English speech (LibriVox)."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, REAL_MODEL, requires_real_model

from speechpeft.cli import main
from speechpeft.eval import error_rate, make_normaliser

pytestmark = [pytest.mark.integration, requires_real_model]

CLIPS = DATA / "librivox"
TRANSCRIPTS = json.loads((CLIPS / "transcripts.json").read_text())
NAMES = sorted(TRANSCRIPTS)
GAP_SECONDS = 0.6
REPEATS = 5  # the five clips (24.7 s) five times over: 2 min 19 s


def wer(refs, hyps):
    return error_rate(refs, hyps, "wer", make_normaliser("whisper_en")).rate


def joined_file(path):
    """Real utterances joined with short pauses into one file longer than two minutes."""
    gap = np.zeros(int(GAP_SECONDS * 16_000), np.float32)
    parts = [p for _ in range(REPEATS) for n in NAMES for p in (sf.read(CLIPS / n, dtype="float32")[0], gap)]
    audio = np.concatenate(parts)
    sf.write(path, audio, 16_000)
    return len(audio) / 16_000, " ".join(TRANSCRIPTS[n] for n in NAMES * REPEATS)


def read_srt(path):
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    stamp = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    out = []
    for i, block in enumerate(blocks, start=1):
        index, times, *text = block.splitlines()
        assert index == str(i)
        m = re.fullmatch(f"{stamp} --> {stamp}", times)
        assert m, times
        v = [int(x) for x in m.groups()]
        start = v[0] * 3600 + v[1] * 60 + v[2] + v[3] / 1000
        end = v[4] * 3600 + v[5] * 60 + v[6] + v[7] / 1000
        out.append((start, end, " ".join(text)))
    return out


def test_librivox_clips_and_a_two_minute_join_transcribe_well_with_ordered_segments(tmp_path, capsys):
    seconds, reference = joined_file(tmp_path / "joined.flac")
    assert seconds >= 120
    files = [CLIPS / n for n in NAMES] + [tmp_path / "joined.flac"]
    args = ["transcribe", *map(str, files), "--model", REAL_MODEL, "--language", "en", "-f", "json,srt"]
    assert main([*args, "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "transcribed 6 file(s)" in capsys.readouterr().out

    hyps = [json.loads((tmp_path / "out" / f"{n[:-5]}.json").read_text())["text"] for n in NAMES]
    assert wer([TRANSCRIPTS[n] for n in NAMES], hyps) <= 0.08

    segments = read_srt(tmp_path / "out" / "joined.srt")
    assert len(segments) >= 10
    starts = [s for s, _, _ in segments]
    assert starts == sorted(starts) and all(e >= s for s, e, _ in segments)
    assert segments[-1][1] <= seconds + 1 and segments[-1][1] >= seconds - 10  # the segments reach the end
    assert wer([reference], [" ".join(t for _, _, t in segments)]) <= 0.10


def test_vad_chunking_gives_the_same_words_on_the_joined_file(tmp_path, capsys):
    pytest.importorskip("silero_vad")
    seconds, reference = joined_file(tmp_path / "joined.flac")
    args = ["transcribe", str(tmp_path / "joined.flac"), "--model", REAL_MODEL, "--language", "en", "-f", "srt"]
    assert main([*args, "--vad", "-o", str(tmp_path / "vad"), "--no-progress"]) == 0
    segments = read_srt(tmp_path / "vad" / "joined.srt")
    starts = [s for s, _, _ in segments]
    assert starts == sorted(starts) and segments[-1][1] <= seconds + 1
    assert wer([reference], [" ".join(t for _, _, t in segments)]) <= 0.10
