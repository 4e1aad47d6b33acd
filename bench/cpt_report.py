"""bench/cpt.md and bench/cpt_curves.png from what bench/cpt.py measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechpeft.fs import atomic_write


def _ci(r: dict[str, Any]) -> str:
    low, high = r["ci"]
    return f"{r['cer']:.4f} [{low:.4f}, {high:.4f}]"


def _minutes(r: dict[str, Any]) -> str:
    return f"{r['minutes']:.0f}" if "minutes" in r else "–"


_PARTS = [
    ("corpus", "making the corpus"),
    ("source", "the stand-in from scratch"),
    ("ctc_a", "(a)'s CTC"),
    ("cpt", "CPT"),
    ("ctc_b", "(b)'s CTC"),
    ("ctc_a_test", "test decoding"),
    ("ctc_b_test", "test decoding"),
]


def _wall(clocks: dict[str, float]) -> str:
    """Where the wall-clock minutes of the run went (dev evaluations inside their stages)."""
    parts: dict[str, float] = {}
    for key, label in _PARTS:
        if key in clocks:
            parts[label] = parts.get(label, 0.0) + clocks[key] / 60
    spent = ", ".join(f"{label} {m:.1f}" for label, m in parts.items())
    return f"Wall-clock: {sum(clocks.values()) / 60:.0f} min in all ({spent} min)."


def render(rows: dict, facts: dict, manifests: dict, machine: str, date: str, curves: str, paired: dict,
           clocks: dict[str, float] | None = None) -> str:  # fmt: skip
    a, b = rows["ctc_a"], rows["ctc_b"]
    src, cpt = facts["source"], facts["cpt"]

    def dev(f: dict, key: str, fmt: str) -> str:
        return f"{format(f['dev_first'][key], fmt)} -> {format(f['dev_last'][key], fmt)}"

    better = "lower" if paired["delta"] < 0 else "higher"
    lines = [
        "# Continued pretraining for an unseen language: a miniature of the Ainu experiment",
        "",
        "**Everything here is SYNTHETIC speech** (data/unseen_lang_demo: espeak-ng + sox; four source languages,",
        "en/de/fr/pl, untranscribed; the target, Maori, absent from them). Made by `python bench/cpt.py` in one run",
        f"({date}, {machine}, fp32).",
        "",
        "Why Maori: a Polynesian language of open CV syllables, five vowels with phonemic length and ten",
        "consonants, far from the clusters and reduced vowels of the four sources and, like Ainu, related to",
        "none of them; espeak-ng speaks it (`mi`). Its splits: untranscribed audio for CPT (6 voices, other",
        "sentences), transcribed train (3 voices), dev and test (2 voices each), no voice in two splits.",
        *(["", _wall(clocks), ""] if clocks else [""]),
        "| system | trainable parameters (stage) | best dev CER (update) | test CER [95 % CI] | CTC minutes |",
        "|---|---|---|---|---|",
        f"| (a) stand-in -> CTC | {a['trainable']:,} (CTC) | {a['dev']:.4f} ({a['best_step']}) | {_ci(a)} | "
        f"{_minutes(a)} |",
        f"| (b) stand-in -> CPT -> CTC | {cpt['trainable']:,} (CPT), {b['trainable']:,} (CTC) | {b['dev']:.4f} "
        f"({b['best_step']}) | {_ci(b)} | {_minutes(b)} |",
        "",
        "Both CTC rows are recipes/unseen_lang_ctc.yaml as shipped (LoRA on every linear of the transformer,",
        "a new character vocabulary and CTC head): the same labelled split, updates, batches, learning rate",
        "and best-on-dev selection; only the base differs. Minutes are training time without the dev evaluations.",
        "",
        f"(b) - (a): {paired['delta']:+.4f} CER, 95 % CI [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}], "
        f"p = {paired['p_value']:.3f} (paired bootstrap over test utterances): CPT gave a {better} CER.",
        "",
        "## The pretraining stages",
        "",
        "| stage | audio | updates | trainable | dev loss | dev contrastive accuracy | dev codebook perplexity | "
        "minutes |",
        "|---|---|---|---|---|---|---|---|",
        f"| stand-in from scratch | source languages | {src['steps']} | {src['trainable']:,} | "
        f"{dev(src, 'loss', '.3f')} "
        f"| {dev(src, 'accuracy', '.3f')} | {dev(src, 'perplexity', '.1f')} | {src['minutes']:.0f} |",
        f"| CPT | untranscribed Maori | {cpt['steps']} | {cpt['trainable']:,} | {dev(cpt, 'loss', '.3f')} "
        f"| {dev(cpt, 'accuracy', '.3f')} | {dev(cpt, 'perplexity', '.1f')} | {cpt['minutes']:.0f} |",
        "",
        "Dev figures are the objective on held-out Maori audio (dev.jsonl) under one fixed draw of masks and",
        "distractors, so they move only with the model.",
        "",
        f"![pretraining curves]({curves})",
        "",
        "Test examples (reference / (a) / (b)):",
        "",
    ]
    for (ref, ha), (_, hb) in zip(a["examples"], b["examples"], strict=True):
        lines.append(f"- `{ref}` / `{ha}` / `{hb}`")
    lines += ["", "Corpus: " + ", ".join(f"{k} {Path(v).name}" for k, v in sorted(manifests.items())) + "."]
    return "\n".join(lines) + "\n"


def write_curves(facts: dict, path: Path) -> None:
    """Both pretraining stages side by side: loss, contrastive accuracy, codebook perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("loss", "loss per masked frame"), ("accuracy", "contrastive accuracy"), ("perplexity", "perplexity")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7), squeeze=False)
    for row, (stage, title) in enumerate([("source", "stand-in, from scratch\n(source languages)"),
                                          ("cpt", "continued pretraining\n(untranscribed Maori)")]):  # fmt: skip
        log = facts[stage]["rows"]
        train = [r for r in log if r["event"] == "train"]
        dev = [r for r in log if r["event"] == "dev"]
        for ax, (key, label) in zip(axes[row], keys, strict=True):
            ax.plot([r["step"] for r in train], [r[key] for r in train], alpha=0.35, linewidth=0.8, label="train")
            ax.plot([r["step"] for r in dev], [r[key] for r in dev], marker="o", color="tab:red", label="dev")
            ax.set(xlabel="update", ylabel=f"{title}\n{label}" if key == "loss" else label,
                   title=label if row == 0 else "")  # fmt: skip
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("SYNTHETIC speech: wav2vec 2.0 pretraining curves")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
