"""Run artefacts people look at: ``curves.png`` (loss and dev error by step) and ``report.md``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..fs import atomic_write, atomic_write_text


def write_curves(rows: list[dict[str, Any]], path: Path, metric: str, title: str) -> Path:
    """Training loss (raw and smoothed) and dev ``metric`` against the update step (0 = before)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("event") == "train"]
    dev = [r for r in rows if r.get("event") == "dev"]
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    ax_loss.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="per update")
    if len(losses) >= 5:
        ax_loss.plot(steps, _ema(losses, 0.9), color="tab:blue", label="smoothed (EMA 0.9)")
    ax_loss.set(xlabel="update", ylabel="train loss (token cross-entropy)", title="training loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if dev:
        ax_dev.plot([r["step"] for r in dev], [r[metric] for r in dev], marker="o", color="tab:red")
        best = min(dev, key=lambda r: r[metric])
        ax_dev.annotate(
            f"best {best[metric]:.3f}", (best["step"], best[metric]), textcoords="offset points", xytext=(0, 8)
        )
    ax_dev.set(xlabel="update", ylabel=f"dev {metric.upper()}", title=f"dev {metric.upper()} (lower is better)")
    ax_dev.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def _ema(values: list[float], beta: float) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = beta * acc + (1 - beta) * v
        out.append(acc)
    return out


def write_report(path: Path, info: dict[str, Any]) -> Path:
    """``report.md`` from the run's facts (see ``speechpeft.train.loop`` for the keys)."""
    m = info["metric"].upper()
    zero, adapted = info["zero_shot"], info["adapted"]
    share = 100 * info["trainable"] / info["base_parameters"]
    best = f"best dev, update {info['best_step']}; {info['window_seconds']:g} s window"
    lines = [f"# {info['name']}: {info['model']} + {info['adapter_kind']}", "", f"**Data:** {info['data_description']}"]
    if zero and adapted:
        rel = adapted["rate"] / zero["rate"] if zero["rate"] else float("nan")
        lines += [
            "",
            f"| test set ({info['test_utterances']} utterances) | {m} | S | D | I | reference units |",
            "|---|---|---|---|---|---|",
            _row(f"zero-shot ({info['zero_shot_window']:g} s window)", zero),
            _row(f"adapted ({best})", adapted),
            "",
            f"Adapted {m} is **{100 * rel:.1f} %** of zero-shot {m}.",
        ]
    else:
        lines += ["", "The test split was not evaluated (a run for choosing settings on dev)."]
    lines += [
        "",
        f"| dev set ({info['dev_utterances']} utterances) | {m} | S | D | I | reference units |",
        "|---|---|---|---|---|---|",
        _row(best, info["best_dev"]),
        "",
    ]
    for extra in info.get("extra_metrics", []):
        lines.append(f"{extra['label']}: zero-shot {extra['zero']:.4f}, adapted {extra['adapted']:.4f}.")
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| trainable parameters | {info['trainable']:,} ({share:.3f} % of {info['base_parameters']:,}) |",
        *([f"| stored in the adapter file | {info['stored']:,} |"] if info.get("stored") is not None else []),
        f"| updates x batch | {info['steps']} x {info['batch']} |",
        f"| training wall time | {info['train_seconds'] / 60:.1f} min |",
        f"| total wall time | {info['total_seconds'] / 60:.1f} min |",
        f"| machine | {info['machine']} |",
        f"| decoding | {info['decoding']} |",
        f"| normaliser | {info['normaliser']} |",
    ]
    for label, text in info.get("facts", {}).items():
        lines.append(f"| {label} | {text} |")
    lines += ["", "![curves](curves.png)", ""]
    if info.get("rank_table"):
        lines += ["![ranks in use per matrix](ranks.png)", ""]
    return atomic_write_text(path, "\n".join(lines))


def _row(label: str, r: dict[str, Any]) -> str:
    counts = " | ".join(str(r[k]) for k in ("substitutions", "deletions", "insertions", "reference_units"))
    return f"| {label} | {r['rate']:.4f} | {counts} |"


def rank_grid(table: dict[str, int]) -> tuple[list[str], list[str], list[list[float]]]:
    """(row labels, column labels, values) of a module -> ranks table: one row per module role
    (its name with the layer index taken out), one column per layer index."""
    cells: dict[tuple[str, str], int] = {}
    for name, ranks in table.items():
        match = re.search(r"\.(\d+)(?=\.|$)", name)
        layer = match.group(1) if match else "-"
        role = re.sub(r"\.\d+(?=\.|$)", "", name, count=1)
        cells[(role, layer)] = ranks
    roles = sorted({r for r, _ in cells}, key=_role_order)
    layers = sorted({c for _, c in cells}, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0))
    values = [[cells.get((r, c), float("nan")) for c in layers] for r in roles]
    return [_short(r) for r in roles], layers, values


def _role_order(role: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", role))


def _short(role: str) -> str:
    parts = [p for p in role.split(".") if p not in ("model", "layers")]
    return " ".join(p.removesuffix("_proj") for p in parts)


def write_rank_heatmap(table: dict[str, int], path: Path, title: str, max_rank: int | None = None) -> Path:
    """A heatmap of ranks in use: module roles down, layers across, the count in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, cols, values = rank_grid(table)
    grid = np.array(values, dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 3.0 + 0.55 * len(cols)), max(3.0, 1.2 + 0.32 * len(rows))))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=max_rank or np.nanmax(grid) or 1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("layer")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{int(grid[i, j])}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label="ranks in use")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
