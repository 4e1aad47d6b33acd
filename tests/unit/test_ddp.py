"""torchrun: two CPU processes (gloo) train what one process trains, die together, resume exactly.

Every run here is real: ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
speechpeft finetune ...`` on a tiny random Whisper or wav2vec 2.0, against the same recipe in one
process. The corpus has 9 utterances and the global batch is 4, so an epoch ends on a batch of
one: a process with nothing of it must still join the all-reduce.
"""

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny import (
    DROPOUT_OFF,
    make_tiny_corpus,
    make_tiny_ctc_corpus,
    make_tiny_wav2vec2_dir,
    make_tiny_wav2vec2_pretraining_dir,
    torchrun,
    write_tiny_cpt_recipe,
    write_tiny_recipe,
)

from speechpeft.cli import main

TRAIN = dict(max_steps=5, batch_size=4, eval_every=5, checkpoint_every=5, lr=1e-3, warmup_steps=1)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, tiny_whisper_dir):
    tmp = tmp_path_factory.mktemp("ddp-hosts")
    return {
        "whisper": (tiny_whisper_dir, make_tiny_corpus(tmp / "whisper-corpus", n=9)),
        "whisper-2lang": (tiny_whisper_dir, two_languages(make_tiny_corpus(tmp / "two-languages", n=9))),
        "wav2vec2": (
            make_tiny_wav2vec2_dir(tmp / "w2v", **DROPOUT_OFF),
            all_lengths(make_tiny_ctc_corpus(tmp / "ctc", 9)),
        ),
    }


def two_languages(corpus: dict[str, Path]) -> dict[str, Path]:
    """Every other utterance marked English: batches are then of one language or the other."""
    manifest = corpus["train"]
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        row["language"] = "en" if i % 2 else "zh"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return corpus


def all_lengths(corpus: dict[str, Path]) -> dict[str, Path]:
    """Every utterance a different length (quiet added at the end), so that a shard's longest is
    never the batch's longest by chance: padding a shard as the whole batch is padded matters."""
    manifest = corpus["train"]
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        path = manifest.parent / row["audio_filepath"]
        audio, rate = sf.read(path, dtype="float32")
        audio = np.concatenate([audio, np.zeros(int(0.045 * i * rate), np.float32)])
        sf.write(path, audio, rate)
        row["duration"] = len(audio) / rate
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return corpus


def scored(recipe: Path) -> Path:
    """The recipe decoding dev/test in batches of 2 (so both processes get some) and scoring the
    raw text (a random model's bytes are no Chinese characters, which ``zh_chars`` would drop)."""
    text = recipe.read_text(encoding="utf-8").replace("eval:\n  batch_size: 8", "eval:\n  batch_size: 2")
    recipe.write_text(text + "  normaliser: none\n", encoding="utf-8")
    return recipe


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trained tensors after the last update (not the best-on-dev adapter)."""
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["adapter"]


def log(run_dir: Path, event: str) -> list[dict]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
    return [r for r in rows if r["event"] == event]


@contextlib.contextmanager
def one_thread():
    """This process computes with one thread, as each torchrun worker does (a matmul split over
    two threads sums in another order, which AdamW's normalised steps lift above 1e-6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_process(recipe: Path, command: str = "finetune") -> None:
    with one_thread():
        assert main([command, "--recipe", str(recipe), "--no-progress"]) == 0


def finish(proc, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=atol), (key, float((a[key] - b[key]).abs().max()))


CASES = {
    "whisper-lora": ("whisper", {"kind": "lora", "rank": 4}, {}),
    # S2-LoRA: one basis per matrix shape, shared by every layer; its proximal L1 step after each update
    "whisper-s2lora": ("whisper", {"kind": "s2lora", "rank": 8, "init": "b0", "l1": 0.5}, {}),
    "whisper-lora-accumulated": ("whisper", {"kind": "lora", "rank": 4}, {"grad_accum": 2, "batch_size": 2}),
    # Master-ASR: batches of two languages, each assembling its own masks from the shared pool
    "whisper-master": (
        "whisper-2lang",
        {"kind": "master", "languages": ["en", "zh"], "specialists": 2, "t_every": 1},
        {},
    ),  # fmt: skip
    # wav2vec 2.0 with group norm over time: a shard padded to its own longest would compute otherwise
    "wav2vec2-lora": ("wav2vec2", {"kind": "lora", "rank": 4, "targets": "all_linear"}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_what_one_process_trains(case, hosts, tmp_path):
    host, adapter, extra = CASES[case]
    model, corpus = hosts[host]
    one = scored(
        write_tiny_recipe(tmp_path / "one.yaml", model, corpus, tmp_path / "one", adapter, **{**TRAIN, **extra})
    )
    two = scored(
        write_tiny_recipe(tmp_path / "two.yaml", model, corpus, tmp_path / "two", adapter, **{**TRAIN, **extra})
    )
    proc = torchrun(2, "-m", "speechpeft", "finetune", "--recipe", str(two), "--no-progress")
    one_process(one)  # meanwhile, in this process
    rc, out, err = finish(proc)
    assert rc == 0, err[-3000:]
    assert out.count("test CER:") == 1  # rank 0 speaks for the run
    run1, run2 = tmp_path / "one" / "tiny", tmp_path / "two" / "tiny"

    single, multi = final_state(run1), final_state(run2)
    # wav2vec 2.0's convolutions and group norm sum in other orders per shard: 1.5e-6 measured on one
    # machine after 5 AdamW updates (the others: <= 2e-7); a shard padded to its own length is far off
    assert_same_tensors(single, multi, atol=5e-6 if host == "wav2vec2" else 1e-6)
    if adapter["kind"] == "s2lora":  # the shared bases trained, and equally: reduced once, not per layer
        bases = [k for k in single if "basis" in k or "shared" in k]
        assert bases, sorted(single)[:8]
    loss1, loss2 = [r["loss"] for r in log(run1, "train")], [r["loss"] for r in log(run2, "train")]
    assert len(loss2) == 5 and loss2 == pytest.approx(loss1, rel=1e-5, abs=1e-6)
    assert loss1[0] != pytest.approx(loss1[-1], abs=1e-4)  # it trained: the figures are not constants
    counts = ("substitutions", "deletions", "insertions", "reference_units")
    for event in ("zero_shot", "dev", "test"):  # sharded decoding, gathered: the same figures
        assert [[r[k] for k in counts] for r in log(run2, event)] == [[r[k] for k in counts] for r in log(run1, event)]
    if host == "wav2vec2":  # its random CTC head says something, so the comparison has text to compare
        zero = log(run1, "zero_shot")[0]  # (the random tiny Whisper ends every hypothesis at once)
        assert zero["substitutions"] + zero["insertions"] > 0
    report = (run2 / "report.md").read_text(encoding="utf-8")
    assert "2 processes (torchrun)" in report and "per process x 2 processes" in report


def test_s2lora_bases_get_the_averaged_gradient_once(hosts, tmp_path):
    """One update's gradient on a shared basis under DDP equals one process's on the whole batch
    (a per-layer all-reduce would multiply it by the number of layers sharing the basis)."""
    model, corpus = hosts["whisper"]
    adapter = {"kind": "s2lora", "rank": 8, "init": "b0", "lam_lr": 10, "l1": 0.0}
    train = {**TRAIN, "max_steps": 1, "lr": 1e-1, "max_grad_norm": 0, "warmup_steps": 0}
    runs = {}
    for name in ("one", "two"):
        recipe = write_tiny_recipe(tmp_path / f"{name}.yaml", model, corpus, tmp_path / name, adapter, **train)
        if name == "one":
            one_process(recipe)
        else:
            rc, _, err = finish(torchrun(2, "-m", "speechpeft", "finetune", "--recipe", str(recipe), "--no-progress"))
            assert rc == 0, err[-3000:]
        state = torch.load(tmp_path / name / "tiny" / "checkpoint.pt", weights_only=True)
        runs[name] = state["optimizer"]["state"]  # AdamW's first moment = (1 - beta1) x the gradient
    assert sorted(runs["one"]) == sorted(runs["two"])
    for key in runs["one"]:
        g1, g2 = runs["one"][key]["exp_avg"], runs["two"][key]["exp_avg"]
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7), (key, float((g1 - g2).abs().max()))
    assert any(float(s["exp_avg"].abs().max()) > 0 for s in runs["two"].values())


def _workers(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes under ``parent`` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            pairs = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
            env = dict(kv.split("=", 1) for kv in pairs if "=" in kv)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_rank_ends_every_rank_and_resume_matches_an_uninterrupted_run(hosts, tmp_path):
    model, corpus = hosts["whisper"]
    adapter = {"kind": "lora", "rank": 4, "dropout": 0.2}  # dropout: each rank's RNG must come back exactly
    train = dict(max_steps=120, batch_size=4, eval_every=1000, checkpoint_every=2, lr=1e-2, warmup_steps=1)
    whole = write_tiny_recipe(tmp_path / "whole.yaml", model, corpus, tmp_path / "whole", adapter, **train)
    cut = write_tiny_recipe(tmp_path / "cut.yaml", model, corpus, tmp_path / "cut", adapter, **train)
    args = ["-m", "speechpeft", "finetune", "--no-progress", "--recipe"]
    uninterrupted = torchrun(2, *args, str(whole))

    proc = torchrun(2, *args, str(cut))
    checkpoint = tmp_path / "cut" / "tiny" / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _workers(proc.pid)
    assert proc.poll() is None and sorted(workers) == [0, 1], "the run ended before it could be killed"
    os.kill(workers[1], signal.SIGKILL)
    rc, _, err = finish(proc, timeout=120)  # torchrun notices, stops rank 0, and fails
    assert rc != 0
    assert not any(_alive(pid) for pid in workers.values())
    step = torch.load(checkpoint, weights_only=True)["counters"]["step"]
    assert 2 <= step < 120, step

    rc, out, err = finish(torchrun(2, "-m", "speechpeft", "finetune", "--no-progress", "--resume", "--recipe",
                                   str(cut)))  # fmt: skip
    assert rc == 0, err[-3000:]
    rc, _, err = finish(uninterrupted)
    assert rc == 0, err[-3000:]
    resumed, straight = final_state(tmp_path / "cut" / "tiny"), final_state(tmp_path / "whole" / "tiny")
    assert_same_tensors(resumed, straight, atol=1e-7)
    steps = [r["step"] for r in log(tmp_path / "cut" / "tiny", "train")]
    assert steps == list(range(1, 121))  # the log was cut back to the checkpoint and carried on


def test_world_errors_are_one_line_from_rank_0(hosts, tmp_path):
    model, corpus = hosts["whisper"]
    recipe = write_tiny_recipe(tmp_path / "odd.yaml", model, corpus, tmp_path / "runs", {"kind": "lora"},
                               **{**TRAIN, "batch_size": 3})  # fmt: skip
    rc, _, err = finish(torchrun(2, "-m", "speechpeft", "finetune", "--recipe", str(recipe), "--no-progress"))
    assert rc != 0
    lines = [line for line in err.splitlines() if "speechpeft: error:" in line]
    assert lines == [
        "speechpeft: error: train.batch_size=3 is the global batch and must divide evenly over 2 processes "
        "(e.g. train.batch_size=4)"
    ]
    assert not (tmp_path / "runs" / "tiny").exists()

    # ranks that read different recipes: rank 1 is handed another learning rate
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, sys\nfrom speechpeft.cli import main\n"
        "extra = ['train.lr=0.5'] if os.environ['RANK'] == '1' else []\n"
        f"sys.exit(main(['finetune', '--recipe', {str(recipe)!r}, '--no-progress', 'train.batch_size=4', *extra]))\n",
        encoding="utf-8",
    )
    rc, _, err = finish(torchrun(2, str(launcher)))
    assert rc != 0
    lines = [line for line in err.splitlines() if "speechpeft: error:" in line]
    assert lines == [
        "speechpeft: error: processes disagree on the recipe: train.lr is 0.001 on rank 0 but 0.5 on rank 1"
    ]


def test_pretrain_under_torchrun_writes_once_and_its_dev_figures_match(tmp_path):
    no_dropout = {k: v for k, v in DROPOUT_OFF.items() if k != "mask_time_prob"}  # pretraining masks its own way
    model = make_tiny_wav2vec2_pretraining_dir(tmp_path / "w2v", **no_dropout)
    make_tiny_ctc_corpus(tmp_path / "audio", n=9)
    audio = tmp_path / "audio"
    figures = {}
    for name in ("one", "two"):
        recipe = write_tiny_cpt_recipe(tmp_path / f"{name}.yaml", model, audio, tmp_path / name, max_steps=2,
                                       batch_size=4, eval_every=2)  # fmt: skip
        if name == "one":
            one_process(recipe, "pretrain")
        else:
            rc, out, err = finish(torchrun(2, "-m", "speechpeft", "pretrain", "--recipe", str(recipe), "--no-progress"))
            assert rc == 0, err[-3000:]
            assert out.count("dev loss") == 1
        run = tmp_path / name / next(p.name for p in (tmp_path / name).iterdir())
        figures[name] = log(run, "dev")
        assert (run / "model" / "config.json").is_file()
    # update 0 is the same model on both: sharded, per-batch-seeded dev evaluation gives one figure
    zero1, zero2 = figures["one"][0], figures["two"][0]
    assert zero2["masked_frames"] == zero1["masked_frames"] > 0
    assert zero2["loss"] == pytest.approx(zero1["loss"], rel=1e-6)
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "2 processes (torchrun)" in report


def test_clone_refuses_to_run_under_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert (
        main(["clone", "--base", str(tmp_path), "--name", "v", "--reference", str(tmp_path), "-o", str(tmp_path / "v")])
        == 2
    )
    assert capsys.readouterr().err == (
        "speechpeft: error: speechpeft clone runs in one process; launch it without torchrun\n"
    )
    monkeypatch.setenv("RANK", "1")  # the same error on another rank: rank 0 has said it
    assert (
        main(["clone", "--base", str(tmp_path), "--name", "v", "--reference", str(tmp_path), "-o", str(tmp_path / "v")])
        == 2
    )
    assert capsys.readouterr().err == ""
