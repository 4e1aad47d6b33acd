"""One Triton GEMM per adapted linear: y = x·Wᵀ + bias + (h ⊙ c[id])·B_idᵀ, stored once.

The unfused path (``triton_lora``) lets cuBLAS write y, then reads and writes it again to add the
adapter: at whisper-small B=32 that is ~24 GB of extra traffic per encoder forward. Here the
adapter's expand is the GEMM's epilogue, so y leaves the chip once.

- Rows are the batch's frames flattened (M = B·T); a tile of BLOCK_M rows may straddle
  utterances. The epilogue walks the utterances its rows belong to (one when T ≥ BLOCK_M, up to
  BLOCK_M in a decode step where T = 1) and adds each one's expand under a row mask, so W is read
  once per row tile whatever the adapters, and a decode step does not re-read W per utterance.
- h = x·Aᵀ (rank r, fp32) is computed in the K-loop from the x tiles already loaded (``fold``;
  T ≥ BLOCK_M, so a tile holds two utterances at most), or by ``triton_lora``'s shrink, once per
  input (decode steps, r > 64, and LoRA by default: see ``FOLD_LORA``). For S2-LoRA, A is shared,
  so the whole batch shares one shrink and B is one shared (stride-0) matrix.
- c is a per-adapter coefficient row (LoRA: its scale; S2-LoRA: λ·scale), precomputed by the bank
  (``lora_coef``, ``s2lora_coef``).
- Half-precision inputs multiply on the tensor cores with fp32 accumulation; fp32 inputs multiply
  in IEEE fp32. Under ``TRITON_INTERPRET=1`` tiles are cast to fp32 first (the interpreter's
  bf16 ``tl.dot`` is wrong) and one configuration is used instead of autotuning.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import lora_coef, s2lora_coef
from .triton_lora import _check, _precision, _shrink

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Whether long inputs fold the shrink into the K-loop by default, per kind. On the H200
# (bench/kernels.md, whisper-small B=32, 32 adapters) folding made per-utterance LoRA slower (two
# A tiles per K step: 1.244x the bare encoder against 1.196x) and S2-LoRA's one shared A faster
# (1.194x against 1.205x).
FOLD_LORA = False
FOLD_S2LORA = True


def _configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_O": 32, "BLOCK_K": 32}, num_warps=4)]
    shapes = [
        (128, 128, 64, 8, 3),
        (128, 128, 64, 8, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 256, 64, 8, 3),
        (64, 64, 64, 4, 3),
    ]  # (BLOCK_M, BLOCK_O, BLOCK_K, warps, stages)
    return [triton.Config({"BLOCK_M": m, "BLOCK_O": o, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for m, o, k, w, s in shapes]  # fmt: skip


# the shortest utterance for which the shrink rides the K-loop: no row tile may span three
FOLD_MIN_T = max(c.kwargs["BLOCK_M"] for c in _configs())


@triton.autotune(configs=_configs(), key=["M_BUCKET", "D_IN", "D_OUT", "R", "T_ONE", "FOLD", "SHARED_A"])
@triton.heuristics({"EVEN_K": lambda args: args["D_IN"] % args["BLOCK_K"] == 0})
@triton.jit
def _fused_kernel(
    x_ptr, w_ptr, bias_ptr, h_ptr, a_ptr, b_ptr, c_ptr, ids_ptr, y_ptr,
    M, M_BUCKET, T, D_IN, D_OUT, R, N,
    sxm, sxd, swo, swd, shm, shr, san, sar, sad, sbn, sbo, sbr, scn, scr, sym, syo,
    T_ONE: tl.constexpr, HAS_BIAS: tl.constexpr, ADAPTERS: tl.constexpr, FOLD: tl.constexpr,
    SHARED_A: tl.constexpr, CAST_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    # M_BUCKET and T_ONE only key the autotuner (decode steps and long inputs want different
    # tiles; M by its power of two, so a decode whose batch shrinks row by row is not re-tuned at
    # every size).
    # One program per (row tile, output tile), the output tiles of a row tile adjacent in launch
    # order: the x rows are read from HBM once and reused from L2 by every output tile, while W
    # (a few MB) stays in L2 throughout.
    pid = tl.program_id(0)
    n_ob = tl.cdiv(D_OUT, BLOCK_O)
    mb = pid // n_ob
    ob = pid % n_ob
    offs_m = (mb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # int64: M·d passes 2**31 in long batches
    offs_o = (ob * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    in_m, in_o, in_r = offs_m < M, offs_o < D_OUT, offs_r < R
    first = (mb * BLOCK_M) // T  # the first utterance whose rows are in this tile
    acc = tl.zeros((BLOCK_M, BLOCK_O), dtype=tl.float32)
    if FOLD:
        # the shrink rides the K-loop on the x tiles already loaded: T >= BLOCK_M, so a tile holds
        # rows of two utterances at most (S2-LoRA: one shared A, one accumulator)
        n0 = tl.load(ids_ptr + first)
        ok0 = (n0 >= 0) & (n0 < N)
        second = tl.minimum(first + 1, (M - 1) // T)
        n1 = tl.load(ids_ptr + second)
        ok1 = (n1 >= 0) & (n1 < N) & (second > first)
        any0 = ok0
        if SHARED_A:  # one shared A: needed when either utterance has an adapter
            any0 = ok0 | ok1
        h0 = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        h1 = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    # The loads read rows and columns wrapped into range (out-of-range rows compute values the
    # store's mask drops), so the K-loop's loads are unmasked when BLOCK_K divides d_in; pointers
    # advance by one K tile per step.
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + (offs_m % M)[:, None] * sxm + offs_k[None, :] * sxd
    w_ptrs = w_ptr + (offs_o % D_OUT)[None, :] * swo + offs_k[:, None] * swd  # (BLOCK_K, BLOCK_O): Wᵀ tile
    if FOLD:
        a0_ptrs = a_ptr + n0 * san + offs_r[None, :] * sar + offs_k[:, None] * sad  # (BLOCK_K, BLOCK_R): Aᵀ tile
        a1_ptrs = a_ptr + n1 * san + offs_r[None, :] * sar + offs_k[:, None] * sad
    for k0 in range(0, D_IN, BLOCK_K):
        if EVEN_K:
            xt = tl.load(x_ptrs)
            wt = tl.load(w_ptrs)
        else:
            in_k = (k0 + offs_k) < D_IN
            xt = tl.load(x_ptrs, mask=in_k[None, :], other=0.0)
            wt = tl.load(w_ptrs, mask=in_k[:, None], other=0.0)
        if CAST_F32:
            xt, wt = xt.to(tl.float32), wt.to(tl.float32)
        acc += tl.dot(xt, wt, input_precision=PRECISION)
        if FOLD:
            a_mask = ((k0 + offs_k) < D_IN)[:, None] & in_r[None, :]
            at0 = tl.load(a0_ptrs, mask=a_mask & any0, other=0.0)
            if CAST_F32:
                at0 = at0.to(tl.float32)
            h0 += tl.dot(xt, at0, input_precision=PRECISION)
            if not SHARED_A:
                at1 = tl.load(a1_ptrs, mask=a_mask & ok1, other=0.0)
                if CAST_F32:
                    at1 = at1.to(tl.float32)
                h1 += tl.dot(xt, at1, input_precision=PRECISION)
            a0_ptrs += BLOCK_K * sad
            a1_ptrs += BLOCK_K * sad
        x_ptrs += BLOCK_K * sxd
        w_ptrs += BLOCK_K * swd
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_o, mask=in_o, other=0.0).to(tl.float32)[None, :]
    if ADAPTERS:
        utt_of_row = offs_m // T
        if FOLD:
            if SHARED_A:
                h1 = h0
            acc = _add_expand(acc, h0, n0, ok0, in_m & (utt_of_row == first), offs_o, offs_r, in_o, in_r,
                              b_ptr, c_ptr, sbn, sbo, sbr, scn, scr, CAST_F32, PRECISION)  # fmt: skip
            acc = _add_expand(acc, h1, n1, ok1, in_m & (utt_of_row == second), offs_o, offs_r, in_o, in_r,
                              b_ptr, c_ptr, sbn, sbo, sbr, scn, scr, CAST_F32, PRECISION)  # fmt: skip
        else:
            last = tl.minimum(mb * BLOCK_M + BLOCK_M, M) - 1
            for u in range(first, last // T + 1):  # the utterances this tile's rows belong to
                n = tl.load(ids_ptr + u)
                if (n >= 0) & (n < N):  # ids are checked where the batch is set (bank_ids)
                    mine = in_m & (utt_of_row == u)
                    for r0 in range(0, R, BLOCK_R):
                        rr = r0 + offs_r
                        ht = tl.load(h_ptr + offs_m[:, None] * shm + rr[None, :] * shr,
                                     mask=mine[:, None] & (rr < R)[None, :], other=0.0)  # fp32  # fmt: skip
                        acc = _add_expand(acc, ht, n, n >= 0, mine, offs_o, rr, in_o, rr < R,
                                          b_ptr, c_ptr, sbn, sbo, sbr, scn, scr, CAST_F32, PRECISION)  # fmt: skip
    tl.store(y_ptr + offs_m[:, None] * sym + offs_o[None, :] * syo, acc.to(y_ptr.dtype.element_ty),
             mask=in_m[:, None] & in_o[None, :])  # fmt: skip


@triton.jit
def _add_expand(acc, h, n, ok, rows, offs_o, offs_r, in_o, in_r, b_ptr, c_ptr, sbn, sbo, sbr, scn, scr,
                CAST_F32: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """acc + (h ⊙ c[n]) · B_nᵀ on ``rows`` (an utterance's rows of the tile); nothing when not ``ok``."""
    c = tl.load(c_ptr + n * scn + offs_r * scr, mask=in_r & ok, other=0.0)
    bt = tl.load(b_ptr + n * sbn + offs_o[None, :] * sbo + offs_r[:, None] * sbr,
                 mask=in_o[None, :] & in_r[:, None] & ok, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_O)  # fmt: skip
    ht = tl.where(rows[:, None], h * c[None, :], 0.0)
    return acc + tl.dot(ht, bt, input_precision="ieee" if CAST_F32 else PRECISION)


def _launch(x, weight, bias, ids, h, a, a_stride_n, b, b_stride_n, coef, n_adapters: int, fold: bool) -> torch.Tensor:
    """``fold``: h is None and the kernel computes it from ``a`` in its K-loop; else ``h`` (from the
    separate shrink) is read, or neither when no row has an adapter (``a`` and ``h`` both None)."""
    bsz, t, d_in = x.shape
    d_out = weight.shape[0]
    m = bsz * t
    x2 = x.view(m, d_in)
    y = torch.empty(bsz, t, d_out, device=x.device, dtype=x.dtype)  # every element is stored: no zero-fill
    y2 = y.view(m, d_out)
    adapters = fold or h is not None
    r = a.shape[-2] if fold else (1 if h is None else h.shape[-1])
    h2 = x2 if h is None else h.view(m, r)  # placeholders where unused: never read
    a = weight if a is None else a
    b = weight if b is None else b
    coef = weight if coef is None else coef
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(d_out, meta["BLOCK_O"]),)  # noqa: E731
    block_r = max(16, triton.next_power_of_2(r)) if fold else max(16, min(64, triton.next_power_of_2(r)))
    _fused_kernel[grid](
        x2, weight, weight if bias is None else bias, h2, a, b, coef, ids, y2,
        m, m.bit_length(), t, d_in, d_out, r, n_adapters,
        *x2.stride(), *weight.stride(), *h2.stride(), a_stride_n, a.stride(-2), a.stride(-1),
        b_stride_n, b.stride(-2), b.stride(-1), *coef.stride(), *y2.stride(),
        T_ONE=t == 1, HAS_BIAS=bias is not None, ADAPTERS=adapters, FOLD=fold, SHARED_A=fold and a_stride_n == 0,
        CAST_F32=INTERPRET, PRECISION=_precision(x.dtype), BLOCK_R=block_r,
    )  # fmt: skip
    return y


def _should_fold(t: int, r: int, fold: bool | None, shared: bool) -> bool:
    if fold is None:
        return (FOLD_S2LORA if shared else FOLD_LORA) and t >= FOLD_MIN_T and r <= 64
    if fold and not (t >= FOLD_MIN_T and r <= 64):
        raise ValueError(f"the shrink folds only for T >= {FOLD_MIN_T} and r <= 64, got T={t}, r={r}")
    return fold


def batched_lora(x, weight, bias, ids, lora_a, lora_b, scale, coef=None, any_adapter=True, fold=None):
    """Same contract as ``reference.batched_lora``; ``coef`` is ``lora_coef(scale, r)`` when the
    caller has it, and ``any_adapter=False`` (every id -1, known without a device sync) skips the
    shrink and the epilogue. ``fold`` (default ``FOLD_LORA``, when T and r allow) computes
    h = x·A_idᵀ inside the GEMM's K-loop instead of in a separate shrink that reads x again."""
    n, r, d_in = lora_a.shape
    _check(x, ids, d_in)
    assert lora_b.shape == (n, weight.shape[0], r), f"lora_b must be (N, d_out, r), got {tuple(lora_b.shape)}"
    assert lora_a.is_contiguous() and lora_b.is_contiguous(), "adapter weights must be contiguous"
    if not any_adapter:
        return _launch(x, weight, bias, ids, None, None, 0, None, 0, None, n, False)
    coef = lora_coef(scale, r) if coef is None else coef
    if _should_fold(x.shape[1], r, fold, shared=False):
        return _launch(x, weight, bias, ids, None, lora_a, lora_a.stride(0), lora_b, lora_b.stride(0), coef, n, True)
    h = _shrink(x, lora_a, lora_a.stride(0), ids, n)
    return _launch(x, weight, bias, ids, h, None, 0, lora_b, lora_b.stride(0), coef, n, False)


def batched_s2lora(x, weight, bias, ids, basis_a, basis_b, lam, scale, coef=None, any_adapter=True, fold=None):
    """Same contract as ``reference.batched_s2lora``: one shared shrink (folded into the K-loop, or
    one separate pass for every utterance with an adapter), and the shared B as one more K-step of
    the GEMM with a per-row λ."""
    r, d_in = basis_a.shape
    _check(x, ids, d_in)
    assert basis_b.shape == (weight.shape[0], r), f"basis_b must be (d_out, r), got {tuple(basis_b.shape)}"
    assert lam.dim() == 2 and lam.shape[1] == r, f"lam must be (N, {r}), got {tuple(lam.shape)}"
    assert basis_a.is_contiguous() and basis_b.is_contiguous(), "basis must be contiguous"
    n = lam.shape[0]
    if not any_adapter:
        return _launch(x, weight, bias, ids, None, None, 0, None, 0, None, n, False)
    coef = s2lora_coef(lam, scale) if coef is None else coef
    if _should_fold(x.shape[1], r, fold, shared=True):
        return _launch(x, weight, bias, ids, None, basis_a, 0, basis_b, 0, coef, n, True)
    shared = torch.where(ids >= 0, 0, -1)  # the shrink only asks "has an adapter"; row 0 of a stride-0 A
    h = _shrink(x, basis_a, 0, shared, 1)
    return _launch(x, weight, bias, ids, h, None, 0, basis_b, 0, coef, n, False)


def linear(x, weight, bias=None):
    """The fused kernel with no adapter: the bare GEMM, for the check against cuBLAS."""
    ids = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
    return _launch(x, weight, bias, ids, None, None, 0, None, 0, None, 0, False)
