"""``curves.png`` and ``report.md`` of a continued-pretraining run: whether the self-supervised
task was learnt (loss down, contrastive accuracy up) and the codebooks stayed in use (perplexity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fs import atomic_write, atomic_write_text


def write_pretrain_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Three panels against the update: loss, contrastive accuracy, codebook perplexity (train and dev)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("event") == "train"]
    dev = [r for r in rows if r.get("event") == "dev"]
    panels = [
        ("loss", "loss per masked frame", "contrastive + diversity (lower is better)"),
        ("accuracy", "contrastive accuracy", "true latent picked among distractors"),
        ("perplexity", "codebook perplexity", "codebook entries in use (higher: more diverse)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, label, what) in zip(axes, panels, strict=True):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), color="tab:blue", alpha=0.35, linewidth=0.8, label="train (per update)")
        dev_points = [(r["step"], r[key]) for r in dev if key in r]
        if dev_points:
            ax.plot(*zip(*dev_points, strict=True), color="tab:red", marker="o", label="dev (fixed masks)")
        ax.set(xlabel="update", ylabel=label, title=what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_pretrain_report(path: Path, info: dict[str, Any]) -> Path:
    first, last = info["first_dev"] or {}, info["last_dev"] or {}
    synthetic = "**The audio is SYNTHETIC speech.** " if info["synthetic"] else ""

    def figure(key: str, fmt: str) -> str:
        if key not in first or key not in last:
            return "-"
        return f"{format(first[key], fmt)} -> {format(last[key], fmt)}"

    share = 100 * info["trainable"] / info["base_parameters"]
    lines = [
        f"# {info['name']}: continued pretraining",
        "",
        f"{synthetic}{info['description']}",
        "",
        f"- model: `{info['model']}`; trained: {info['mode']}, {info['trainable']:,} parameters "
        f"({share:.1f} % of {info['base_parameters']:,})",
        f"- audio: {info['train_utterances']} untranscribed files ({info['train_hours']:.2f} h); dev "
        f"{info['dev_utterances']} files",
        f"- {info['steps']} updates x {info['batch'].replace('utterances', 'files')}, peak lr {info['lr']:g}; "
        f"{info['train_seconds'] / 60:.1f} min of training, {info['total_seconds'] / 60:.1f} min in all",
        f"- machine: {info['machine']}",
        "",
        "| dev, update 0 -> last | value |",
        "|---|---|",
        f"| loss per masked frame | {figure('loss', '.4f')} |",
        f"| contrastive accuracy | {figure('accuracy', '.3f')} |",
        f"| codebook perplexity | {figure('perplexity', '.1f')} |",
        "",
        "![curves](curves.png)",
        "",
        f"The checkpoint is `{info['output']}`: name it as `model.name` in a CTC recipe "
        "(`speechpeft finetune --recipe unseen_lang_ctc model.name=...`).",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
