"""Triton kernels for batched multi-adapter LoRA and S2-LoRA (imported only when used).

The unfused pair, kept as a benchmark row (the CUDA path runs ``triton_fused``, which reuses the
shrink here). Two kernels, in the shape of S-LoRA/Punica's SGMV: *shrink* h = x·Aᵀ (rank-r, fp32) and
*expand* y += (h ⊙ c[id])·Bᵀ, where c is a per-adapter coefficient row (LoRA: its scale
repeated; S2-LoRA: λ·scale). The base GEMM stays with torch (cuBLAS), which already runs it at
the hardware's speed; the adapter work is a thin pass on top. A or B may be shared by all
adapters (stride 0 over adapters): S2-LoRA's basis. Each program handles one utterance and a
tile of its frames, so utterances with different adapters never share a tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import lora_coef, s2lora_coef


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, ids_ptr, h_ptr,
    T, D, R, N,
    sxb, sxt, sxd, san, sar, sad, shb, sht, shr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # offsets in int64: b * sxb passes 2**31 elements at B*T*d_in of a long batch (32 x 1500 x 1280 x 35)
    b = tl.program_id(0).to(tl.int64)
    tb = tl.program_id(1)
    rb = tl.program_id(2)  # a tile of ranks: any rank, not only the first block's
    n = tl.load(ids_ptr + b)
    if (n >= 0) & (n < N):  # ids are checked where the batch is set (bank_ids); never read out of bounds
        offs_t = (tb * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
        acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            xt = tl.load(
                x_ptr + b * sxb + offs_t[:, None] * sxt + offs_d[None, :] * sxd,
                mask=(offs_t[:, None] < T) & (offs_d[None, :] < D),
                other=0.0,
            ).to(tl.float32)  # (BLOCK_T, BLOCK_D)
            at = tl.load(
                a_ptr + n * san + offs_r[None, :] * sar + offs_d[:, None] * sad,
                mask=(offs_r[None, :] < R) & (offs_d[:, None] < D),
                other=0.0,
            ).to(tl.float32)  # (BLOCK_D, BLOCK_R): Aᵀ tile
            acc += tl.dot(xt, at, input_precision=PRECISION)
        tl.store(
            h_ptr + b * shb + offs_t[:, None] * sht + offs_r[None, :] * shr, acc,
            mask=(offs_t[:, None] < T) & (offs_r[None, :] < R),
        )  # fmt: skip


@triton.jit
def _expand_kernel(
    h_ptr, b_ptr, c_ptr, ids_ptr, y_ptr,
    T, D_OUT, R, N,
    shb, sht, shr, sbn, sbo, sbr, scn, scr, syb, syt, syo,
    BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    tb = tl.program_id(1)
    ob = tl.program_id(2)
    n = tl.load(ids_ptr + b)
    if (n >= 0) & (n < N):
        offs_t = (tb * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        offs_o = (ob * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
        delta = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):  # the rank is the K dimension of this product: every tile of it
            offs_r = r0 + tl.arange(0, BLOCK_R)
            ht = tl.load(
                h_ptr + b * shb + offs_t[:, None] * sht + offs_r[None, :] * shr,
                mask=(offs_t[:, None] < T) & (offs_r[None, :] < R),
                other=0.0,
            )  # (BLOCK_T, BLOCK_R) fp32
            c = tl.load(c_ptr + n * scn + offs_r * scr, mask=offs_r < R, other=0.0).to(tl.float32)  # (BLOCK_R,)
            bt = tl.load(
                b_ptr + n * sbn + offs_o[None, :] * sbo + offs_r[:, None] * sbr,
                mask=(offs_o[None, :] < D_OUT) & (offs_r[:, None] < R),
                other=0.0,
            ).to(tl.float32)  # (BLOCK_R, BLOCK_O): Bᵀ tile
            delta += tl.dot(ht * c[None, :], bt, input_precision=PRECISION)  # (BLOCK_T, BLOCK_O)
        y_ptrs = y_ptr + b * syb + offs_t[:, None] * syt + offs_o[None, :] * syo
        keep = (offs_t[:, None] < T) & (offs_o[None, :] < D_OUT)
        y = tl.load(y_ptrs, mask=keep, other=0.0)
        tl.store(y_ptrs, (y.to(tl.float32) + delta).to(y.dtype), mask=keep)


def _block(n: int, lo: int = 16, hi: int = 64) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _precision(dtype: torch.dtype) -> str:
    """fp32 models multiply in IEEE fp32 (TF32 would round their inputs to 10 mantissa bits, well
    outside the reference's tolerance); fp16/bf16 inputs lose nothing to TF32, so they keep its speed.
    The fp32 intermediate h of a half-precision model is rounded to TF32 in the expand, below the
    fp16 rounding of the output that follows it."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _check(x: torch.Tensor, ids: torch.Tensor, d_in: int) -> None:
    assert x.dim() == 3 and x.shape[2] == d_in, f"x must be (B, T, {d_in}), got {tuple(x.shape)}"
    assert x.is_contiguous(), "x must be contiguous"
    assert x.dtype in (torch.float16, torch.bfloat16, torch.float32), f"unsupported dtype {x.dtype}"
    assert ids.dtype == torch.int64 and ids.shape == (x.shape[0],), f"ids must be int64 (B,), got {ids.dtype}"


def _shrink(x: torch.Tensor, a: torch.Tensor, a_stride_n: int, ids: torch.Tensor, n: int) -> torch.Tensor:
    bsz, t, d = x.shape
    r = a.shape[-2]
    # no zero-fill: rows without an adapter are never read back (the expand skips the same rows)
    h = torch.empty(bsz, t, r, device=x.device, dtype=torch.float32)
    bt, bd, br = _block(t), _block(d, hi=128), _block(r)
    grid = (bsz, triton.cdiv(t, bt), triton.cdiv(r, br))
    _shrink_kernel[grid](
        x, a, ids, h, t, d, r, n, *x.stride(), a_stride_n, a.stride(-2), a.stride(-1), *h.stride(),
        BLOCK_T=bt, BLOCK_D=bd, BLOCK_R=br, PRECISION=_precision(x.dtype),
    )  # fmt: skip
    return h


def _expand(h, b, b_stride_n, coef, ids, y, n: int) -> None:
    bsz, t, r = h.shape
    o = y.shape[2]
    bt, bo, br = _block(t), _block(o, hi=128), _block(r)
    grid = (bsz, triton.cdiv(t, bt), triton.cdiv(o, bo))
    _expand_kernel[grid](
        h, b, coef, ids, y, t, o, r, n, *h.stride(), b_stride_n, b.stride(-2), b.stride(-1), *coef.stride(),
        *y.stride(), BLOCK_T=bt, BLOCK_O=bo, BLOCK_R=br, PRECISION=_precision(y.dtype),
    )  # fmt: skip


def batched_lora(x, weight, bias, ids, lora_a, lora_b, scale, coef=None):
    """Same contract as ``reference.batched_lora``; ``coef`` as ``kernels.lora_coef`` makes it."""
    n, r, d_in = lora_a.shape
    _check(x, ids, d_in)
    assert lora_b.shape == (n, weight.shape[0], r), f"lora_b must be (N, d_out, r), got {tuple(lora_b.shape)}"
    assert lora_a.is_contiguous() and lora_b.is_contiguous(), "adapter weights must be contiguous"
    assert scale.shape == (n,), f"scale must be (N,), got {tuple(scale.shape)}"
    y = torch.nn.functional.linear(x, weight, bias).contiguous()
    h = _shrink(x, lora_a, lora_a.stride(0), ids, n)
    coef = lora_coef(scale, r) if coef is None else coef
    _expand(h, lora_b, lora_b.stride(0), coef, ids, y, n)
    return y


def batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale, coef=None):
    """Same contract as ``reference.batched_s2lora``: one shrink for every utterance with an adapter."""
    r, d_in = basis_a.shape
    _check(x, ids, d_in)
    assert basis_b.shape == (weight.shape[0], r), f"basis_b must be (d_out, r), got {tuple(basis_b.shape)}"
    assert lam.dim() == 2 and lam.shape[1] == r, f"lam must be (N, {r}), got {tuple(lam.shape)}"
    assert basis_a.is_contiguous() and basis_b.is_contiguous(), "basis must be contiguous"
    y = torch.nn.functional.linear(x, weight, bias).contiguous()
    shared = torch.where(ids >= 0, 0, -1)  # the shrink only asks "has an adapter"; row 0 of a stride-0 A
    h = _shrink(x, basis_a, 0, shared, 1)
    coef = s2lora_coef(lam, scale) if coef is None else coef
    _expand(h, basis_b, 0, coef, ids, y, lam.shape[0])
    return y
