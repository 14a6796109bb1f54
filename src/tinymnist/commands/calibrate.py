"""``tinymnist calibrate``: compare's measured false-alarm rate and power on a population's own seeds."""

from __future__ import annotations

from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK, UsageError
from tinymnist.shell import console


def add_parser(sub) -> None:
    k = sub.add_parser("calibrate", help="measured false-alarm rate and power of compare on a population's seeds")
    k.add_argument("results", help="results folder holding one recipe's population (e.g. reports/population)")
    k.add_argument("--step", type=_args.recipe_key, default="step4", help="the step or recipe to calibrate on (4)")
    k.add_argument("--splits", type=_args.positive_int, default=1000, help="random half-splits (1000)")
    k.add_argument("--seed", type=_args.integer, default=0, help="seed of the splits (0)")
    _args.add_welch(k, "compare's minimum effect, in points (0.05)")
    k.add_argument("--out", required=True, help="JSON file to write, e.g. reports/population/calibration.json")


def run(args) -> int:
    from tinymnist.compare import calibration_report
    from tinymnist.results import atomic_write_bytes, json_bytes, load_results

    if not Path(args.results).is_dir():
        raise UsageError(f"{args.results}: no such results folder")
    runs = load_results(args.results).get(args.step)
    if not runs:
        raise UsageError(f"{args.results}: no {args.step} results; train them first (tox -e population)")
    try:
        report, cal, s = calibration_report(
            runs,
            _args.thresholds(args),
            args.splits,
            args.seed,
            _args.command_line(args._argv),
        )
    except ValueError as e:
        raise UsageError(f"{args.results}: {e}") from None
    try:
        atomic_write_bytes(args.out, json_bytes(report), named=True)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot write ({e.strerror}); choose another --out") from None
    r = cal.rates
    print(
        f"{s.recipe.label}, {cal.n_seeds} seeds, {cal.splits} random splits into halves of {cal.half} (seed "
        f"{cal.seed}), alpha {cal.alpha:g}, min effect {cal.min_effect:.2f}:"
    )
    print(f"  false-alarm rate {100 * r[0.0]:.1f}%; power {100 * r[0.05]:.1f}% at -0.05, {100 * r[0.1]:.1f}% at -0.10")
    print(f"  gate pass rate {s.verdict.rate_text}; each seed's last-3 mean: {s.last_k.fmt() if s.last_k else 'n/a'}")
    print(f"wrote {console(args.out)}")
    return EXIT_OK
