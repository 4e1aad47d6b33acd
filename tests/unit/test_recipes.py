"""Recipes: every YAML in recipes/ validates; overrides and errors name the key."""

import re
from pathlib import Path

import pytest

from speechpeft.adapters import S2LoRAConfig
from speechpeft.cli import main
from speechpeft.train import RecipeError, list_recipes, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def all_recipe_files():
    return sorted(RECIPES.rglob("*.yaml"))


def makers(header):
    """Scripts named in a recipe's header that exist in the repository (they make its data)."""
    root = RECIPES.parent
    return [name for name in re.findall(r"[\w/]+\.py", header) if (root / name).is_file()]


def test_there_are_recipes_and_each_is_listed():
    files = all_recipe_files()
    assert files and {f.stem for f in files} <= set(list_recipes())


@pytest.mark.parametrize("path", all_recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_loads_validates_and_documents_its_command(path):
    recipe = load_recipe(str(path))
    text = path.read_text(encoding="utf-8")
    command = "pretrain" if text.startswith("# speechpeft pretrain --recipe") else "finetune"
    assert text.startswith(f"# speechpeft {command} --recipe {path.stem}")
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    for key in ("train", "dev") + (("test",) if command == "finetune" else ()):
        manifest = Path(getattr(recipe.data, key))
        assert manifest.is_absolute(), manifest
        # committed data, or data a committed script makes; then the header names that script
        assert manifest.is_file() or makers(header), manifest
    recipe.adapter.config()  # builds a valid adapter config


def test_child_zh_is_whisper_base_s2lora_on_the_demo_corpus():
    recipe = load_recipe("child_zh")
    assert recipe.model.name == "openai/whisper-base" and recipe.data.synthetic
    assert isinstance(recipe.adapter.config(), S2LoRAConfig)


def test_overrides_coerce_types():
    recipe = load_recipe("child_zh", ["train.lr=1e-3", "train.max_steps=7", "model.window_seconds=30"])
    assert (recipe.train.lr, recipe.train.max_steps, recipe.model.window_seconds) == (1e-3, 7, 30.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train.lr=abc"], "bad value for 'train.lr'"),
        (["train.lrr=1"], "unknown recipe key 'train.lrr'; nearest valid keys: train.lr"),
        (["train.max_steps=0"], "train.max_steps must be >= 1"),
        (["train.new_module_lr_scale=0"], "train.new_module_lr_scale must be > 0"),
        (["pretrain.mode=lora"], "pretrain.mode must be full or adapter"),
        (["pretrain.mask_time_prob=1.5"], "pretrain.mask_time_prob must be in (0, 1)"),
        (["pretrain.min_temperature=3"], "pretrain.min_temperature must be in (0, max_temperature]"),
        (["adapter.kind=dora"], "adapter.kind must be one of lora, master, s2lora, usat"),
        (["adapter.rnak=3"], "unknown recipe key 'adapter.rnak' for s2lora adapters; nearest valid keys: adapter.rank"),
        (["adapter.share=layer"], "adapter.share must be one of shape, stack, leaf, module"),
        (["adapter.lam_lr=0"], "adapter.lam_lr must be a positive multiplier"),
        (["adapter.l1_start=0.8", "adapter.l1_ramp=0.5"], "adapter.l1_start + l1_ramp must be <= 1"),
        (["adapter.keep_min_zero=1.5"], "adapter.keep_min_zero must be a fraction in [0, 1], got 1.5"),
        (["adapter.l1=0", "adapter.keep_min_zero=0.5"], "adapter.keep_min_zero needs l1 > 0"),
        (["lr"], "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(args, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("child_zh", args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_recipe_name_and_unknown_key_in_a_file(tmp_path, capsys):
    assert main(["finetune", "--recipe", "child_z"]) == 2
    assert capsys.readouterr().err.strip() == (
        "speechpeft: error: unknown recipe 'child_z'; available: "
        f"{', '.join(sorted(list_recipes()))}; did you mean child_zh?"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  warmup: 3\n", encoding="utf-8")
    with pytest.raises(
        RecipeError, match=r"bad.yaml: unknown recipe key 'train.warmup'; nearest valid keys: train.warmup_steps"
    ):
        load_recipe(str(bad))
    bad.write_text("name: x\ndata:\n  train: a.jsonl\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="data.dev is required"):
        load_recipe(str(bad))
    bad.write_text("name: [x\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="invalid YAML .*line 1"):
        load_recipe(str(bad))
