"""``tinymnist log``: the experiment log (markdown) from a folder of experiment result folders."""

from __future__ import annotations

from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK, UsageError
from tinymnist.shell import console


def add_parser(sub) -> None:
    g = sub.add_parser("log", help="experiment log (markdown) from a folder of experiment result folders")
    g.add_argument("experiments", help="folder whose sub-folders are --out folders of `train` runs")
    g.add_argument("--out", required=True, help="markdown file to write, e.g. reports/experiments.md")


def run(args) -> int:
    from tinymnist.experiments import build_log

    if not Path(args.experiments).is_dir():
        raise UsageError(f"{args.experiments}: no such folder")
    try:
        path = build_log(args.experiments, args.out, _args.command_line(args._argv))
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot write ({e.strerror}); choose another --out") from None
    print(f"wrote {console(path)}")
    return EXIT_OK
