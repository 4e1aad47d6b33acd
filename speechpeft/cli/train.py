"""``speechpeft finetune``, ``speechpeft pretrain`` and ``speechpeft recipes list|show``."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ft = sub.add_parser("finetune", help="train an adapter from a recipe; writes runs/<name>/")
    ft.add_argument("--recipe", required=True, help="recipe name (see `speechpeft recipes list`) or YAML path")
    ft.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=100 model.window_seconds=30"
    )
    ft.add_argument("--resume", action="store_true", help="continue the run in runs/<name>/ from its checkpoint")
    ft.add_argument("--overwrite", action="store_true", help="start over even if runs/<name>/ holds a run")
    ft.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay in metrics.jsonl)")
    ft.set_defaults(func=run_finetune)

    pt = sub.add_parser(
        "pretrain", help="continue wav2vec 2.0 pretraining on untranscribed audio; writes runs/<name>/model/"
    )
    pt.add_argument("--recipe", required=True, help="recipe name (e.g. unseen_lang_cpt) or YAML path")
    pt.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=100 pretrain.mode=adapter")
    pt.add_argument("--resume", action="store_true", help="continue the run in runs/<name>/ from its checkpoint")
    pt.add_argument("--overwrite", action="store_true", help="start over even if runs/<name>/ holds a run")
    pt.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay in metrics.jsonl)")
    pt.set_defaults(func=run_pretrain)

    rec = sub.add_parser("recipes", help="list recipes or show one with every default filled in")
    cmds = rec.add_subparsers(dest="recipes_command", required=True, metavar="ACTION")
    cmds.add_parser("list", help="every known recipe and its run command").set_defaults(func=run_list)
    show = cmds.add_parser("show", help="the effective recipe as YAML")
    show.add_argument("name")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    show.set_defaults(func=run_show)


def run_finetune(args: argparse.Namespace) -> int:
    from ..distributed import is_main_process
    from ..train import finetune, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    info = finetune(recipe, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if not is_main_process():  # under torchrun, rank 0 speaks for the run
        return 0
    m = info["metric"].upper()
    zero, adapted = info["zero_shot"]["rate"], info["adapted"]["rate"]
    print(f"test {m}: zero-shot {zero:.4f} -> adapted {adapted:.4f} ({100 * adapted / zero:.1f} % of zero-shot)")
    print(f"wrote {recipe.output_dir}/{recipe.name}/ (adapter/, report.md, curves.png, metrics.jsonl)")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from ..distributed import is_main_process
    from ..train import load_recipe, pretrain

    recipe = load_recipe(args.recipe, args.overrides)
    info = pretrain(recipe, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if not is_main_process():
        return 0
    first, last = info["first_dev"], info["last_dev"]
    print(
        f"dev loss {first['loss']:.4f} -> {last['loss']:.4f}, contrastive accuracy {first['accuracy']:.3f} -> "
        f"{last['accuracy']:.3f}, codebook perplexity {first['perplexity']:.1f} -> {last['perplexity']:.1f}"
    )
    print(f"wrote {info['output']} (name it as model.name in a CTC recipe), report.md, curves.png")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..train import list_recipes

    for name, path in sorted(list_recipes().items()):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        command = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{name:<16} {path}\n{'':<16} {command}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..train import load_recipe, recipe_to_yaml

    print(recipe_to_yaml(load_recipe(args.name, args.overrides)), end="")
    return 0
