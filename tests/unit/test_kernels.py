"""The Triton kernels under TRITON_INTERPRET=1 (CPU) against the pure-torch reference.

The interpreter is chosen when a kernel is defined, so the variable is set before
speechpeft.kernels.triton_lora is first imported (a subprocess keeps the rest of the suite clean).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechpeft.kernels import batched_lora, batched_s2lora, reference

ROOT = Path(__file__).resolve().parents[2]


def loop_lora(x, w, b, ids, a, bb, scale):  # the docstring's loop, literally
    y = torch.nn.functional.linear(x, w, b)
    for i in range(x.shape[0]):
        if ids[i] >= 0:
            n = int(ids[i])
            h = x[i].float() @ a[n].float().T
            y[i] += (scale[n] * h @ bb[n].float().T).to(y.dtype)
    return y


def test_reference_lora_equals_the_loop_and_cpu_dispatch_uses_it():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 5, 16, generator=g), torch.randn(12, 16, generator=g)
    a, bb = torch.randn(3, 4, 16, generator=g), torch.randn(3, 12, 4, generator=g)
    ids, scale = torch.tensor([2, -1, 0, 2]), torch.tensor([0.5, 1.0, 2.0])
    expected = loop_lora(x, w, None, ids, a, bb, scale)
    torch.testing.assert_close(reference.batched_lora(x, w, None, ids, a, bb, scale), expected)
    torch.testing.assert_close(batched_lora(x, w, None, ids, a, bb, scale), expected)  # CPU -> reference
    lam = torch.randn(3, 4, generator=g)
    s2 = batched_s2lora(x, w, None, ids, a[0], bb[0], lam, 0.5)
    lam_as_lora = [bb[0] * (lam[n] * 0.5)[None, :] for n in range(3)]  # S2-LoRA = LoRA with B·diag(λ·s)
    torch.testing.assert_close(s2, loop_lora(x, w, None, ids, a[0].expand(3, 4, 16), torch.stack(lam_as_lora),
                                             torch.ones(3)))  # fmt: skip


KERNEL_CHECK = r"""
import itertools, torch
from speechpeft.kernels import reference, triton_lora
g = torch.Generator().manual_seed(0)
for d, r, n, dtype in itertools.product((64, 384), (4, 16), (1, 3), (torch.float32, torch.float16)):
    x = torch.randn(3, 5, d, generator=g).to(dtype)
    w = (torch.randn(48, d, generator=g) / d**0.5).to(dtype)
    bias = torch.randn(48, generator=g).to(dtype)
    a = (torch.randn(n, r, d, generator=g) / d**0.5).to(dtype)
    b = torch.randn(n, 48, r, generator=g).to(dtype)
    ids = torch.tensor([n - 1, -1, 0])
    scale = torch.rand(n, generator=g) + 0.5
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(triton_lora.batched_lora(x, w, bias, ids, a, b, scale),
                               reference.batched_lora(x, w, bias, ids, a, b, scale), **tol)
    lam = torch.randn(n, r, generator=g)
    a0, b0 = a[0].contiguous(), b[0].contiguous()
    torch.testing.assert_close(triton_lora.batched_s2lora(x, w, bias, ids, a0, b0, lam, 0.7),
                               reference.batched_s2lora(x, w, bias, ids, a0, b0, lam, 0.7), **tol)
    print("ok", d, r, n, dtype)
# Past the first tile: T=70 spans two T tiles (block 64) with a ragged tail, d_out=200 two output
# tiles (block 128), d=200 two K steps of the shrink; ids mixed with -1, and all -1.
for dtype, ids in itertools.product((torch.float32, torch.float16), ([2, -1, 0, 1], [-1, -1, -1, -1])):
    x = torch.randn(4, 70, 200, generator=g).to(dtype)
    w = (torch.randn(200, 200, generator=g) / 200**0.5).to(dtype)
    bias = torch.randn(200, generator=g).to(dtype)
    a = (torch.randn(3, 8, 200, generator=g) / 200**0.5).to(dtype)
    b = torch.randn(3, 200, 8, generator=g).to(dtype)
    ids, scale = torch.tensor(ids), torch.rand(3, generator=g) + 0.5
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    want = reference.batched_lora(x, w, bias, ids, a, b, scale)
    torch.testing.assert_close(triton_lora.batched_lora(x, w, bias, ids, a, b, scale), want, **tol)
    lam = torch.randn(3, 8, generator=g)
    a0, b0 = a[0].contiguous(), b[0].contiguous()
    torch.testing.assert_close(triton_lora.batched_s2lora(x, w, bias, ids, a0, b0, lam, 0.7),
                               reference.batched_s2lora(x, w, bias, ids, a0, b0, lam, 0.7), **tol)
    if (ids < 0).all():
        torch.testing.assert_close(want, torch.nn.functional.linear(x, w, bias))
    print("tiles ok", dtype, ids.tolist())
# Ranks past one rank tile (64): r=128 and a ragged r=100, with T and d_out past one tile too; ids
# mixed with -1, and all -1. Before rank tiling, ranks 64.. were silently dropped.
for r, ids in itertools.product((128, 100), ([1, -1, 0], [-1, -1, -1])):
    x = torch.randn(3, 70, 96, generator=g)
    w = torch.randn(150, 96, generator=g) / 96**0.5
    a = torch.randn(2, r, 96, generator=g) / 96**0.5
    b = torch.randn(2, 150, r, generator=g) / r**0.5
    ids, scale = torch.tensor(ids), torch.rand(2, generator=g) + 0.5
    torch.testing.assert_close(triton_lora.batched_lora(x, w, None, ids, a, b, scale),
                               reference.batched_lora(x, w, None, ids, a, b, scale), atol=1e-4, rtol=1e-4)
    lam = torch.randn(2, r, generator=g)
    a0, b0 = a[0].contiguous(), b[0].contiguous()
    torch.testing.assert_close(triton_lora.batched_s2lora(x, w, None, ids, a0, b0, lam, 0.7),
                               reference.batched_s2lora(x, w, None, ids, a0, b0, lam, 0.7), atol=1e-4, rtol=1e-4)
    print("rank ok", r, ids.tolist())
# An id past the bank (bank_ids refuses it before any kernel runs) reads nothing out of bounds.
x, w = torch.randn(2, 5, 32, generator=g), torch.randn(40, 32, generator=g)
a, b = torch.randn(1, 4, 32, generator=g), torch.randn(1, 40, 4, generator=g)
y = triton_lora.batched_lora(x, w, None, torch.tensor([1, 5]), a, b, torch.ones(1))
torch.testing.assert_close(y, torch.nn.functional.linear(x, w))
print("bounds ok")
"""


def test_triton_kernels_match_the_reference_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", KERNEL_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") - out.stdout.count(" ok") == 16  # d x r x N x dtype
    assert out.stdout.count("tiles ok") == 4
    assert out.stdout.count("rank ok") == 4 and "bounds ok" in out.stdout


def interpreted(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python with Triton's CPU interpreter (chosen before triton_lora is imported)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_launcher_asserts_shapes_and_contiguity():
    code = (
        "import torch\nfrom speechpeft.kernels import triton_lora as k\n"
        "x = torch.randn(2, 3, 8).transpose(1, 2)\n"
        "try:\n    k.batched_lora(x, torch.randn(4, 3), None, torch.tensor([0, 0]), torch.randn(1, 2, 3),"
        " torch.randn(1, 4, 2), torch.ones(1))\nexcept AssertionError as e:\n    print('refused:', e)\n"
    )
    out = interpreted(code)
    assert "refused: x must be contiguous" in out.stdout, out.stderr[-2000:]


def test_fp32_models_multiply_in_ieee_fp32_and_offsets_are_int64_in_the_kernels():
    """TF32 rounds fp32 inputs to 10 mantissa bits on a GPU; the interpreter cannot show it, so the
    choice itself is checked, and so is the int64 promotion of the row offsets (b * stride passes
    2**31 elements on long batches), in the kernels' source."""
    code = (
        "import inspect, torch\nfrom speechpeft.kernels import triton_lora as k\n"
        "print(k._precision(torch.float32), k._precision(torch.float16), k._precision(torch.bfloat16))\n"
        "for f in (k._shrink_kernel, k._expand_kernel):\n"
        "    src = inspect.getsource(f.fn)\n"
        "    wide = 'tl.program_id(0).to(tl.int64)' in src and 'input_precision=PRECISION' in src\n"
        "    print('int64' if wide else 'no')\n"
    )
    out = interpreted(code)
    assert out.stdout.split() == ["ieee", "tf32", "tf32", "int64", "int64"], out.stdout + out.stderr[-2000:]
