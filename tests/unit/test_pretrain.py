"""`speechpeft pretrain` (continued wav2vec 2.0 pretraining) on a tiny random checkpoint and a
folder of untranscribed audio: the self-supervised task is learnt, a SIGKILL loses nothing, the
output loads as a CTC base, and a checkpoint without a quantizer is refused in one line."""

import json
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from tiny import (
    child_env,
    make_tiny_ctc_corpus,
    make_tiny_wav2vec2_dir,
    make_tiny_wav2vec2_pretraining_dir,
    write_tiny_cpt_recipe,
)

from speechpeft.cli import main


def rows(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpt")
    model = make_tiny_wav2vec2_pretraining_dir(tmp / "w2v-pt")
    audio = make_tiny_ctc_corpus(tmp / "corpus")["train"].parent  # the folder: its .flac files, no text
    (audio / "all.jsonl").unlink()
    return tmp, model, audio


def test_contrastive_loss_falls_and_the_output_is_a_ctc_base(setup, tmp_path, capsys):
    tmp, model, audio = setup
    recipe = write_tiny_cpt_recipe(tmp_path / "cpt.yaml", model, audio, tmp_path / "runs", max_steps=30)
    assert main(["pretrain", "--recipe", str(recipe), "--no-progress"]) == 0
    assert "contrastive accuracy" in capsys.readouterr().out
    run = tmp_path / "runs" / "tiny-cpt"
    train = rows(run, "train")
    assert len(train) == 30 and all({"contrastive", "accuracy", "perplexity", "temperature"} <= set(r) for r in train)
    first, last = (sum(r["contrastive"] for r in part) / 5 for part in (train[:5], train[-5:]))
    assert last < first - 0.1, (first, last)
    dev = rows(run, "dev")
    assert [r["step"] for r in dev] == [0, 10, 20, 30] and dev[-1]["loss"] < dev[0]["loss"]
    assert train[-1]["temperature"] < train[0]["temperature"]  # the Gumbel temperature anneals
    for name in ("model/config.json", "model/model.safetensors", "model/preprocessor_config.json", "curves.png",
                 "report.md", "checkpoint.pt"):  # fmt: skip
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in report and f"{dev[0]['loss']:.4f} -> {dev[-1]['loss']:.4f}" in report

    from speechpeft.models import Wav2Vec2Host, load_host

    host = load_host(str(run / "model"), device="cpu")  # what a CTC recipe's model.name loads
    assert isinstance(host, Wav2Vec2Host) and host.tokenizer is None


KILLER = """
import os, signal, sys
import speechpeft.train.loop as loop
recipe, at = sys.argv[1:]
original = loop._update

def update(run, *args):  # die before the update numbered `at`
    if run.counters["step"] == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(run, *args)

loop._update = update
from speechpeft.cli import main
sys.exit(main(["pretrain", "--recipe", recipe, "--no-progress"]))
"""


def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(setup, tmp_path):
    tmp, model, audio = setup
    recipe = write_tiny_cpt_recipe(tmp_path / "cpt.yaml", model, audio, tmp_path / "runs", max_steps=10,
                                   checkpoint_every=4, eval_every=5)  # fmt: skip
    env = child_env()
    killed = subprocess.run([sys.executable, "-c", KILLER, str(recipe), "6"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "runs" / "tiny-cpt"
    assert max(r["step"] for r in rows(run, "train")) == 6 and not (run / "model").exists()
    assert main(["pretrain", "--recipe", str(recipe), "--no-progress", "--resume"]) == 0
    assert [r["step"] for r in rows(run, "train")] == list(range(1, 11))
    assert main(["pretrain", "--recipe", str(recipe), "--no-progress", "name=straight"]) == 0
    resumed = load_file(run / "model" / "model.safetensors")
    straight = load_file(tmp_path / "runs" / "straight" / "model" / "model.safetensors")
    assert resumed.keys() == straight.keys() and resumed
    changed = 0
    original = load_file(model / "model.safetensors")
    for key in straight:
        assert resumed[key].equal(straight[key]), key
        changed += not straight[key].equal(original[key])
    assert changed > 10  # the transformer did train
    assert [r["loss"] for r in rows(run, "train")] == [r["loss"] for r in rows(tmp_path / "runs" / "straight", "train")]


def test_a_checkpoint_without_a_quantizer_is_refused_in_one_line(setup, tmp_path, capsys):
    tmp, _, audio = setup
    ctc = make_tiny_wav2vec2_dir(tmp_path / "w2v-ctc")  # a Wav2Vec2ForCTC: no quantizer weights
    recipe = write_tiny_cpt_recipe(tmp_path / "cpt.yaml", ctc, audio, tmp_path / "runs", max_steps=2)
    assert main(["pretrain", "--recipe", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no quantizer" in err[0] and "pretraining checkpoint" in err[0], err
    assert not (tmp_path / "runs" / "tiny-cpt").exists()


def test_a_model_without_a_pretraining_objective_is_refused_by_its_type(setup, tmp_path, tiny_whisper_dir, capsys):
    _, _, audio = setup
    recipe = write_tiny_cpt_recipe(tmp_path / "cpt.yaml", tiny_whisper_dir, audio, tmp_path / "runs", max_steps=2)
    assert main(["pretrain", "--recipe", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a 'whisper' model; continued pretraining serves wav2vec2" in err[0], err
