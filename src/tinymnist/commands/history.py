"""``tinymnist history add|show``: file results by commit and machine; the accuracy history across commits."""

from __future__ import annotations

from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK, UsageError
from tinymnist.shell import console


def add_parser(sub) -> None:
    h = sub.add_parser("history", help="a results store by commit and machine, and its history across commits")
    hs = h.add_subparsers(dest="history_command", required=True, metavar="{add,show}")
    a = hs.add_parser("add", help="file a results folder in the store, under each run's commit and machine")
    a.add_argument("results", help="results folder (<recipe>/seed*.json)")
    a.add_argument("--store", type=_args.writable_dir, required=True, help="the store folder")
    s = hs.add_parser("show", help="write HISTORY.md, HISTORY.json and one plot per recipe from the store")
    s.add_argument("--store", required=True, help="the store folder")
    s.add_argument("--out", type=_args.writable_dir, required=True, help="folder for HISTORY.md and its plots")
    s.add_argument("--steps", type=_args.recipe_key, nargs="+", help="only these recipes (step numbers or names)")
    s.add_argument("--repo", default=".", help="the git checkout whose first-parent history orders the commits")
    _args.add_rule(s)


def run(args) -> int:
    from tinymnist import history

    if args.history_command == "add":
        if not Path(args.results).is_dir():
            raise UsageError(f"{args.results}: no such results folder")
        added = history.add(args.results, args.store)
        for why in added.skipped:
            print(f"skipped {why}")
        print(f"{args.store}: {len(added.new)} run(s) added, {len(added.unchanged)} already there")
        return EXIT_OK
    from tinymnist.errors import require

    require("matplotlib", "history show")
    from tinymnist.report import write_history
    from tinymnist.results import refuse_non_files

    if not Path(args.store).is_dir():
        raise UsageError(f"--store {args.store}: no such folder")
    series = history.history(args.store, args.repo, args.steps, rule=args.rule)
    if not series:
        which = f" of {', '.join(args.steps)}" if args.steps else ""
        raise UsageError(f"{args.store}: no stored runs{which} on this history (the first-parent line of {args.repo})")
    command = _args.command_line(args._argv)
    data = history.to_json(series).encode()  # built first: nothing is written if it cannot be
    pngs = [f"history-{s.key}.png" for s in series] + [f"history-{s.key}-{s.config}.png" for s in series]
    refuse_non_files([Path(args.out) / n for n in ("HISTORY.md", "HISTORY.json", *pngs)])  # nor some of them
    also = [(Path(args.out) / "HISTORY.json", data)]
    path = write_history(series, args.out, command, history.off_line(args.store, args.repo), also)
    for s in series:
        for p in s.regressions:
            print(f"{s.key} ({s.config}): regression at {p.commit.short} {console(p.commit.subject)}")
    print(f"wrote {console(path)}")
    return EXIT_OK
