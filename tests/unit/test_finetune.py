"""`speechpeft finetune` end to end on a tiny random Whisper and 8 utterances, in-process."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny import child_env, make_tiny_corpus, write_tiny_recipe

from speechpeft.cli import main


@pytest.fixture
def tiny_recipe(tmp_path, tiny_whisper_dir):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    return lambda **train: write_tiny_recipe(
        tmp_path / "tiny.yaml", tiny_whisper_dir, corpus, tmp_path / "runs", **train
    )


def rows(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_finetune_cli_trains_loss_falls_and_writes_every_artefact(tiny_recipe, capsys):
    recipe = tiny_recipe(max_steps=16, lr=3e-2)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 0
    assert "test CER: zero-shot" in capsys.readouterr().out
    run = recipe.parent / "runs" / "tiny"
    losses = [r["loss"] for r in rows(run, "train")]
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    assert [r["step"] for r in rows(run, "dev")] == [0, 4, 8, 12, 16]
    for name in (
        "adapter/adapter_model.safetensors",
        "metrics.jsonl",
        "curves.png",
        "ranks.png",
        "report.md",
        "checkpoint.pt",
    ):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in report and "zero-shot" in report and "adapted" in report and "trainable parameters" in report
    assert "S2-LoRA λ sparsity" in report and "ranks.png" in report
    zero, test = rows(run, "zero_shot")[0], rows(run, "test")[0]
    assert f"{zero['cer']:.4f}" in report and f"{test['cer']:.4f}" in report


def _sparse_recipe(tmp_path, tiny_whisper_dir, keep_min_zero, l1):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    adapter = {"kind": "s2lora", "rank": 8, "init": "b0", "lam_lr": 10, "l1": l1, "keep_min_zero": keep_min_zero}
    return write_tiny_recipe(tmp_path / "tiny.yaml", tiny_whisper_dir, corpus, tmp_path / "runs", adapter,
                             max_steps=12, lr=3e-2)  # fmt: skip


def test_best_on_dev_is_chosen_only_among_states_as_sparse_as_the_recipe_asks(tmp_path, tiny_whisper_dir):
    recipe = _sparse_recipe(tmp_path, tiny_whisper_dir, keep_min_zero=0.5, l1=0.9)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    devs = rows(run, "dev")
    for r in devs:  # λ = 1 at the start (init b0), so update 0 is never eligible
        assert (r["ineligible"] is None) == (r["sparsity"] is not None and r["sparsity"] >= 0.5), r
    eligible = [r for r in devs if r["ineligible"] is None]
    assert eligible and len(eligible) < len(devs)
    best = min(eligible, key=lambda r: r["cer"])
    assert rows(run, "test")[0]["step"] == best["step"]
    assert "dev evaluations were not eligible" in (run / "report.md").read_text(encoding="utf-8")


def test_a_run_that_never_gets_sparse_enough_keeps_its_last_state_and_says_so(tmp_path, tiny_whisper_dir):
    recipe = _sparse_recipe(tmp_path, tiny_whisper_dir, keep_min_zero=1.0, l1=1e-6)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    assert all(r["ineligible"] for r in rows(run, "dev")[:-1])
    assert rows(run, "test")[0]["step"] == 12
    assert "no dev evaluation met the recipe" in (run / "report.md").read_text(encoding="utf-8")


def test_existing_run_needs_resume_or_overwrite(tiny_recipe, capsys):
    recipe = tiny_recipe(max_steps=2)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["finetune", "--recipe", str(recipe), "--no-progress", "--overwrite"]) == 0


def test_bad_audio_in_a_manifest_names_file_and_line(tiny_recipe, capsys):
    recipe = tiny_recipe(max_steps=2)
    manifest = recipe.parent / "corpus" / "all.jsonl"
    (recipe.parent / "corpus" / "u3.flac").write_bytes(b"not audio at all" * 20)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"speechpeft: error: {manifest}:4: cannot decode") and "\n" not in err


KILLER = """
import os, signal, sys
import speechpeft.train.loop as loop
recipe, mode, at, *overrides = sys.argv[1:]
original_update, original_save = loop._update, loop.save_checkpoint

def update(run, *args):  # die before the update numbered `at`
    if mode == "update" and run.counters["step"] == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
    return original_update(run, *args)

def save(path, tensors, optimizer, scheduler, counters, *rest):  # die half-way through writing a checkpoint
    if mode == "checkpoint" and counters["step"] == int(at):
        import torch
        real = torch.save
        def torn(obj, f):
            real(obj, f)
            os.truncate(f, os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = torn
    return original_save(path, tensors, optimizer, scheduler, counters, *rest)

loop._update, loop.save_checkpoint = update, save
from speechpeft.cli import main
sys.exit(main(["finetune", "--recipe", recipe, "--no-progress", *overrides]))
"""


def final_state(run_dir):
    """The trained tensors after the last update (the checkpoint), not the best-on-dev adapter."""
    import torch

    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["adapter"]


@pytest.mark.parametrize(
    "mode, at, last_logged",
    [
        ("update", 10, 10),  # killed mid-run, two updates after the checkpoint at 8
        ("checkpoint", 8, 8),  # killed while writing the checkpoint at 8: resumes from 4's
    ],
)
def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(tiny_recipe, mode, at, last_logged):
    # dropout makes every update draw random numbers, so a wrong RNG restore changes the result;
    # a wrong optimizer or scheduler restore changes the final state, which is what is compared
    recipe = tiny_recipe(max_steps=14, checkpoint_every=4, eval_every=3)
    overrides = ["adapter.dropout=0.3"]
    env = child_env()
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(recipe), mode, str(at), *overrides], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = recipe.parent / "runs" / "tiny"
    assert max(r["step"] for r in rows(run, "train")) == last_logged
    assert main(["finetune", "--recipe", str(recipe), "--no-progress", "--resume", *overrides]) == 0
    assert [r["step"] for r in rows(run, "train")] == list(range(1, 15))  # no duplicated or missing rows
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # the torn temp file is gone

    assert main(["finetune", "--recipe", str(recipe), "--no-progress", "name=straight", *overrides]) == 0
    straight_run = recipe.parent / "runs" / "straight"
    for resumed, straight in [
        (final_state(run), final_state(straight_run)),
        (load_file(run / "adapter" / "adapter_model.safetensors"),
         load_file(straight_run / "adapter" / "adapter_model.safetensors")),
    ]:  # fmt: skip
        assert resumed.keys() == straight.keys() and resumed
        for key in straight:
            assert resumed[key].equal(straight[key]), key
    losses = [r["loss"] for r in rows(run, "train")]
    assert losses == [r["loss"] for r in rows(straight_run, "train")]


def test_short_window_training_zero_shot_at_full_window_and_the_window_travels_with_the_adapter(
    tiny_recipe, tmp_path, monkeypatch
):
    """The tiny model's own window is 3 s; train in 2 s. Zero-shot decodes at 3 s, training and
    dev at 2 s, and evaluate / transcribe reuse the adapter's recorded 2 s unless told otherwise."""
    from speechpeft.adapters import read_adapter
    from speechpeft.models.whisper import WhisperHost

    seen = []
    real = WhisperHost.features
    monkeypatch.setattr(WhisperHost, "features", lambda self, *a, **k: seen.append(real(self, *a, **k).shape[-1]) or
                        real(self, *a, **k))  # fmt: skip
    recipe = tiny_recipe(max_steps=2, eval_every=2)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress", "model.window_seconds=2"]) == 0
    run = recipe.parent / "runs" / "tiny"
    assert rows(run, "zero_shot")[0]["window_seconds"] == 3.0
    assert {r["window_seconds"] for r in rows(run, "dev")} == {2.0} and rows(run, "test")[0]["window_seconds"] == 2.0
    assert 300 in seen and 200 in seen and set(seen) == {200, 300}  # mel frames: 3 s zero-shot, 2 s otherwise
    assert read_adapter(run / "adapter").record["host"]["window_seconds"] == 2.0
    monkeypatch.undo()
    from speechpeft.train import load_recipe

    model = load_recipe(str(recipe)).model.name
    manifest = load_recipe(str(recipe)).data.test
    for extra, window in (([], 2.0), (["--window-seconds", "3"], 3.0)):
        out = tmp_path / f"eval{window:g}"
        args = ["evaluate", "--manifest", manifest, "--model", model, "--adapter", str(run / "adapter"), "-o", str(out)]
        assert main([*args, "--no-progress", *extra]) == 0
        assert json.loads(out.with_suffix(".json").read_text())["decoding"]["window_seconds"] == window
    audio = json.loads(Path(manifest).read_text().splitlines()[0])["audio_filepath"]
    args = ["transcribe", str(Path(manifest).parent / audio), "--model", model, "--adapter", str(run / "adapter")]
    assert main([*args, "-f", "json", "-o", str(tmp_path / "tr"), "--no-progress", "--language", "zh"]) == 0
    assert json.loads((tmp_path / "tr" / "u0.json").read_text())["window_seconds"] == 2.0
