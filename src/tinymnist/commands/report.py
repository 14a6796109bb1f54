"""``tinymnist report``: REPORT.md and its plots from a results folder."""

from __future__ import annotations

from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK, UsageError
from tinymnist.shell import console


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="write REPORT.md and plots from a results folder")
    r.add_argument("results", help="folder with <recipe>/seed*.json (e.g. results/)")
    r.add_argument("--out", type=_args.writable_dir, required=True, help="folder for REPORT.md and its images")
    r.add_argument("--bench", nargs="*", default=[], help="pytest-benchmark JSON files to add as tables")
    _args.add_judged_on(r)
    _args.add_rule(r)


def run(args) -> int:
    from tinymnist.errors import require

    require("matplotlib", "report")
    from tinymnist.report import build_report

    for p in [args.results, *args.bench]:
        if not Path(p).exists():
            raise UsageError(f"{p}: no such file or folder")
    try:
        command = _args.command_line(args._argv)
        path = build_report(args.results, args.out, args.bench, args.on, args.rule, command)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {console(path)}")
    return EXIT_OK
