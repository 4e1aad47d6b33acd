"""A process killed (SIGKILL) while it writes an adapter, a checkpoint or an export leaves the
previous file or folder intact, or the new one complete: never a mixture.

Each case runs a child process that writes version 1, then starts writing version 2 and kills
itself at a chosen instant (by wrapping one of the functions the write goes through). The parent
then reads what is on disk.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechpeft.adapters import read_adapter

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from conftest import build_tiny_whisper
from speechpeft import LoRAConfig, inject, save_adapter
from speechpeft.adapters import adapter_layers

def model_with(value):
    model = build_tiny_whisper(seed=0)
    inject(model, LoRAConfig(rank=1 + int(value), targets="attn_qv"))  # v1: rank 2, v2: rank 3
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_B.weight.fill_(value)
    return model

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(module, name):  # call the real function, then die
    real = getattr(module, name)
    def wrapped(*a, **k):
        real(*a, **k)
        die()
    setattr(module, name, wrapped)

def before(module, name):  # die instead of calling it
    setattr(module, name, lambda *a, **k: die())

def die_after_rename(n):
    # die right after the n-th rename of any sort: the instants at which what is on disk changes
    import speechpeft.fs as fs
    count = [0]
    def wrap(module, name):
        real = getattr(module, name)
        def wrapped(*a, **k):
            out = real(*a, **k)
            count[0] += 1
            if count[0] == n:
                die()
            return out
        setattr(module, name, wrapped)
    wrap(os, "replace")
    wrap(os, "rename")
    if hasattr(fs, "_renameat2_exchange"):
        wrap(fs, "_renameat2_exchange")
target = sys.argv[1]
"""

SAVE = """
save_adapter(model_with(1.0), target)
import speechpeft.adapters.io as io, speechpeft.fs as fs
{arm}
save_adapter(model_with(2.0), target)
"""

CHECKPOINT = """
from pathlib import Path
from speechpeft.train.checkpoint import save_checkpoint
model = model_with(1.0)
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
save_checkpoint(Path(target), {"v": torch.full((3,), 1.0)}, opt, sched, {"step": 1})
real_save = torch.save
def half_then_die(obj, f):  # write part of the new checkpoint, then die mid-write
    real_save(obj, f)
    size = os.path.getsize(f)
    os.truncate(f, size // 2)
    die()
torch.save = half_then_die
save_checkpoint(Path(target), {"v": torch.full((3,), 2.0)}, opt, sched, {"step": 2})
"""

EXPORT = """
from pathlib import Path
from speechpeft.models.export import export
import speechpeft.fs as fs, speechpeft.models.export as ex
adapter_dir = Path(target).parent / "adapter"
save_adapter(model_with(1.0), adapter_dir)
export(adapter_dir, Path(target), fmt="peft")
save_adapter(model_with(2.0), adapter_dir)
{arm}
export(adapter_dir, Path(target), fmt="peft", overwrite=True)
"""


def run_child(script: str, target: Path, may_finish: bool = False) -> bool:
    """Run the child; True if it was killed, False if it finished (allowed with ``may_finish``)."""
    code = PRELUDE.format(tests=str(ROOT / "tests")) + script
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    if may_finish and done.returncode == 0:
        return False
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return True


def version(folder: Path) -> float:
    """Which version a LoRA folder holds, after checking that its two files agree with each other."""
    tensors = load_file(folder / "adapter_model.safetensors")
    values = {float(t.unique()) for k, t in tensors.items() if k.endswith("lora_B.weight")}
    ranks = {t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight")}
    config = json.loads((folder / "adapter_config.json").read_text())
    assert len(values) == 1 and ranks == {config["r"]} == {1 + int(next(iter(values)))}, (values, ranks, config["r"])
    return next(iter(values))


KILL_POINTS = [
    ("after(io, 'save_file')", 1.0),  # v2's weights written into the temp folder, its config not yet
    ("before(fs, '_exchange')", 1.0),  # v2 complete beside the old folder, not yet swapped in
    ("after(fs, '_exchange')", 2.0),  # swapped in; the old copy not yet removed
]


@pytest.mark.parametrize("arm, expected", KILL_POINTS)
def test_sigkill_during_save_adapter_leaves_one_whole_version(tmp_path, arm, expected):
    target = tmp_path / "adapter"
    run_child(SAVE.format(arm=arm), target)
    read_adapter(target)  # checksum and record hold
    assert version(target) == expected
    assert sorted(os.listdir(target)) == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sigkill_after_any_rename_while_saving_never_leaves_a_mixture(tmp_path, n):
    """Implementation-blind: whatever renames a save makes, dying after each leaves one whole version."""
    target = tmp_path / "adapter"
    killed = run_child(SAVE.format(arm=f"die_after_rename({n})"), target, may_finish=True)
    assert target.is_dir(), "the adapter folder vanished"
    assert version(target) in ((1.0, 2.0) if killed else (2.0,))
    read_adapter(target)


def test_sigkill_during_the_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    from speechpeft.train.checkpoint import load_checkpoint

    target = tmp_path / "checkpoint.pt"
    run_child(CHECKPOINT, target)
    model_params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(model_params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(ValueError):  # the optimizer state is of another model: but the file itself reads
        load_checkpoint(target, opt, sched)
    state = torch.load(target, weights_only=True)
    assert state["counters"] == {"step": 1} and torch.equal(state["adapter"]["v"], torch.full((3,), 1.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert all(name.startswith(".checkpoint.pt.") for name in leftovers)  # the torn temp file, never the target


@pytest.mark.parametrize(
    "arm, expected",
    [
        ("after(ex, 'save_file')", 1.0),
        ("before(fs, '_exchange')", 1.0),
        ("after(fs, '_exchange')", 2.0),
        ("die_after_rename(1)", None),
        ("die_after_rename(2)", None),
    ],  # fmt: skip
)
def test_sigkill_during_export_leaves_the_previous_export_or_the_new_one(tmp_path, arm, expected):
    target = tmp_path / "export"
    killed = run_child(EXPORT.format(arm=arm), target, may_finish=expected is None)
    assert target.is_dir(), "the export folder vanished"
    assert (
        version(target) == expected if expected is not None else version(target) in ((1.0, 2.0) if killed else (2.0,))
    )
    assert sorted(os.listdir(target)) == ["adapter_config.json", "adapter_model.safetensors"]
