"""Training: recipes, the loop, checkpoints."""

from .loop import finetune
from .pretrain import pretrain
from .recipe import Recipe, RecipeError, find_recipe, list_recipes, load_recipe, recipe_to_yaml

__all__ = [
    "Recipe",
    "RecipeError",
    "finetune",
    "pretrain",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "recipe_to_yaml",
]
