"""bench/kernels.py, meant for the GPU machine, runs end to end at toy size on CPU."""

import sys

from conftest import ROOT


def test_kernel_bench_runs_at_toy_size_and_writes_every_engine(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import kernels as bench

    report = tmp_path / "k.md"
    bench.main(["--tiny", "--repeats", "1", "--report", str(report)])
    text = report.read_text()
    for engine in ("bare encoder", "speechpeft kernels (LoRA)", "speechpeft kernels (S2-LoRA, shared basis)",
                   "naive gather+bmm", "PEFT adapter_names", "decode step: speechpeft kernels"):  # fmt: skip
        assert f"| {engine} |" in text
    assert text.count("| tiny |") == 15 and "numbers meaningless" in text
