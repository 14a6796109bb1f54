"""``tinymnist compare``: two results folders; exit 1 on a regression."""

from __future__ import annotations

import sys
from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_GATE, EXIT_OK, UsageError
from tinymnist.shell import code_span, console, shell_join


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="compare two results folders; exit 1 on a regression")
    c.add_argument("baseline", help="results folder of the reference run (e.g. reports/baseline)")
    c.add_argument("new", help="results folder of the run under test")
    _args.add_welch(c, "smallest drop of the mean last-3 accuracy, in points, that counts as a regression (0.05)")
    c.add_argument(
        "--max-acc-drop",
        type=_args.non_negative,
        default=0.10,
        help="fewer than 5 seeds a side: points of mean last-3 accuracy that may be lost (0.10)",
    )
    c.add_argument("--max-throughput-drop", type=_args.fraction, default=0.10, help="fraction of throughput (0.10)")
    c.add_argument(
        "--steps",
        type=_args.recipe_key,
        nargs="+",
        help="compare only these recipes: step numbers or recipe names (default: all found)",
    )
    c.add_argument(
        "--seeds",
        type=_args.seeds,
        nargs="+",
        help="compare only these seeds on both sides, e.g. 0 or 0-4 (default: every seed; NEW must then hold "
        "all of the baseline's, or none of them)",
    )
    _args.add_judged_on(c)
    _args.add_rule(c)
    c.add_argument(
        "--junit-xml", type=_args.writable_file, metavar="FILE", help="also write the compared rows as JUnit XML"
    )
    c.add_argument(
        "--markdown",
        type=_args.appendable_file,
        metavar="FILE",
        help="also write the table as markdown (e.g. $GITHUB_STEP_SUMMARY)",
    )


def run(args) -> int:
    from tinymnist import ci
    from tinymnist.compare import NOT_JUDGED, compare

    _args.distinct_outputs(args)
    for p in (args.baseline, args.new):
        if not Path(p).is_dir():
            raise UsageError(f"{p}: no such results folder")
    try:
        result = compare(
            args.baseline,
            args.new,
            _args.thresholds(args, max_acc_drop=args.max_acc_drop, max_throughput_drop=args.max_throughput_drop),
            args.steps,
            args.on,
            args.rule,
            _args.seed_list(args.seeds) if args.seeds else None,
        )
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    lines, regressions = result.lines(), result.regressions
    print("\n".join(lines))
    for reg in regressions:
        print(f"REGRESSION: {reg}", file=sys.stderr)
    summary = f"{len(regressions)} regression(s)" if regressions else "no regression"
    if any(r.verdict == NOT_JUDGED for r in result.rows):  # never green where nothing was judged (the 7th sweep)
        summary += f"; {NOT_JUDGED}: nothing was judged against the target"
    print(summary)
    if args.junit_xml:
        ci.write_junit(args.junit_xml, "tinymnist compare", ci.compare_cases(result))
        print(f"wrote {console(args.junit_xml)}")
    if args.markdown:
        new, baseline = (code_span(shell_join([p])) for p in (args.new, args.baseline))
        title = f"## tinymnist compare: {new} against {baseline}"
        ci.write_markdown(args.markdown, "\n".join([title, "", *lines, "", f"**{summary}**", ""]))
        print(f"wrote {console(args.markdown)}")
    return EXIT_GATE if regressions else EXIT_OK
