"""``tinymnist models``: built-in and plugin models with their parameter counts."""

from __future__ import annotations

import sys

from tinymnist.commands import _args


def add_parser(sub) -> None:
    sub.add_parser("models", help="list built-in and plugin models with their parameter counts")


def run(args) -> int:
    from tinymnist.models import count_params, create_model
    from tinymnist.models.registry import builtin_models, plugin_entry_points, shadowing_plugins

    for name in builtin_models():
        print(f"{name:16s} {count_params(create_model(name)):>9,d}  built-in")
    for ep in shadowing_plugins():
        print(f"ignored: plugin model {ep.name!r} ({ep.value}) has a built-in's name", file=sys.stderr)
    return _args.list_plugins(
        "models",
        "plugin model(s) that cannot be built",
        plugin_entry_points(),
        lambda name, ep: f"{name:16s} {count_params(create_model(name)):>9,d}  plugin {ep.value}",
        f"{'-':>9s}",
    )
