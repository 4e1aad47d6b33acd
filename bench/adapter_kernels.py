"""Multi-adapter batches on Whisper: speechpeft's fused kernel vs its unfused pair, PEFT and naive bmm.

    python bench/adapter_kernels.py --config small     # on the GPU machine (H200): writes bench/kernels.md
    python bench/adapter_kernels.py --config large     # whisper-large-v3, 16 adapters (a separate run fits the budget)
    TRITON_INTERPRET=1 python bench/adapter_kernels.py --config tiny --report /tmp/k.md   # CPU check, toy sizes

What is timed, with random weights, 30 s windows (1500 encoder frames), bf16, LoRA r=16 on q, k,
v, out, fc1, fc2 of every layer:

- the encoder of whisper-small with B=32 and 1, 8 and 32 distinct adapters spread over the
  batch; of whisper-large-v3 with B=16 and 16 adapters (labelled so);
- engines: the bare encoder; speechpeft's fused kernel (the adapter in the base GEMM's epilogue,
  the shrink folded into its K-loop or separate: each kind's default, and on the encoder the
  other way too); speechpeft's unfused pair (cuBLAS, then an expand that reads y again: the CUDA
  default, see speechpeft/kernels/__init__.py); the
  fused kernel with S2-LoRA (one shared basis, a λ row per adapter); naive gather + bmm; PEFT's
  mixed batch (``adapter_names``, ``autocast_adapter_dtype=False`` so its adapters stay bf16);
- one real decoder step: every decoder layer, one token per utterance after 8 cached ones,
  cross-attention on the cached encoder states, the same adapters on its linears;
- the fused kernel with no adapter against cuBLAS on the six bare shapes (it must not lose).

Fairness: every engine gets the same weights (one set of A, B per adapter, copied into each);
each engine's output is checked with ``assert_close`` against the pure-torch reference on the same
model before it is timed, and the adapter's effect on that output must be far larger than the
engine's error (a check that passes for the bare model would prove nothing). A wrong engine is
reported as such and not timed. The engines of a configuration are timed interleaved, rotating,
one call each per round, so drift hits them alike; the table gives the median and the spread.

Only torch, transformers, peft, triton and speechpeft are imported (the GPU machine has no audio
stack).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # its report module, also when run through runpy

from speechpeft import kernels  # noqa: E402
from speechpeft.adapters.bank import BankLinear, set_bank_ids  # noqa: E402
from speechpeft.fs import atomic_write_text  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
# name: (d_model, layers, heads, ffn, mels, batch, adapter counts, frames)
CONFIGS = {
    "small": ("whisper-small", 768, 12, 12, 3072, 80, 32, (1, 8, 32), 3000),
    "large": ("whisper-large-v3 (16 adapters)", 1280, 32, 20, 5120, 128, 16, (16,), 3000),
    "tiny": ("tiny", 32, 1, 2, 64, 80, 4, (1, 4), 80),  # 40 encoder frames: past one interpreter tile
}
CACHED = 8  # decoder tokens already in the cache before the timed step


def whisper_config(key: str):
    from transformers import WhisperConfig

    _, d, layers, heads, ffn, mels, _, _, frames = CONFIGS[key]
    return WhisperConfig(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                         decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, num_mel_bins=mels,
                         max_source_positions=frames // 2, max_target_positions=64)  # fmt: skip


def targets(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS]


def make_adapters(model: nn.Module, n: int, rank: int, g: torch.Generator) -> dict:
    """One set of weights for every engine: LoRA A, B per adapter and S2-LoRA's basis + λ per layer.
    B is large enough that the adapters move the output well past bf16 noise."""
    out = {}
    for name in targets(model):
        base = model.get_submodule(name)
        d_out, d_in = base.out_features, base.in_features
        out[name] = {
            "a": torch.randn(n, rank, d_in, generator=g) / d_in**0.5,
            "b": torch.randn(n, d_out, rank, generator=g) * (0.5 / rank**0.5),
            "basis_a": torch.randn(rank, d_in, generator=g) / d_in**0.5,
            "basis_b": torch.randn(d_out, rank, generator=g) * (0.5 / rank**0.5),
            "lam": torch.randn(n, rank, generator=g),
        }
    return out


def add_bank(model: nn.Module, weights: dict, s2: bool) -> None:
    dev, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    for name, w in weights.items():
        parent, _, child = name.rpartition(".")
        layer = BankLinear(model.get_submodule(name))
        if s2:
            layer.set_s2lora(w["basis_a"].to(dev, dtype), w["basis_b"].to(dev, dtype), w["lam"].to(dev), 1.0)
        else:
            n = w["a"].shape[0]
            layer.set_lora(w["a"].to(dev, dtype), w["b"].to(dev, dtype), torch.ones(n, device=dev))
        setattr(model.get_submodule(parent), child, layer)


class NaiveLoRA(nn.Module):
    """y = W x + (x · A[ids]ᵀ) · B[ids]ᵀ with torch gather + bmm."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.base, self.ids = base, None
        self.a, self.b = a.to(base.weight), b.to(base.weight)

    def forward(self, x):
        shape = x.shape
        x3 = x.reshape(self.ids.shape[0], -1, shape[-1])
        h = torch.bmm(x3, self.a[self.ids].transpose(1, 2))  # (B, T, r)
        return self.base(x) + torch.bmm(h, self.b[self.ids].transpose(1, 2)).reshape(*shape[:-1], -1)


def add_naive(model: nn.Module, weights: dict, ids: torch.Tensor) -> None:
    for name, w in weights.items():
        parent, _, child = name.rpartition(".")
        layer = NaiveLoRA(model.get_submodule(name), w["a"], w["b"])
        layer.ids = ids
        setattr(model.get_submodule(parent), child, layer)


def peft_model(model: nn.Module, weights: dict, rank: int):
    """PEFT LoRA adapters a0..a{n-1} carrying the same A and B (scaling alpha / r = 1), in the
    model's dtype: ``autocast_adapter_dtype=False`` keeps PEFT from holding them in fp32."""
    from peft import LoraConfig, get_peft_model

    n = next(iter(weights.values()))["a"].shape[0]
    dtype = next(model.parameters()).dtype
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS), init_lora_weights=False)
    pm = get_peft_model(model, cfg, adapter_name="a0", autocast_adapter_dtype=False)
    for i in range(1, n):
        pm.add_adapter(f"a{i}", cfg)
    modules = dict(pm.base_model.model.named_modules())
    with torch.no_grad():
        for name, w in weights.items():
            layer = modules[name]
            for i in range(n):
                layer.lora_A[f"a{i}"].weight.copy_(w["a"][i])
                layer.lora_B[f"a{i}"].weight.copy_(w["b"][i])
    return pm.to(dtype).eval()  # PEFT refuses adapter_names in training mode


def fresh(key: str, part: str, device: str, dtype: torch.dtype, state: dict) -> nn.Module:
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    cls = WhisperEncoder if part == "encoder" else WhisperDecoder
    with torch.device(device):  # initialised where it runs: a large-v3 encoder's CPU init takes seconds
        model = cls(whisper_config(key))
    if device == "meta":  # shapes only
        return model
    model.load_state_dict(state)
    return model.to(device, dtype).eval()


def engines(key, part, device, dtype, weights, ids, rank, state) -> dict:
    """name -> (model, forward kwargs maker, implementation to force or None)."""
    from speechpeft.kernels import reference

    fused = unfused = None
    try:
        from speechpeft.kernels import triton_fused, triton_lora

        fused, unfused = triton_fused, triton_lora
    except ImportError:
        pass
    out = {"bare": (fresh(key, part, device, dtype, state), {}, None)}
    lora = fresh(key, part, device, dtype, state)
    add_bank(lora, weights, s2=False)
    s2 = fresh(key, part, device, dtype, state)
    add_bank(s2, weights, s2=True)
    out["reference (LoRA)"] = (lora, {}, reference)
    out["reference (S2-LoRA)"] = (s2, {}, reference)
    if fused is not None:
        out["speechpeft fused (LoRA)"] = (lora, {}, fused)
        out["speechpeft unfused pair (LoRA)"] = (lora, {}, unfused)
        out["speechpeft fused (S2-LoRA, shared basis)"] = (s2, {}, fused)
        if part == "encoder":  # long inputs: each kind's other shrink (the defaults: FOLD_LORA, FOLD_S2LORA)
            lora_fn = functools.partial(fused.batched_lora, fold=not fused.FOLD_LORA)
            s2_fn = functools.partial(fused.batched_s2lora, fold=not fused.FOLD_S2LORA)
            other = SimpleNamespace(batched_lora=lora_fn, batched_s2lora=s2_fn)
            way = {True: "shrink folded", False: "separate shrink"}
            out[f"speechpeft fused, {way[not fused.FOLD_LORA]} (LoRA)"] = (lora, {}, other)
            out[f"speechpeft fused, {way[not fused.FOLD_S2LORA]} (S2-LoRA)"] = (s2, {}, other)
    naive = fresh(key, part, device, dtype, state)
    add_naive(naive, weights, ids)
    out["naive gather+bmm"] = (naive, {}, None)
    pm = peft_model(fresh(key, part, device, dtype, state), weights, rank)
    out["PEFT adapter_names"] = (pm, {"adapter_names": [f"a{int(i)}" for i in ids]}, None)
    for model, _, _ in out.values():
        set_bank_ids(model, ids)
    return out


class Step:
    """The same decoder step for every engine: the cache is cut back to CACHED tokens first."""

    def __init__(self, key, device, dtype, batch, g):
        from transformers import DynamicCache, EncoderDecoderCache

        cfg = whisper_config(key)
        self.enc = torch.randn(batch, CONFIGS[key][8] // 2, cfg.d_model, generator=g).to(device, dtype)
        self.prefix = torch.randint(0, cfg.vocab_size, (batch, CACHED), generator=g).to(device)
        self.token = torch.randint(0, cfg.vocab_size, (batch, 1), generator=g).to(device)
        self.caches: dict[int, object] = {}
        self.new_cache = lambda: EncoderDecoderCache(DynamicCache(), DynamicCache())

    def __call__(self, model, extra):
        cache = self.caches.get(id(model))
        if cache is None:  # prefill once per engine (untimed: the first call is a warm-up)
            cache = self.new_cache()
            model(input_ids=self.prefix, encoder_hidden_states=self.enc, past_key_values=cache, use_cache=True,
                  **extra)  # fmt: skip
            self.caches[id(model)] = cache
        extra_tokens = cache.get_seq_length() - CACHED
        if extra_tokens > 0:
            cache.crop(-extra_tokens)  # negative: remove that many (the form every transformers version takes)
        return model(input_ids=self.token, encoder_hidden_states=self.enc, past_key_values=cache, use_cache=True,
                     **extra).last_hidden_state  # fmt: skip


def call(fn, impl):
    if impl is None:
        return fn()
    with kernels.forced(impl):
        return fn()


def check(outputs: dict, dtype: torch.dtype) -> dict[str, str]:
    """Each engine against the reference of its kind; '' when right, else why not."""
    tol = dict(atol=1e-3, rtol=1e-3) if dtype == torch.float32 else dict(atol=0.15, rtol=0.1)
    verdicts = {}
    bare = outputs["bare"].float()
    for name, y in outputs.items():
        if name == "bare" or name.startswith("reference"):
            continue
        ref = outputs["reference (S2-LoRA)" if "S2" in name else "reference (LoRA)"].float()
        err = ((y.float() - ref).norm() / ref.norm()).item()
        effect = ((ref - bare).norm() / ref.norm()).item()
        try:
            torch.testing.assert_close(y.float(), ref, **tol)
            far = err * 10 < effect
            verdicts[name] = "" if far else f"error {err:.3g} not far below the adapters' effect {effect:.3g}"
        except AssertionError as e:
            verdicts[name] = "WRONG: " + str(e).splitlines()[0]
        print(f"  check {name}: relative error {err:.2e}, adapters' effect {effect:.2e} {verdicts[name]}", flush=True)
    return verdicts


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def measure(key, part, n, device, dtype, rank, repeats, g, state) -> list[dict]:
    label, *_, batch, _, frames = CONFIGS[key]
    ids = (torch.arange(batch) % n).to(device)
    weights = make_adapters(fresh(key, part, "meta", torch.float32, state), n, rank, g)
    table = engines(key, part, device, dtype, weights, ids, rank, state)
    if part == "encoder":
        x = torch.randn(batch, CONFIGS[key][5], frames, generator=g).to(device, dtype)
        run = lambda model, extra: model(x, **extra).last_hidden_state  # noqa: E731
    else:
        run = Step(key, device, dtype, batch, g)
    outputs, failed = {}, {}
    for name, (m, e, impl) in table.items():
        try:
            outputs[name] = call(lambda m=m, e=e: run(m, e), impl)
        except Exception as exc:  # an engine that does not run (a kernel that fails to compile) is reported
            if name in ("bare", "reference (LoRA)", "reference (S2-LoRA)"):
                raise
            failed[name] = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            print(f"  {name}: {failed[name]}", flush=True)
    verdicts = {**check(outputs, dtype), **failed}
    timed = [name for name in table if not name.startswith("reference") and not verdicts.get(name)]
    times = {name: [] for name in timed}
    for name in timed:  # warm-up (and autotuning) outside the timings
        model, extra, impl = table[name]
        call(lambda m=model, e=extra: run(m, e), impl)
    for rep in range(repeats):
        for name in timed[rep % len(timed) :] + timed[: rep % len(timed)]:
            model, extra, impl = table[name]
            sync(device)
            tick = time.perf_counter()
            call(lambda m=model, e=extra: run(m, e), impl)
            sync(device)
            times[name].append(time.perf_counter() - tick)
    what = "encoder" if part == "encoder" else f"decoder step ({CACHED} cached tokens)"
    rows = []
    for name in table:
        if name.startswith("reference"):
            continue
        moved = adapter_bytes(key, part, n, rank, dtype, s2="S2" in name)
        row = {"config": label, "part": what, "group": f"{label}/{what}/{n}", "engine": name,
               "adapters": 0 if name == "bare" else n, "bytes": moved}  # fmt: skip
        if name in times:
            row.update(seconds=statistics.median(times[name]), lo=min(times[name]), hi=max(times[name]))
        else:
            row["wrong"] = verdicts[name]
        rows.append(row)
    return rows


def adapter_bytes(key: str, part: str, n: int, rank: int, dtype: torch.dtype, s2: bool) -> float:
    """The least the adapter work must move beyond the bare model: x read once for the shrink, h
    (fp32) written and read, and the A, B of the adapters in use (S2-LoRA: one basis and λ rows).
    The unfused pair moves y twice more on top; that is the cost the fused kernel removes."""
    _, d, layers, _, ffn, _, batch, _, frames = CONFIGS[key]
    rows = batch * (frames // 2 if part == "encoder" else 1)
    elem = torch.finfo(dtype).bits // 8
    shapes = [(d, d)] * 4 + [(ffn, d), (d, ffn)] + ([(d, d)] * 4 if part != "encoder" else [])
    total = 0
    for d_out, d_in in shapes:
        total += rows * d_in * elem + rows * rank * 4 * 2
        total += (rank * (d_in + d_out) * elem + n * rank * 4) if s2 else n * rank * (d_in + d_out) * elem
    return float(total * layers)


@torch.no_grad()
def gemm_check(key, device, dtype, repeats, g) -> list[dict]:
    """The fused kernel with no adapter against cuBLAS (torch's linear) on the six bare shapes."""
    try:
        from speechpeft.kernels import triton_fused
    except ImportError:
        return []
    _, d, _, _, ffn, _, batch, _, frames = CONFIGS[key]
    rows = []
    for d_out, d_in in [(d, d), (ffn, d), (d, ffn)]:
        x = torch.randn(batch, frames // 2, d_in, generator=g).to(device, dtype)
        w = (torch.randn(d_out, d_in, generator=g) / d_in**0.5).to(device, dtype)
        bias = torch.randn(d_out, generator=g).to(device, dtype)
        torch.testing.assert_close(triton_fused.linear(x, w, bias).float(), nn.functional.linear(x, w, bias).float(),
                                   atol=0.05, rtol=0.05)  # fmt: skip
        fns = {"cuBLAS (torch linear)": lambda x=x, w=w, bias=bias: nn.functional.linear(x, w, bias),
               "fused kernel, no adapter": lambda x=x, w=w, bias=bias: triton_fused.linear(x, w, bias)}  # fmt: skip
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for rep in range(repeats):
            for k in list(fns)[rep % 2 :] + list(fns)[: rep % 2]:
                sync(device)
                tick = time.perf_counter()
                fns[k]()
                sync(device)
                times[k].append(time.perf_counter() - tick)
        for k, v in times.items():
            rows.append({"shape": f"{batch * frames // 2} x {d_in} -> {d_out}", "engine": k,
                         "seconds": statistics.median(v), "lo": min(v), "hi": max(v)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--report", type=Path, default=None, help="default: bench/kernels.md (small), kernels_large.md")
    args = parser.parse_args(argv)
    tiny = args.config == "tiny"
    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit(
            "bench/adapter_kernels.py --config small|large needs a CUDA GPU; --config tiny checks it on CPU"
        )
    dtype = torch.float32 if tiny else getattr(torch, args.dtype)
    report = args.report or HERE / ("kernels.md" if args.config == "small" else f"kernels_{args.config}.md")
    from adapter_kernels_report import render, tiles
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    g = torch.Generator().manual_seed(0)
    states = {part: cls(whisper_config(args.config)).state_dict()
              for part, cls in (("encoder", WhisperEncoder), ("decoder", WhisperDecoder))}  # fmt: skip
    rows = []
    name = "CPU under TRITON_INTERPRET (toy sizes: numbers meaningless)" if tiny else torch.cuda.get_device_name()
    counts = CONFIGS[args.config][7]
    for part, n in [("encoder", n) for n in counts] + [("decoder", counts[-1])]:
        print(f"== {args.config} {part}, {n} adapters", flush=True)
        rows += measure(args.config, part, n, device, dtype, args.rank, args.repeats, g, states[part])
        for r in rows[-6:]:
            print(f"  {r['engine']:<42} {1000 * r.get('seconds', float('nan')):10.3f} ms", flush=True)
        # written as it goes: a run cut short keeps its rows
        atomic_write_text(report, render(rows, [], args, name, args.rank, dtype) + tiles())
    gemm = gemm_check(args.config, device, dtype, args.repeats, g) if device == "cuda" else []
    atomic_write_text(report, render(rows, gemm, args, name, args.rank, dtype) + tiles())
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
