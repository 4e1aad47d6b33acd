"""The library pieces the demo needs: finding adapters, diffs of a transcript, cutting a recording."""

import numpy as np
import pytest
from tiny import random_lora_adapter

from speechpeft.adapters.catalog import find_adapters
from speechpeft.eval import error_rate, make_normaliser
from speechpeft.eval.metrics import aligned_units
from speechpeft.models import Segment
from speechpeft.train.references import split_at_segments


def test_find_adapters_searches_folders_and_globs_and_lists_unreadable_ones_with_their_error(
    tmp_path, tiny_whisper_dir
):
    random_lora_adapter(tiny_whisper_dir, tmp_path / "runs" / "a" / "adapter", seed=1, std=0.1)
    random_lora_adapter(tiny_whisper_dir, tmp_path / "runs" / "b" / "adapter", seed=2, std=0.1)
    broken = tmp_path / "runs" / "c" / "adapter"
    broken.mkdir(parents=True)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    by_glob = find_adapters(str(tmp_path / "runs" / "*" / "adapter"))
    by_folder = find_adapters(tmp_path / "runs")
    assert [e.name for e in by_folder] == ["a/adapter", "b/adapter", "c/adapter"]
    assert {e.path for e in by_glob} == {e.path for e in by_folder}
    a, _, c = by_folder
    assert a.kind == "lora" and a.error is None and a.parameters > 0 and a.base_model
    assert c.kind is None and "not a readable safetensors file" in c.error and "unreadable" in c.label()
    assert find_adapters(tmp_path / "nothing-here") == []
    assert len(find_adapters([tmp_path / "runs", str(tmp_path / "runs" / "*" / "adapter")])) == 3  # no duplicates


@pytest.mark.parametrize("metric", ["wer", "cer"])
def test_aligned_units_show_every_edit_that_error_rate_counts(metric):
    norm = make_normaliser("basic")
    ref, hyp = "the cat sat on the mat", "the bat sat on mat today please"
    units = aligned_units(ref, hyp, metric, norm)
    edits = sum(op != "equal" for _, op in units)
    rate = error_rate([ref], [hyp], metric, norm)
    assert edits == rate.substitutions + rate.deletions + rate.insertions
    kept = [u.split(" [")[0] for u, op in units if op != "delete"]
    assert ("" if metric == "cer" else " ").join(kept).replace(" ", "") == hyp.replace(" ", "")
    assert aligned_units("", "hello", metric, norm)[0][1] == "insert"


def test_a_recording_is_cut_at_segment_boundaries_into_clips_long_enough_to_clone_from():
    rate = 1000
    audio = np.arange(10 * rate, dtype=np.float32)
    segments = [Segment(0.0, 0.5, "a"), Segment(0.5, 2.5, "b"), Segment(2.5, 2.6, " "), Segment(2.6, 6.0, "c"),
                Segment(6.0, 9.5, "d"), Segment(9.5, 10.0, "e")]  # fmt: skip
    clips = split_at_segments(audio, rate, segments, min_seconds=1.5)
    assert [t for _, t in clips] == ["a b", "c", "d e"]  # short pieces join a neighbour; the blank one is skipped
    assert [len(c) for c, _ in clips] == [2500, 3400, 4000]
    assert clips[1][0][0] == 2600  # the clip starts where its segment does
    assert split_at_segments(audio, rate, [Segment(0, 1, "")], 1.5) == []


def test_speechpeft_demo_parses_its_own_options_with_one_line_errors(capsys):
    from speechpeft.cli import main

    assert main(["demo", "--help"]) == 0
    assert "--tts-base" in capsys.readouterr().out
    assert main(["demo", "--port", "eighty"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("speechpeft: error: demo: argument --port")
    assert main(["demo", "--max-seconds", "0"]) == 2
    assert capsys.readouterr().err == "speechpeft: error: max_seconds and max_upload_mb must be > 0\n"


def test_uploads_are_copied_under_generated_names_and_the_workspace_goes_with_the_demo(tmp_path):
    import sys

    import soundfile as sf

    sys.path.insert(0, str(__import__("demo_helpers").DEMOS))
    from service import Demo, DemoConfig, DemoError

    sent = tmp_path / "my clip (final).wav"
    sf.write(sent, np.zeros(16_000, np.float32) + 0.1, 16_000)
    demo = Demo(DemoConfig(max_seconds=0.5))
    root = demo.workspace.root
    folder = demo.workspace.request()
    with pytest.raises(DemoError, match=r"^my clip \(final\).wav: 1.0 s of audio; this demo takes at most 0.5 s$"):
        demo.intake(str(sent), folder, demo.config.max_seconds)
    upload = demo.intake(str(sent), folder, None)
    assert upload.path.parent == folder and upload.path.name.startswith("upload-") and upload.path.suffix == ".wav"
    assert upload.name == sent.name and upload.seconds == 1.0
    demo.close()
    assert not root.exists()
