"""openai-whisper's options in `speechpeft transcribe` on a tiny Whisper: they reach generate (with
an adapter, and in a mixed-adapter batch), the JSON reports them, word cues match openai-whisper's
writers, and bad values are one-line errors. Real speech: tests/integration/test_transcribe_options_real.py."""

import io
import json

import pytest
from test_transcribe import make_adapter, openai_whisper_writers, setup, tone  # noqa: F401 (setup: a fixture)

from speechpeft.adapters.bank import load_bank, unload_bank
from speechpeft.cli import main
from speechpeft.errors import SpeechPeftError
from speechpeft.infer import TranscribeOptions
from speechpeft.infer.writers import SubtitleLayout, render
from speechpeft.models import DecodeOptions, Segment, Word, load_whisper
from speechpeft.models.decoding import parse_temperatures


def spy_generate(monkeypatch):
    """Record the keyword arguments of every Whisper generate call."""
    from transformers import WhisperForConditionalGeneration

    calls = []
    original = WhisperForConditionalGeneration.generate

    def generate(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", generate)
    return calls


NEW_KEYS = {"temperature", "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", "prompt_ids",
            "prompt_condition_type", "condition_on_prev_tokens", "return_token_timestamps"}  # fmt: skip


def test_every_option_reaches_generate_with_an_adapter(setup, tiny_whisper_dir, tmp_path, monkeypatch):  # noqa: F811
    root, audio, adapters = setup
    calls = spy_generate(monkeypatch)
    base = ["transcribe", "--model", str(tiny_whisper_dir), "--adapter", str(adapters[0]), "--no-progress",
            "--language", "en", str(audio[3])]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert calls and not NEW_KEYS & set(calls[-1])  # no option given: generate is asked what it was before
    calls.clear()
    args = ["--temperature", "0,0.2,0.4", "--initial-prompt", "Dashwood", "--condition-on-previous-text",
            "--word-timestamps", "-f", "json", "-o", str(tmp_path / "all")]  # fmt: skip
    assert main([*base, *args]) == 0
    kw = calls[-1]
    assert kw["temperature"] == (0.0, 0.2, 0.4)
    assert (kw["compression_ratio_threshold"], kw["logprob_threshold"], kw["no_speech_threshold"]) == (2.4, -1.0, 0.6)
    assert kw["condition_on_prev_tokens"] is True and kw["prompt_condition_type"] == "all-segments"
    assert "return_token_timestamps" not in kw  # words come from an alignment pass of their own, after generate
    record = json.loads((tmp_path / "all" / f"{audio[3].stem}.json").read_text())
    assert record["segments"] and all(seg["words"] for seg in record["segments"])
    tok = load_whisper(str(tiny_whisper_dir), device="cpu").processor.tokenizer
    assert tok.decode(kw["prompt_ids"]) == "<|startofprev|> Dashwood"
    calls.clear()
    explicit = ["--temperature", "0.5", "--seed", "3", "--compression-ratio-threshold", "3.1", "--logprob-threshold",
                "-2", "--no-speech-threshold", "0.9", "-o", str(tmp_path / "explicit")]  # fmt: skip
    assert main([*base, *explicit]) == 0
    kw = calls[-1]
    assert kw["temperature"] == 0.5 and kw["do_sample"] is True
    assert (kw["compression_ratio_threshold"], kw["logprob_threshold"], kw["no_speech_threshold"]) == (3.1, -2.0, 0.9)
    assert "prompt_ids" not in kw and "return_token_timestamps" not in kw


def test_json_records_language_temperatures_and_words(setup, tiny_whisper_dir, tmp_path):  # noqa: F811
    root, audio, adapters = setup
    common = ["transcribe", "--model", str(tiny_whisper_dir), "--adapter", str(adapters[1]), "--no-progress",
              "-f", "json", *map(str, audio)]  # fmt: skip
    assert main([*common, "-o", str(tmp_path / "detect"), "--word-timestamps", "--temperature", "0,0.4,0.8"]) == 0
    said = 0
    for a in audio:
        record = json.loads((tmp_path / "detect" / f"{a.stem}.json").read_text())
        assert record["language"] in ("en", "zh") and 0 < record["language_probability"] <= 1
        assert record["decoding"]["temperature"] == [0.0, 0.4, 0.8] and record["decoding"]["word_timestamps"]
        for seg in record["segments"]:
            said += 1
            assert seg["temperature"] in (0.0, 0.4, 0.8)
            assert seg["words"]  # (their text is the random model's bytes, cut at word boundaries)
            for w in seg["words"]:
                assert seg["start"] - 0.02 <= w["start"] <= w["end"] <= seg["end"] + 0.02
    assert said  # the adapted tiny model says something to time
    assert main([*common, "-o", str(tmp_path / "forced"), "--language", "zh"]) == 0
    record = json.loads((tmp_path / "forced" / f"{audio[0].stem}.json").read_text())
    assert record["language"] == "zh" and record["language_probability"] is None
    assert all("temperature" not in s and "words" not in s for s in record["segments"])


def test_a_fallback_retry_in_a_mixed_batch_keeps_each_rows_adapter(setup, tiny_whisper_dir, monkeypatch):  # noqa: F811
    """transformers re-runs the rows that need fallback as a smaller batch; the bank's ids must
    follow, or a retried row is decoded with another row's adapter."""
    import numpy as np
    import soundfile as sf

    root, audio, adapters = setup
    arrays = [np.asarray(sf.read(a, dtype="float32")[0]) for a in audio[:3]]
    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    load_bank(host.model, adapters)
    ids = [0, 1, 0]
    greedy_twice = DecodeOptions(temperatures=(0.0, 0.0), word_timestamps=True)  # a retry decodes alike
    alone = [
        host.transcribe_long([a], "en", adapter_ids=[i], decode=greedy_twice)[0]
        for a, i in zip(arrays, ids, strict=True)
    ]

    decided = []  # the fake decision: row 1 of the first round needs fallback, nothing else does
    original = type(host.model)._need_fallback

    def need_fallback(self, seek_sequence, seek_outputs, index, *rest):
        decided.append(index)
        original(self, seek_sequence, seek_outputs, index, *rest)
        return (len(decided) == 2 and index == 1), False

    monkeypatch.setattr(host.model, "_need_fallback", need_fallback.__get__(host.model))
    host.model._speechpeft_reports = False  # wrap the fake
    mixed = host.transcribe_long(arrays, "en", adapter_ids=ids, decode=greedy_twice)
    unload_bank(host.model)
    assert decided[:4] == [0, 1, 2, 0]  # three rows, then row 1 alone (then any later windows)
    for got, want in zip(mixed, alone, strict=True):
        assert [s.text for s in got.segments] == [s.text for s in want.segments]
        for gs, ws in zip(got.segments, want.segments, strict=True):
            # (the times are not compared: this random model's one-token segments leave DTW nothing to
            # align, so rounding moves them; the real model's word times: tests/integration)
            assert [w.word for w in gs.words] == [w.word for w in ws.words]
    assert any(s.text for t in mixed for s in t.segments)


def word_segments():
    """Segments with words: leading spaces, a pause over 3 s, a long segment, CJK, an arrow."""

    def seg(start, words):
        times, out = start, []
        for text, length in words:
            out.append(Word(times, times + length, text))
            times += length + 0.1
        return Segment(out[0].start, out[-1].end, "".join(w for w, _ in words).strip(), tuple(out))

    return [
        seg(0.0, [(" Hello", 0.4), (" there,", 0.5), (" my", 0.2), (" friend.", 0.6)]),
        seg(
            2.3,
            [
                (" It", 0.2),
                (" is", 0.2),
                (" a", 0.1),
                (" rather", 0.4),
                (" long", 0.3),
                (" sentence", 0.5),
                (" that", 0.2),
                (" goes", 0.3),
                (" on.", 0.4),
            ],
        ),  # fmt: skip
        seg(12.0, [(" After", 0.3), (" a", 0.1), (" pause", 0.5), (" a->b", 0.4)]),
        seg(3601.0, [("你", 0.2), ("好", 0.2)]),
    ]


LAYOUTS = [
    {},
    {"max_line_width": 16, "max_line_count": 2},
    {"max_line_width": 12},
    {"max_words_per_line": 3},
    {"highlight_words": True},
    {"highlight_words": True, "max_line_width": 20, "max_line_count": 1},
    {"max_words_per_line": 2, "max_line_width": 10, "max_line_count": 2},
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_word_cues_equal_openai_whispers_writers_byte_for_byte(layout):
    utils = openai_whisper_writers()
    segs = word_segments()
    result = {
        "segments": [
            {"start": s.start, "end": s.end, "text": " " + s.text,
             "words": [{"start": w.start, "end": w.end, "word": w.word, "probability": 1.0} for w in s.words]}
            for s in segs
        ]
    }  # fmt: skip
    for fmt, writer in (("srt", utils.WriteSRT), ("vtt", utils.WriteVTT)):
        theirs = io.StringIO()
        writer(".").write_result(result, theirs, options=dict(layout))
        assert render(fmt, segs, {}, SubtitleLayout(**layout)) == theirs.getvalue(), fmt


def test_bad_decoding_options_are_one_line_errors(tiny_whisper_dir, tmp_path, capsys):
    cases = [
        (["--temperature", "0,hot"], "--temperature takes comma-separated numbers, e.g. 0,0.2,0.4; got '0,hot'"),
        (["--temperature", "0,-0.2"], "--temperature values must be >= 0, got -0.2"),
        (["--no-speech-threshold", "1.5"], "--no-speech-threshold must be within [0, 1], got 1.5"),
        (["--compression-ratio-threshold", "0"], "--compression-ratio-threshold must be > 0, got 0"),
        (["--initial-prompt", "  "], "--initial-prompt is empty"),
        (
            ["--max-line-width", "20"],
            "--max-line-width, --max-line-count, --max-words-per-line and --highlight-words need --word-timestamps",
        ),  # fmt: skip
        (["--word-timestamps", "--max-line-count", "0"], "--max-line-count must be >= 1, got 0"),
    ]
    wav = tone(tmp_path / "a.wav", 0.5, 300)
    for extra, message in cases:
        code = main(["transcribe", "--model", str(tiny_whisper_dir), "--no-progress", str(wav), *extra])
        assert code == 2, extra
        assert capsys.readouterr().err == f"speechpeft: error: {message}\n", extra


def test_fallback_fills_openai_whispers_defaults_and_no_speech_brings_a_logprob_threshold():
    r = DecodeOptions(temperatures=parse_temperatures("0,0.2,0.4,0.6,0.8,1.0")).resolved()
    assert (r.compression_ratio_threshold, r.logprob_threshold, r.no_speech_threshold) == (2.4, -1.0, 0.6)
    alone = DecodeOptions(no_speech_threshold=0.5).resolved()
    assert (alone.logprob_threshold, alone.compression_ratio_threshold) == (-1.0, None)
    assert DecodeOptions().resolved() == DecodeOptions()  # the default stays one pass, nothing added
    with pytest.raises(SpeechPeftError, match="need --word-timestamps"):
        TranscribeOptions(layout=SubtitleLayout(highlight_words=True))
