"""``speechpeft adapters new|inspect``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..adapters import adapter_kind, read_adapter, save_adapter, summarize_adapter
from ..errors import SpeechPeftError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapters", help="create and inspect adapter files")
    cmds = p.add_subparsers(dest="adapters_command", required=True, metavar="ACTION")

    new = cmds.add_parser("new", help="inject a fresh (untrained) adapter into a model and save it")
    new.add_argument(
        "--model", default="openai/whisper-base", help="Whisper hub id or local path (default: %(default)s)"
    )
    new.add_argument("--kind", default="s2lora", help="a registered adapter kind (default: %(default)s)")
    new.add_argument("--targets", help="preset (attn, attn_qv, all_linear) or regex; default: the kind's")
    new.add_argument("--rank", type=int, help="adapter rank; default: the kind's")
    new.add_argument("--alpha", type=float, help="scaling numerator (scaling = alpha / rank)")
    new.add_argument("--seed", type=int, default=0, help="seed for the adapter's random init (default: %(default)s)")
    new.add_argument("-o", "--output", required=True, help="adapter directory to write")
    new.set_defaults(func=run_new)

    inspect = cmds.add_parser("inspect", help="describe an adapter directory: kind, base, targets, size, sparsity")
    inspect.add_argument("path", metavar="DIR")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=run_inspect)


def run_new(args: argparse.Namespace) -> int:
    import torch

    from ..models import load_host

    kind = adapter_kind(args.kind)
    overrides = {
        k: v for k, v in (("targets", args.targets), ("rank", args.rank), ("alpha", args.alpha)) if v is not None
    }
    try:
        config = kind.config_cls(**overrides)
    except ValueError as e:
        raise SpeechPeftError(str(e)) from None
    host = load_host(args.model, device="cpu")
    torch.manual_seed(args.seed)
    names = host.inject(config)
    path = save_adapter(host.model, args.output, prune=False)  # untrained: keep the full basis
    print(f"wrote a fresh {kind.name} adapter on {len(names)} modules of {args.model} to {path}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    summary = summarize_adapter(read_adapter(args.path))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    """The text form of ``summarize_adapter``'s output."""
    cfg = ", ".join(f"{k}={v}" for k, v in s["config"].items() if k != "targets")
    params = s["parameters"]
    lines = [
        f"adapter    {s['path']}",
        f"kind       {s['kind']} ({cfg})",
        f"base       {s['base_model'] or 'unnamed model'}"
        + (f" (fingerprint {s['fingerprint']})" if s["fingerprint"] else ""),
        f"targets    {s['targets']['count']} nn.Linear modules",
    ]
    lines += [f"             {pattern}  x{n}" for pattern, n in s["targets"]["groups"].items()]
    share = (
        f" = {100 * params['trainable'] / params['base']:.3f} % of the base's {params['base']:,}"
        if params.get("base")
        else ""
    )
    lines.append(f"trainable  {params['trainable']:,} parameters{share}")
    lines.append(f"stored     {params['stored']:,} parameters in adapter_model.safetensors")
    d = s["details"]
    if "zero_fraction" in d:
        ranks = ", ".join(f"{k}: {r}" for k, r in d["basis_ranks"].items())
        zero = f"{d['lambda_zero']:,} of {d['lambda_entries']:,}"
        lines.append(f"sparsity   {100 * d['zero_fraction']:.1f} % of λ entries are zero ({zero})")
        lines.append(f"bases      stored rank per shared basis: {ranks}")
    if "ranks" in d:
        lines.append(f"ranks      {', '.join(map(str, d['ranks']))}")
    lines += d.get("lines", [])  # a kind's own facts, already worded
    if d.get("rank_table"):
        lines += ["ranks in use per matrix (non-zero λ), by layer:", *rank_lines(d["rank_table"])]
    return "\n".join(lines)


def rank_lines(table: dict[str, int]) -> list[str]:
    """The text twin of ranks.png: module roles down, layers across."""
    from ..eval.report import rank_grid

    roles, layers, values = rank_grid(table)
    width = max(len(r) for r in roles)
    out = ["  " + " " * width + " " + " ".join(f"{c:>3}" for c in layers)]
    for role, row in zip(roles, values, strict=True):
        cells = " ".join("  ." if v != v else f"{int(v):>3}" for v in row)  # NaN: not adapted in that layer
        out.append(f"  {role:<{width}} {cells}")
    return out
