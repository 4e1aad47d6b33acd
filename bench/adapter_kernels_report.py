"""bench/adapter_kernels.py's report: the timing table, the GEMM check against cuBLAS, the tiles
the fused kernel's autotuner chose."""

from __future__ import annotations

import datetime as dt

import torch

PEAK_GBPS = 4800.0  # H200 HBM3e


def render(rows, gemm, args, device_name, rank, dtype) -> str:
    out = [
        "# Multi-adapter batches on Whisper",
        "",
        f"Made by `python bench/adapter_kernels.py --config {args.config}` on {dt.date.today().isoformat()}, "
        f"{device_name}, "
        f"torch {torch.__version__}, {str(dtype).replace('torch.', '')}, LoRA r={rank} on q/k/v/out/fc1/fc2, 30 s "
        f"windows, random weights; median of {args.repeats} interleaved calls (min-max). Every engine's output was "
        "checked against the pure-torch reference before it was timed.",
        "",
        "| config | part | engine | adapters | time (ms) | spread (ms) | vs bare | vs PEFT | vs naive | adapter GB/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = [x for x in rows if x["group"] == r["group"] and "seconds" in x]  # one interleaved measurement
        bare = next(x["seconds"] for x in same if x["engine"] == "bare")
        if "seconds" not in r:
            out.append(f"| {r['config']} | {r['part']} | {r['engine']} | {r['adapters']} | not timed: {r['wrong']} "
                       "| | | | | |")  # fmt: skip
            continue
        peers = {e: next((x["seconds"] for x in same if x["engine"] == e), None)
                 for e in ("PEFT adapter_names", "naive gather+bmm")}  # fmt: skip
        vs = {e: f"{r['seconds'] / t:.2f}x" if t and r["adapters"] else "-" for e, t in peers.items()}
        extra = r["seconds"] - bare
        gbps = f"{r['bytes'] / extra / 1e9:,.1f}" if r["adapters"] and extra > 0 else "-"
        out.append(
            f"| {r['config']} | {r['part']} | {r['engine']} | {r['adapters']} | {1000 * r['seconds']:.3f} | "
            f"{1000 * r['lo']:.3f}-{1000 * r['hi']:.3f} | {r['seconds'] / bare:.3f}x | {vs['PEFT adapter_names']} | "
            f"{vs['naive gather+bmm']} | {gbps} |"
        )
    out += ["", "Adapter GB/s: the bytes the adapter work must move at least (x read for the shrink, h in fp32 "
            "written and read, the adapters' A and B; S2-LoRA: one basis and λ rows), over (time - bare time). "
            f"The H200 peaks at {PEAK_GBPS:,.0f} GB/s; a figure above that means the adapter work hides under the "
            "base GEMM. Ratios below 1.00x are faster than the peer."]  # fmt: skip
    if gemm:
        out += ["", "## The fused kernel with no adapter against cuBLAS", "",
                "| rows x d_in -> d_out | engine | time (ms) | spread (ms) | vs cuBLAS |",
                "|---|---|---|---|---|"]  # fmt: skip
        for r in gemm:
            cublas = next(x["seconds"] for x in gemm if x["shape"] == r["shape"] and x["engine"].startswith("cuBLAS"))
            out.append(f"| {r['shape']} | {r['engine']} | {1000 * r['seconds']:.3f} | {1000 * r['lo']:.3f}-"
                       f"{1000 * r['hi']:.3f} | {r['seconds'] / cublas:.3f}x |")  # fmt: skip
    return "\n".join(out) + "\n"


def tiles() -> str:
    """The tiles the fused kernel's autotuner chose, per shape (what to look at when a row is slow)."""
    try:
        from speechpeft.kernels import triton_fused
    except ImportError:
        return ""
    cache = getattr(triton_fused._fused_kernel, "cache", {})
    if not cache:
        return ""
    out = ["", "## Tiles the fused kernel's autotuner chose", "",
           "| M (bit length) | d_in | d_out | r | T = 1 | shrink folded | shared A | tile (M x O x K), warps, stages |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, cfg in sorted(cache.items(), key=str):
        kw = cfg.kwargs
        cells = " | ".join(str(k) for k in key[:7])
        tile = f"{kw['BLOCK_M']} x {kw['BLOCK_O']} x {kw['BLOCK_K']}, {cfg.num_warps}, {cfg.num_stages}"
        out.append(f"| {cells} | {tile} |")
    return "\n".join(out) + "\n"
