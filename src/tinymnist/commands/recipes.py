"""``tinymnist recipes``: built-in and plugin recipes, with their model, parameter count and gate."""

from __future__ import annotations

import sys

from tinymnist.errors import EXIT_OK, EXIT_USAGE, UserError


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

    def line(name: str, recipe, where: str) -> None:
        """``name`` is what --recipe takes; a recipe whose folder differs says where its results go."""
        params = count_params(create_model(recipe.model, **recipe.model_kwargs))
        folder = "" if recipe.key == name else f", results in OUT/{recipe.key}/"
        print(f"{name:16s} {recipe.model:10s} {params:>9,d}  {where}{folder}; gate: {_gate(recipe)}")

    for key, recipe in BUILTIN_KEYS.items():
        line(key, recipe, "built-in")
    # A broken plugin is named on its own line; the others still list; the command then fails, naming it.
    broken = []
    for name, ep in sorted(plugin_recipes().items()):
        try:
            line(name, validate(resolve_recipe(name)), f"plugin {ep.value}")  # as train would refuse it
        except UserError as e:  # a recipe that cannot load, or whose model cannot be built
            print(f"{name:16s} {'-':10s} {'-':>9s}  plugin {ep.value}: {e}")
            broken.append(f"{name} ({ep.value})")
    if broken:
        print(
            f"tinymnist recipes: error: plugin recipe(s) that cannot be loaded: {', '.join(broken)}; fix or "
            "uninstall the package that provides them",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK
