"""bench/adapter_kernels.py, meant for the GPU machine, runs end to end at toy size on CPU, its Triton
engines under TRITON_INTERPRET=1: every engine's output is checked against the reference before
it is timed, and an engine that is wrong is reported, not timed."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

ENGINES = ("bare", "speechpeft fused (LoRA)", "speechpeft unfused pair (LoRA)",
           "speechpeft fused (S2-LoRA, shared basis)", "naive gather+bmm", "PEFT adapter_names")  # fmt: skip


def run_bench(tmp_path, code: str = "") -> tuple[subprocess.CompletedProcess, str]:
    pytest.importorskip("triton")
    report = tmp_path / "k.md"
    argv = ["adapter_kernels.py", "--config", "tiny", "--repeats", "1", "--report", str(report)]
    path = str(ROOT / "bench" / "adapter_kernels.py")
    script = f"{code}\nimport sys; sys.argv = {argv!r}\nimport runpy; runpy.run_path({path!r}, run_name='__main__')"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out, report.read_text()


def test_kernel_bench_checks_then_times_every_engine_at_toy_size(tmp_path):
    _, text = run_bench(tmp_path)
    for engine in ENGINES:
        assert text.count(f"| {engine} |") == 3, engine  # encoder with 1 and 4 adapters, the decoder step
    for engine in ("speechpeft fused, shrink folded (LoRA)", "speechpeft fused, separate shrink (S2-LoRA)"):
        assert text.count(f"| {engine} |") == 2, engine  # the encoder rows: a decode step never folds
    assert "not timed" not in text and "numbers meaningless" in text
    assert text.count("| decoder step (8 cached tokens) |") == len(ENGINES)


def test_a_wrong_engine_is_reported_and_not_timed(tmp_path):
    # the fused kernel made to drop every adapter: its output equals the bare model's
    broken = ("from speechpeft.kernels import triton_fused as f\n"
              "f.batched_lora = lambda x, w, b, *a, **k: f.linear(x, w, b)\n")  # fmt: skip
    _, text = run_bench(tmp_path, broken)
    wrong = [line for line in text.splitlines() if "| speechpeft fused (LoRA) |" in line]
    assert len(wrong) == 3 and all("not timed: WRONG" in line for line in wrong), wrong
    others = [line for line in text.splitlines() if "| speechpeft unfused pair (LoRA) |" in line]
    assert len(others) == 3 and not any("not timed" in line for line in others), others


def test_an_engine_that_fails_to_run_is_reported_and_the_others_still_timed(tmp_path):
    # the folded shrink made to raise (as a kernel that does not compile would): only its rows fail
    broken = ("from speechpeft.kernels import triton_fused as f\n"
              "def boom(*a, **k):\n    raise RuntimeError('no compile')\n"
              "f.batched_s2lora = boom\n")  # fmt: skip
    _, text = run_bench(tmp_path, broken)
    failed = [line for line in text.splitlines() if "| speechpeft fused (S2-LoRA, shared basis) |" in line]
    assert len(failed) == 3 and all("not timed: FAILED: RuntimeError: no compile" in line for line in failed), failed
    separate = [line for line in text.splitlines() if "| speechpeft fused, shrink folded (LoRA) |" in line]
    assert len(separate) == 2 and not any("not timed" in line for line in separate), separate  # encoder only


def test_no_bench_script_shadows_a_package_transformers_imports():
    # `python bench/X.py` puts bench/ first on the path; a bench/kernels.py once hid the hub's
    # `kernels` package from transformers, and every bench script failed on import
    code = "import transformers.activations, transformers.models.whisper.modeling_whisper"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "bench", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
