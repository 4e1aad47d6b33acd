"""Manifests, audio loading and batching: every bad input is one line naming file:line."""

import json

import numpy as np
import pytest
import soundfile as sf

from speechpeft.data import (
    AudioError,
    ManifestError,
    bucketed_batches,
    check_audio_file,
    load_audio,
    read_manifest,
    sorted_batches,
)


def write_manifest(folder, lines):
    path = folder / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def row(**kw):
    base = {"audio_filepath": "a.wav", "text": "你好", "duration": 1.0}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not None}, ensure_ascii=False)


def test_paths_are_relative_to_the_manifest_and_optional_fields_kept(tmp_path):
    sub = tmp_path / "corpus"
    sub.mkdir()
    utts = read_manifest(write_manifest(sub, [row(speaker="k1", language="zh"), "", row(audio_filepath="/abs/b.wav")]))
    assert utts[0].audio == sub / "a.wav" and utts[0].speaker == "k1" and utts[0].language == "zh"
    assert str(utts[1].audio) == "/abs/b.wav"
    assert utts[1].where.endswith("m.jsonl:3")  # blank line 2 is skipped, line numbers are the file's


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"audio_filepath": "a.wav", "text": "x",', "m.jsonl:2: not valid JSON"),
        (row(text=None), "m.jsonl:2: missing required field 'text'"),
        (row(duration=-1), "m.jsonl:2: 'duration' must be a positive number"),
        (row(text=5), "m.jsonl:2: 'text' must be a string"),
        ("[1, 2]", "m.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_manifest_lines_name_file_and_line(tmp_path, line, message):
    with pytest.raises(ManifestError) as e:
        read_manifest(write_manifest(tmp_path, [row(), line]))
    assert message in one_line(e)


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="holds no utterances"):
        read_manifest(write_manifest(tmp_path, [""]))


def test_stereo_44k1_is_downmixed_and_resampled(tmp_path):
    t = np.arange(44_100) / 44_100
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1).astype(np.float32), 44_100)
    audio = load_audio(tmp_path / "st.wav", 16_000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.shape[0] == 16_000
    peak = np.abs(audio[1000:-1000]).max()
    assert peak == pytest.approx(0.75, abs=0.02)  # the mean of the two channels


@pytest.mark.parametrize("case", ["missing", "directory", "corrupt", "empty", "nan"])
def test_bad_audio_is_one_line_naming_where(tmp_path, case):
    path = tmp_path / "x.wav"
    if case == "directory":
        path.mkdir()
    elif case == "corrupt":
        path.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    elif case == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 16_000)
    elif case == "nan":
        sf.write(path, np.full(1600, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    expected = {"missing": "does not exist", "directory": "is a directory", "corrupt": "cannot decode",
                "empty": "is empty", "nan": "NaN or inf"}[case]  # fmt: skip
    with pytest.raises(AudioError) as e:
        load_audio(path, 16_000, where="train.jsonl:7")
    msg = one_line(e)
    assert msg.startswith("train.jsonl:7: ") and expected in msg
    if case != "nan":  # the header check catches everything a header can show
        with pytest.raises(AudioError, match=expected):
            check_audio_file(path, "train.jsonl:7")


def test_bucketed_batches_cover_each_utterance_once_and_depend_only_on_seed_and_epoch(tmp_path):
    lines = [row(audio_filepath=f"{i}.wav", duration=0.5 + (i * 7 % 23) / 10) for i in range(50)]
    utts = read_manifest(write_manifest(tmp_path, lines))
    b0 = bucketed_batches(utts, 4, seed=1, epoch=0)
    assert sorted(i for b in b0 for i in b) == list(range(50))
    assert b0 == bucketed_batches(utts, 4, seed=1, epoch=0)
    assert b0 != bucketed_batches(utts, 4, seed=1, epoch=1)
    spread = np.mean([utts[b[-1]].duration - utts[b[0]].duration for b in b0 if len(b) > 1])
    assert spread < 1.0  # similar lengths share a batch (durations span 2.2 s)
    order = [i for b in sorted_batches(utts, 8) for i in b]
    assert [utts[i].duration for i in order] == sorted((u.duration for u in utts), reverse=True)
