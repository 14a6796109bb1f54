"""One module per command (asv's and pip's ``commands/``). Each has ``add_parser(subparsers)`` and
``run(args) -> int``; the command line only dispatches to them. Nothing heavy is imported at module level, so
``tinymnist --help`` and a Ctrl-C during start-up stay cheap and clean."""

NAMES = (
    "train",
    "models",
    "recipes",
    "export",
    "evaluate",
    "report",
    "compare",
    "calibrate",
    "log",
    "sweep",
    "history",
    "bisect",
)
