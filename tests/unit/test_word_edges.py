"""Word edges at pauses (speechpeft/infer/word_edges.py): words beside a pause are moved to the
speech regions a VAD found, and nothing else moves; `--word-edges` reaches the words in both
decoding modes, with an adapter. Measured on real speech: bench/word_timestamps.md."""

import json

import numpy as np
import pytest
from conftest import DATA
from test_transcribe import setup  # noqa: F401 (a fixture)

from speechpeft.cli import main
from speechpeft.data import load_audio
from speechpeft.errors import SpeechPeftError
from speechpeft.infer import TranscribeOptions
from speechpeft.infer.word_edges import EdgeRule, snap_words
from speechpeft.models import Segment, Word


def seg(*words):
    return Segment(words[0][0], words[-1][1], " ".join(w[2] for w in words), tuple(Word(*w) for w in words))


def test_words_beside_a_pause_meet_the_speech_and_the_rest_stay():
    segments = [
        seg((0.3, 0.6, "one"), (0.6, 1.0, "two"), (1.0, 1.9, "three")),  # "three" runs 0.7 s into the pause
        Segment(1.9, 1.9, ""),  # no words: left alone
        seg((2.1, 2.5, "four"), (2.5, 2.8, "five")),  # "four" starts 0.3 s inside the pause
    ]
    regions = [(0.2, 1.2), (2.4, 3.0)]
    out = snap_words(segments, regions, reach=0.25)
    words = [w for s in out for w in s.words]
    assert [(w.start, w.end) for w in words] == [(0.2, 0.6), (0.6, 1.0), (1.0, 1.2), (2.4, 2.5), (2.5, 3.0)]
    assert [w.word for w in words] == ["one", "two", "three", "four", "five"]
    assert (out[0].start, out[0].end, out[2].start, out[2].end) == (0.2, 1.2, 2.4, 3.0)  # segments span their words
    assert out[1] == segments[1]
    alone = snap_words(segments, regions, reach=0.0)  # reach 0: only clipped, never moved outwards
    assert [(w.start, w.end) for s in alone for w in s.words] == [
        (0.3, 0.6), (0.6, 1.0), (1.0, 1.2), (2.4, 2.5), (2.5, 2.8)
    ]  # fmt: skip


def test_reach_bounds_the_move_and_words_in_silence_keep_their_times():
    segments = [seg((1.0, 1.4, "far"), (1.4, 1.5, "near")), seg((4.0, 4.3, "ghost"))]
    out = snap_words(segments, [(0.5, 1.6)], reach=0.25)
    assert [(w.start, w.end) for s in out for w in s.words] == [(1.0, 1.4), (1.4, 1.6), (4.0, 4.3)]
    assert (out[1].start, out[1].end) == (4.0, 4.3)


def fixed_regions(monkeypatch, regions):
    calls = []

    def regions_of(self, audio):
        calls.append(len(audio))
        return regions

    monkeypatch.setattr(EdgeRule, "regions", regions_of)
    return calls


@pytest.mark.parametrize("vad", [False, True])
def test_word_edges_reach_the_words_with_an_adapter(setup, tiny_whisper_dir, tmp_path, monkeypatch, vad):  # noqa: F811
    root, audio, adapters = setup
    calls = fixed_regions(monkeypatch, [(1.5, 3.1)])
    if vad:  # the tone has no speech for silero: chunk the whole file, so that it is decoded at all
        monkeypatch.setattr("speechpeft.data.vad.speech_regions", lambda a, rate=16_000: [(0, len(a))])
    base = ["transcribe", "--model", str(tiny_whisper_dir), "--adapter", str(adapters[0]), "--language", "en",
            "--no-progress", "-f", "json", "--word-timestamps", str(audio[3]), *(["--vad"] if vad else [])]  # fmt: skip
    records = {}
    for edges in ("vad", "attention"):
        assert main([*base, "--word-edges", edges, "-o", str(tmp_path / edges)]) == 0
        records[edges] = json.loads((tmp_path / edges / f"{audio[3].stem}.json").read_text())
    assert calls == [int(3.3 * 16_000)]  # once, for the default only, on the whole file
    aligned = [w for s in records["attention"]["segments"] for w in s["words"]]
    snapped = [w for s in records["vad"]["segments"] for w in s["words"]]
    assert aligned and [w["word"] for w in snapped] == [w["word"] for w in aligned]

    def touching(w):
        return w["end"] >= 1.5 and w["start"] <= 3.1

    assert any(touching(w) for w in aligned)  # the random model's words meet the region (and cross its edges)
    assert all(1.5 <= w["start"] <= w["end"] <= 3.1 for w in snapped if touching(w))
    assert snapped != aligned
    assert records["vad"]["word_edges"].startswith("cross-attention alignment, edges at silero-vad speech")
    assert records["attention"]["word_edges"] == "cross-attention alignment"


def test_a_bad_word_edges_value_is_a_one_line_error():
    with pytest.raises(SpeechPeftError, match="^--word-edges must be one of vad, attention, got 'dtw'$"):
        TranscribeOptions(word_edges="dtw")


def test_edge_rule_regions_are_seconds_of_the_speech(tmp_path):
    """A real LibriVox clip with 1 s of near-silence before it: one speech region, in seconds."""
    clip = load_audio(DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-0880.flac", 16_000)
    quiet = np.random.default_rng(0).normal(0, 1e-4, 16_000).astype(np.float32)
    regions = EdgeRule().regions(np.concatenate([quiet, clip, quiet]))
    assert regions and regions == sorted(regions)
    assert 1.0 <= regions[0][0] < 1.5 and 1.0 + len(clip) / 16_000 - 0.5 < regions[-1][1] <= 2.0 + len(clip) / 16_000
