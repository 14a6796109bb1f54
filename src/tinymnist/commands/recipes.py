"""``tinymnist recipes``: built-in and plugin recipes, with their model, parameter count and gate."""

from __future__ import annotations

from tinymnist.commands import _args


def add_parser(sub) -> None:
    sub.add_parser("recipes", help="list built-in and plugin recipes with their model, parameters and gate")


def _gate(recipe) -> str:
    from dataclasses import fields

    e = recipe.expect
    said = [
        f"{f.name}={getattr(e, f.name)}" for f in fields(e) if f.name != "last_k" and getattr(e, f.name) is not None
    ]
    if e.min_last_k is not None:
        said.append(f"last_k={e.last_k}")
    return ", ".join(said) or "none"


def run(args) -> int:
    from tinymnist.models import count_params, create_model
    from tinymnist.recipes import BUILTIN_KEYS, plugin_recipes, resolve_recipe, validate

    def line(name: str, recipe, where: str) -> str:
        """``name`` is what --recipe takes; a recipe whose folder differs says where its results go."""
        params = count_params(create_model(recipe.model, **recipe.model_kwargs))
        folder = "" if recipe.key == name else f", results in OUT/{recipe.key}/"
        return f"{name:16s} {recipe.model:10s} {params:>9,d}  {where}{folder}; gate: {_gate(recipe)}"

    for key, recipe in BUILTIN_KEYS.items():
        print(line(key, recipe, "built-in"))
    return _args.list_plugins(
        "recipes",
        "plugin recipe(s) that cannot be loaded",
        plugin_recipes(),
        # validated as train would refuse it
        lambda name, ep: line(name, validate(resolve_recipe(name)), f"plugin {ep.value}"),
        f"{'-':10s} {'-':>9s}",
    )
