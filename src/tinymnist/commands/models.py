"""``tinymnist models``: built-in and plugin models with their parameter counts."""

from __future__ import annotations

import sys

from tinymnist.errors import EXIT_OK, EXIT_USAGE


def add_parser(sub) -> None:
    sub.add_parser("models", help="list built-in and plugin models with their parameter counts")


def run(args) -> int:
    from tinymnist.models import count_params, create_model
    from tinymnist.models.registry import ModelError, builtin_models, plugin_entry_points, shadowing_plugins

    for name in builtin_models():
        print(f"{name:16s} {count_params(create_model(name)):>9,d}  built-in")
    # A broken plugin is named on its own line; the others still list; the command then fails, naming it.
    broken = []
    for name, ep in sorted(plugin_entry_points().items()):
        try:
            print(f"{name:16s} {count_params(create_model(name)):>9,d}  plugin {ep.value}")
        except ModelError as e:
            print(f"{name:16s} {'-':>9s}  plugin {ep.value}: {e}")
            broken.append(f"{name} ({ep.value})")
    for ep in shadowing_plugins():
        print(f"ignored: plugin model {ep.name!r} ({ep.value}) has a built-in's name", file=sys.stderr)
    if broken:
        print(
            f"tinymnist models: error: plugin model(s) that cannot be built: {', '.join(broken)}; fix or uninstall "
            "the package that provides them",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK
