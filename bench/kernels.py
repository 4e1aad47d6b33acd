"""Multi-adapter batches on the Whisper encoder: speechpeft's kernels vs PEFT vs naive gather+bmm.

    python bench/kernels.py                    # on the GPU machine (H200): writes bench/kernels.md
    python bench/kernels.py --tiny --report /tmp/k.md   # a CPU smoke run at toy size (numbers meaningless)

Setup, as in the issue: the encoder of whisper-small (B=32) and of large-v3 (B=16) with random
weights, 30 s windows, bf16, LoRA r=16 on q, k, v, out, fc1, fc2 of every encoder layer; 1, 8
and 32 distinct adapters spread over the batch. Every engine runs the same inputs in the same
process; the table gives median times over repeats and ratios to the bare encoder, to PEFT's
mixed batch (``adapter_names``) and to a naive gather + bmm. Also: the S2-LoRA mixed batch
(one shared basis, a λ row per adapter), the achieved bandwidth of the adapter work, and one
decode step (one token per utterance) through the same six layer shapes.

Only torch, transformers, peft and speechpeft are imported (the GPU machine has no audio stack).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from speechpeft.adapters.bank import BankLinear, set_bank_ids  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
CONFIGS = {  # name: (d_model, layers, heads, ffn, mels, batch)
    "whisper-small": (768, 12, 12, 3072, 80, 32),
    "whisper-large-v3": (1280, 32, 20, 5120, 128, 16),
    "tiny": (64, 2, 4, 128, 80, 4),
}
PEAK_GBPS = 4800.0  # H200 HBM3e


def encoder(name: str, device: str, dtype: torch.dtype, frames: int) -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    d, layers, heads, ffn, mels, _ = CONFIGS[name]
    cfg = WhisperConfig(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
                        num_mel_bins=mels, max_source_positions=frames // 2)  # fmt: skip
    return WhisperEncoder(cfg).to(device, dtype).eval()


def targets(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS]


def add_bank(model: nn.Module, n: int, rank: int, s2: bool, g: torch.Generator) -> None:
    for name in targets(model):
        parent, _, child = name.rpartition(".")
        base = model.get_submodule(name)
        layer = BankLinear(base)
        d_out, d_in = base.out_features, base.in_features
        dev, dt_ = base.weight.device, base.weight.dtype
        if s2:
            a = torch.randn(rank, d_in, generator=g) / d_in**0.5
            layer.set_s2lora(a.to(dev, dt_), torch.randn(d_out, rank, generator=g).to(dev, dt_) * 0.01,
                             torch.randn(n, rank, generator=g).to(dev, torch.float32), 1.0)  # fmt: skip
        else:
            a = torch.randn(n, rank, d_in, generator=g) / d_in**0.5
            layer.set_lora(a.to(dev, dt_), (torch.randn(n, d_out, rank, generator=g) * 0.01).to(dev, dt_),
                           torch.ones(n, device=dev))  # fmt: skip
        setattr(model.get_submodule(parent), child, layer)


class NaiveLoRA(nn.Module):
    """y = W x + s · (x · A[ids]ᵀ) · B[ids]ᵀ with torch gather + bmm."""

    def __init__(self, base: nn.Linear, n: int, rank: int, g: torch.Generator):
        super().__init__()
        self.base, self.ids = base, None
        dev, dt_ = base.weight.device, base.weight.dtype
        self.a = (torch.randn(n, rank, base.in_features, generator=g) / base.in_features**0.5).to(dev, dt_)
        self.b = (torch.randn(n, base.out_features, rank, generator=g) * 0.01).to(dev, dt_)

    def forward(self, x):
        h = torch.bmm(x, self.a[self.ids].transpose(1, 2))  # (B, T, r)
        return self.base(x) + torch.bmm(h, self.b[self.ids].transpose(1, 2))


def add_naive(model, n, rank, g):
    for name in targets(model):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, NaiveLoRA(model.get_submodule(name), n, rank, g))


def peft_model(model, n, rank):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS), init_lora_weights=False)
    pm = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, n):
        pm.add_adapter(f"a{i}", cfg)
    return pm.eval()  # PEFT refuses adapter_names in training mode


def timed(fn, device: str, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


@torch.no_grad()
def run_config(name: str, device: str, dtype: torch.dtype, frames: int, rank: int, repeats: int) -> list[dict]:
    *_, mels, batch = CONFIGS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, mels, frames, generator=g).to(device, dtype)
    rows = []
    bare_model = encoder(name, device, dtype, frames)
    bare = timed(lambda: bare_model(x), device, repeats)
    rows.append({"config": name, "engine": "bare encoder", "adapters": 0, "seconds": bare})
    for n in (1, 8, 32):
        ids = torch.arange(batch, device=device) % n
        for engine in ("speechpeft kernels (LoRA)", "speechpeft kernels (S2-LoRA, shared basis)", "naive gather+bmm",
                       "PEFT adapter_names"):  # fmt: skip
            model = encoder(name, device, dtype, frames)
            model.load_state_dict(bare_model.state_dict())
            if engine.startswith("speechpeft"):
                add_bank(model, n, rank, "S2" in engine, g)
                set_bank_ids(model, ids)
                fn = lambda m=model: m(x)  # noqa: E731
            elif engine.startswith("naive"):
                add_naive(model, n, rank, g)
                for m in model.modules():
                    if isinstance(m, NaiveLoRA):
                        m.ids = ids
                fn = lambda m=model: m(x)  # noqa: E731
            else:
                model = peft_model(model, n, rank)
                names = [f"a{int(i)}" for i in ids]
                fn = lambda m=model, names=names: m(input_features=x, adapter_names=names)  # noqa: E731
            rows.append({"config": name, "engine": engine, "adapters": n, "seconds": timed(fn, device, repeats)})
            del model
    rows += decode_step(name, device, dtype, rank, repeats, g)
    return rows


def decode_step(name, device, dtype, rank, repeats, g) -> list[dict]:
    """One token per utterance through the six target shapes of one layer, 32 adapters."""
    d, _, _, ffn, _, batch = CONFIGS[name]
    shapes = [(d, d)] * 4 + [(ffn, d), (d, ffn)]
    layers = [nn.Linear(i, o).to(device, dtype) for o, i in shapes]
    xs = [torch.randn(batch, 1, i, generator=g).to(device, dtype) for _, i in shapes]
    ids = torch.arange(batch, device=device) % 32
    bare = timed(lambda: [m(x) for m, x in zip(layers, xs, strict=True)], device, repeats)
    banks = []
    for m in layers:
        b = BankLinear(m)
        b.set_lora((torch.randn(32, rank, m.in_features, generator=g) / m.in_features**0.5).to(device, dtype),
                   (torch.randn(32, m.out_features, rank, generator=g) * 0.01).to(device, dtype),
                   torch.ones(32, device=device))  # fmt: skip
        b.ids = ids
        banks.append(b)
    ours = timed(lambda: [m(x) for m, x in zip(banks, xs, strict=True)], device, repeats)
    return [{"config": name, "engine": "decode step: bare linears", "adapters": 0, "seconds": bare},
            {"config": name, "engine": "decode step: speechpeft kernels", "adapters": 32, "seconds": ours}]  # fmt: skip


def adapter_bytes(name: str, n: int, rank: int, frames: int, elem: int) -> float:
    """Bytes the LoRA work must move at least: read x twice-free (once), A/B of n adapters, write y."""
    d, layers, _, ffn, _, batch = CONFIGS[name]
    t = frames // 2
    total = 0
    for d_out, d_in in [(d, d)] * 4 + [(ffn, d), (d, ffn)]:
        total += batch * t * d_in * elem  # read x for the shrink
        total += n * rank * (d_in + d_out) * elem  # A and B of the adapters in use
        total += batch * t * rank * 4 * 2  # h (fp32) written and read
        total += batch * t * d_out * elem * 2  # y read and written by the expand
    return total * layers


def render(rows: list[dict], args, device_name: str, rank: int, frames: int, dtype: torch.dtype) -> str:
    elem = torch.finfo(dtype).bits // 8
    out = [
        "# Multi-adapter batches on the Whisper encoder",
        "",
        f"Made by `python bench/kernels.py{' --tiny' if args.tiny else ''}` on {dt.date.today().isoformat()}, "
        f"{device_name}, torch {torch.__version__}, {str(dtype).replace('torch.', '')}, "
        f"LoRA r={rank} on q/k/v/out/fc1/fc2, {frames} mel frames, median of {args.repeats}.",
        "",
        "| config | engine | adapters | time (ms) | vs bare | vs PEFT | vs naive | adapter GB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = [x for x in rows if x["config"] == r["config"]]
        bare = next(x["seconds"] for x in same if x["engine"] in ("bare encoder", "decode step: bare linears")
                    and (x["engine"].startswith("decode") == r["engine"].startswith("decode")))  # fmt: skip
        step = r["engine"].startswith("decode")
        peer = {e: None if step else next((x["seconds"] for x in same if x["engine"] == e
                                           and x["adapters"] == r["adapters"]), None)
                for e in ("PEFT adapter_names", "naive gather+bmm")}  # fmt: skip
        vs = {e: f"{r['seconds'] / t:.2f}x" if t else "-" for e, t in peer.items()}
        gbps = "-"
        if r["engine"].startswith("speechpeft kernels (LoRA)") and r["seconds"] > bare:
            moved = adapter_bytes(r["config"], r["adapters"], rank, frames, elem)
            gbps = f"{moved / (r['seconds'] - bare) / 1e9:.0f}"
        out.append(
            f"| {r['config']} | {r['engine']} | {r['adapters']} | {1000 * r['seconds']:.2f} | "
            f"{r['seconds'] / bare:.3f}x | {vs['PEFT adapter_names']} | {vs['naive gather+bmm']} | {gbps} |"
        )
    out += ["", f"Adapter GB/s: the bytes the LoRA work must move, over (time - bare time); the H200 peaks at "
                f"{PEAK_GBPS:,.0f} GB/s. Ratios below 1.00x mean faster than the peer."]  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU, to check the script runs")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--report", type=Path, default=HERE / "kernels.md")
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    dtype = getattr(torch, "float32" if args.tiny else args.dtype)
    frames = 200 if args.tiny else 3000
    configs = ["tiny"] if args.tiny else ["whisper-small", "whisper-large-v3"]
    rows = []
    for name in configs:
        rows += run_config(name, device, dtype, frames, args.rank, args.repeats)
        print(*(f"{r['config']:>16} {r['engine']:<45} {r['adapters']:>2} {1000 * r['seconds']:9.2f} ms" for r in rows),
              sep="\n", flush=True)  # fmt: skip
    name = "CPU (toy sizes: numbers meaningless)" if args.tiny else torch.cuda.get_device_name()
    args.report.write_text(render(rows, args, name, args.rank, frames, dtype), encoding="utf-8")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
