"""``tinymnist compare BASELINE_DIR NEW_DIR``: flag accuracy, gate and throughput regressions.

Accuracy, per step, on the seeds' last-3-epoch mean test accuracy:
- with at least 5 seeds on both sides, a one-sided Welch t-test: a regression when p < alpha (0.01) **and** the
  mean drops by at least the minimum effect (0.05 points), so that neither noise nor a trivial drop fails CI;
- with fewer, the old fixed rule: a regression when the mean drops by more than 0.10 points.
Each row says which rule judged it, with p where it can be computed.

Always a regression, whatever the statistics say: NEW's step fails its gate (``tinymnist.verdict.judge``: a run
not completed or short of epochs, a non-finite figure, a failing seed or mean); a baseline seed missing from
NEW (when NEW reuses the baseline's seeds; a disjoint, fresh sample of seeds must be at least as large); a step
missing from NEW. A recipe that differs from the baseline's gets its own row naming the changed fields.

Throughput: a drop of more than 10% in training images/s per step, or in any benchmark of the pytest-benchmark
``*.json`` files in the two folders, compared only between runs on the same machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymnist.recipes import short_name, sort_key
from tinymnist.results import config_key, load_benchmarks, load_results, machine_name
from tinymnist.shell import table_row
from tinymnist.stats import EPS, paired_drop_p, welch_drop_p
from tinymnist.summary import StepSummary, summarize

MIN_SEEDS_FOR_TEST = 5  # a t-test on fewer seeds a side has too little power to be worth its name


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01  # one-sided Welch t-test, >= MIN_SEEDS_FOR_TEST seeds a side
    min_effect: float = 0.05  # points of mean last-3 accuracy: smaller drops are never regressions
    max_acc_drop: float = 0.10  # points: the fixed rule, for fewer seeds
    max_throughput_drop: float = 0.10  # fraction


def _bench_throughput(folder: Path) -> tuple[dict[str, float], str]:
    """Per-second figure of every benchmark in the folder's pytest-benchmark JSON files, and their machine."""
    files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith("seed"))
    benches, machine = load_benchmarks(files, strict=False)
    figures = {
        b.get("fullname", b["name"]): (b.get("extra_info") or {}).get("batch", 1) / b["stats"]["median"]
        for b in benches
    }
    return figures, machine_name(machine)


@dataclass(frozen=True)
class AccuracyCheck:
    rule: str  # what judged it, for the row
    drop: float  # baseline mean minus NEW mean, in points (positive = worse)
    p: float  # one-sided Welch p-value; nan where it cannot be computed
    regression: bool


def accuracy_check(old: StepSummary, new: StepSummary, t: Thresholds) -> AccuracyCheck | None:
    """The accuracy judgement of one step; None when either side has no finished run. When NEW ran exactly the
    baseline's seeds (at least 5), the paired test on per-seed differences judges: measured on the same seeds
    on two CPU models (reports/population/rules.json), it holds false alarms under alpha with more power than
    Welch's. Otherwise Welch's test, or the fixed rule below 5 seeds."""
    a, b = old.last_k_by_seed, new.last_k_by_seed
    if not a or not b:
        return None
    if a.keys() == b.keys() and len(a) >= MIN_SEEDS_FOR_TEST:
        seeds = sorted(a)
        return paired_rule([a[s] for s in seeds], [b[s] for s in seeds], t)
    return accuracy_rule(list(a.values()), list(b.values()), t)


def paired_rule(a: Sequence[float], b: Sequence[float], t: Thresholds) -> AccuracyCheck:
    """The baseline's and NEW's figures of the same seeds, in one order: the one-sided paired t-test on their
    differences, with compare's alpha and minimum effect."""
    drop = sum(a) / len(a) - sum(b) / len(b)
    p = paired_drop_p(b, a)
    rule = f"paired t-test on {len(a)} shared seeds, p {_p(p)} (alpha {t.alpha:g}), min effect {t.min_effect:.2f}"
    return AccuracyCheck(rule, drop, p, p < t.alpha and drop >= t.min_effect - EPS)


def accuracy_rule(a: Sequence[float], b: Sequence[float], t: Thresholds) -> AccuracyCheck:
    """Baseline seeds' figures ``a`` against NEW's ``b`` (each seed's last-3 mean): the one accuracy rule."""
    drop = sum(a) / len(a) - sum(b) / len(b)
    p = welch_drop_p(b, a) if len(a) >= 2 and len(b) >= 2 else math.nan
    if len(a) >= MIN_SEEDS_FOR_TEST and len(b) >= MIN_SEEDS_FOR_TEST:
        rule = f"Welch t-test, p {_p(p)} (alpha {t.alpha:g}), min effect {t.min_effect:.2f}"
        bad = p < t.alpha and drop >= t.min_effect - EPS
    else:
        rule = f"fixed rule: drop <= {t.max_acc_drop:.2f} (n < {MIN_SEEDS_FOR_TEST}; p {_p(p)} for reference)"
        bad = drop > t.max_acc_drop + EPS
    return AccuracyCheck(rule, drop, p, bad or not math.isfinite(drop))


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}"


@dataclass(frozen=True)
class Row:
    """One compared figure: a row of the printed table, a JUnit test case, a line of the job summary."""

    recipe: str  # "4" for a built-in step, else the recipe's name; "bench" for benchmarks
    figure: str
    old: str
    new: str
    diff: str
    rule: str
    verdict: str  # "ok", "REGRESSION", or a note ("new step", "skipped: different machine")
    message: str = ""  # the regression's one line, when it is one
    p: float = math.nan
    effect: float = math.nan  # NEW minus baseline, in the figure's units

    @property
    def regression(self) -> bool:
        return self.verdict == "REGRESSION"


@dataclass(frozen=True)
class Comparison:
    rows: tuple[Row, ...]

    @property
    def regressions(self) -> list[str]:
        return [r.message for r in self.rows if r.regression]

    def lines(self) -> list[str]:
        """The markdown table ``compare`` prints (and ``--markdown`` writes)."""
        out = ["| step | figure | baseline | new | difference | rule | verdict |", "|---|---|---|---|---|---|---|"]
        out += [table_row(r.recipe, r.figure, r.old, r.new, r.diff, r.rule, r.verdict) for r in self.rows]
        return out


def compare(
    baseline: str | os.PathLike,
    new: str | os.PathLike,
    t: Thresholds = Thresholds(),
    keys: list[str] | None = None,
    on: str = "test",
    rule: str = "seeds",
    seeds: Sequence[int] | None = None,
) -> Comparison:
    """Every compared figure of NEW against the baseline; ``keys`` limits it to those recipes (``step4``),
    ``seeds`` to those seeds on both sides; ``on="val"`` compares the validation figures instead of the test
    figures."""
    old_r, new_r = load_results(baseline, on), load_results(new, on)
    if keys:
        old_r = {k: r for k, r in old_r.items() if k in keys}
        new_r = {k: r for k, r in new_r.items() if k in keys}
    limits = [f"--steps {', '.join(sorted(keys))}"] if keys else []
    if seeds:
        chosen = set(seeds)
        old_r = {k: kept for k, rs in old_r.items() if (kept := [r for r in rs if r.seed in chosen])}
        new_r = {k: kept for k, rs in new_r.items() if (kept := [r for r in rs if r.seed in chosen])}
        limits.append(f"seeds {sorted(chosen)}")
    of_seeds = f" of {' and '.join(limits)}" if limits else ""
    if not old_r:
        raise FileNotFoundError(f"{baseline}: no <recipe>/seed*.json results{of_seeds} to compare against")
    if not new_r:
        raise FileNotFoundError(f"{new}: no <recipe>/seed*.json results{of_seeds} to compare")
    from tinymnist.verdict import POPULATION_MIN_SEEDS

    few = {rs[0].label: len(rs) for rs in old_r.values() if len(rs) < POPULATION_MIN_SEEDS}
    if rule == "population" and few:  # no NEW can pass a rule its baseline could not: a usage error, not a
        # regression (the sixth independent sweep: a folder against itself gave 4 "regressions", exit 1)
        from tinymnist.errors import UsageError

        said = ", ".join(f"{label}: {n} seeds" for label, n in few.items())
        raise UsageError(
            f"--rule population judges populations of at least {POPULATION_MIN_SEEDS} seeds, and the baseline "
            f"{baseline} holds fewer ({said}); compare with --rule seeds"
        )
    rows: list[Row] = []
    split = "validation" if on == "val" else "test"  # what the figures are, in every row that shows them

    def row(key, figure, old, new, diff, bad, rule="", note="", message="", **figures):
        verdict = "REGRESSION" if bad else (note or "ok")
        rows.append(Row(short_name(key), figure, old, new, diff, rule, verdict, message if bad else "", **figures))

    def throughput(key, figure: str, old: float, new: float, same_machine: bool, what: str, unit: str) -> None:
        """Throughput is compared only between runs on the same machine; a drop beyond the limit regresses."""
        d = new / old - 1
        values = (f"{old:,.0f}{unit}", f"{new:,.0f}{unit}", f"{d:+.1%}")
        if not same_machine:
            row(key, figure, *values, False, note="skipped: different machine", effect=d)
            return
        bad = d < -t.max_throughput_drop
        message = f"{what} {new:,.0f} vs {old:,.0f}{unit} ({d:+.1%}, limit -{t.max_throughput_drop:.0%})"
        row(key, figure, *values, bad, f"drop <= {t.max_throughput_drop:.0%}", message=message, effect=d)

    for key in sorted(set(old_r) | set(new_r), key=sort_key):
        label = (new_r.get(key) or old_r[key])[0].label
        if key not in new_r:
            row(key, "runs", f"{len(old_r[key])} seeds", "missing", "", True, message=f"{label}: no results in {new}")
            continue
        old_seeds = sorted(r.seed for r in old_r.get(key, []))
        new_seeds = {r.seed for r in new_r[key]}
        # NEW reusing the baseline's seeds must hold all of them; a fresh sample must be as large.
        required = old_seeds if new_seeds & set(old_seeds) else []
        n = summarize(new_r[key], required, rule=rule)
        row(
            key,
            "gate",
            "",
            n.verdict.word if n.verdict.smoke else f"{n.verdict.word}, {n.verdict.rate_text}",
            "",
            not n.verdict.passed,
            f"tinymnist.verdict: {n.verdict.rule_text}",
            note=NOT_JUDGED if n.verdict.smoke else "",
            message="; ".join(n.verdict.reasons)
            + (
                f"; train them into {new} (--resume keeps what is there), or compare only the seeds it holds: "
                f"--seeds {' '.join(map(str, sorted(new_seeds)))}"
                if n.verdict.missing_seeds
                else ""
            ),
        )
        if old_seeds and not required:
            small = len(new_seeds) < len(old_seeds)
            row(
                key,
                "seeds",
                f"{len(old_seeds)}",
                f"{len(new_seeds)}, none of the baseline's",
                "",
                small,
                "a fresh sample must be at least as large",
                message=f"{label}: {len(new_seeds)} fresh seeds against the baseline's {len(old_seeds)}; a smaller "
                "sample cannot stand for it",
            )
        if key not in old_r:
            row(
                key,
                f"last-3 mean {split} acc",
                "missing",
                f"{n.last_k.mean:.2f}" if n.last_k else "n/a",
                "",
                False,
                note="new recipe",
            )
            continue
        o = summarize(old_r[key])
        configs = [sorted({config_key(r) for r in side}) for side in (old_r[key], new_r[key])]
        if configs[0] != configs[1]:  # e.g. a smoke run against a full baseline: the figures differ by design
            was, now = (", ".join(c) for c in configs)
            row(key, "configuration", was, now, "", False, note="changed: not the same experiment")
        changed = o.recipe.diff(n.recipe)
        if changed:
            row(key, "recipe", "", "", "; ".join(changed), False, note="changed: not the same experiment")
        acc = accuracy_check(o, n, t)
        if acc is not None and o.last_k is not None and n.last_k is not None:
            # Judged for smoke runs too: two runs of one configuration are a fair relative test (a bisect on a
            # subset relies on it). Runs of differing configurations are judged as well, on purpose: the row
            # above says the figures are not the same experiment's, and a drop then fails the comparison rather
            # than passing unjudged (a nightly whose configuration changed by mistake must not turn green).
            row(
                key,
                f"last-{n.k} mean {split} acc",
                f"{o.last_k.mean:.2f} (n={o.last_k.n})",
                f"{n.last_k.mean:.2f} (n={n.last_k.n})",
                f"{0.0 - acc.drop:+.2f}",
                acc.regression,
                acc.rule,
                # no drop between smoke runs is no pass either: never a green row or JUnit case (the sixth sweep)
                note=NOT_JUDGED if n.verdict.smoke else "",
                message=f"{label}: last-{n.k} mean {split} accuracy {n.last_k.mean:.2f} vs {o.last_k.mean:.2f} "
                f"({0.0 - acc.drop:+.2f}; {acc.rule})",
                p=acc.p,
                effect=0.0 - acc.drop,
            )
        if o.images_per_second and n.images_per_second:
            throughput(
                key,
                "train images/s",
                o.images_per_second.mean,
                n.images_per_second.mean,
                o.machines == n.machines,
                f"{label}: training throughput",
                " images/s",
            )

    old_b, old_m = _bench_throughput(Path(baseline))
    new_b, new_m = _bench_throughput(Path(new))
    for name in sorted(set(old_b) & set(new_b)):
        throughput("bench", name, old_b[name], new_b[name], old_m == new_m, f"benchmark {name}", "/s")
    return Comparison(tuple(rows))


NOT_JUDGED = "not judged (smoke run)"  # a gate row of smoke runs: neither ok nor a regression


@dataclass(frozen=True)
class Calibration:
    """How often ``accuracy_rule`` says "regression" when one half of a population's seeds is compared with the
    other half, shifted down by ``shift`` points: at 0 the false-alarm rate, above it the power."""

    n_seeds: int
    half: int
    splits: int
    seed: int
    alpha: float
    min_effect: float
    rates: dict[float, float]  # shift (points) -> fraction of splits flagged


def calibrate(
    values: Sequence[float],
    t: Thresholds = Thresholds(),
    shifts: Sequence[float] = (0.0, 0.05, 0.10),
    splits: int = 1000,
    seed: int = 0,
) -> Calibration:
    """Random halves of ``values`` (per-seed last-3 means of one step), ``splits`` times, from a seeded
    generator: the measured error rates of compare's rule on real seed-to-seed noise."""
    v = np.asarray(values, dtype=float)
    half = len(v) // 2
    if half < MIN_SEEDS_FOR_TEST:
        raise ValueError(
            f"{len(v)} seeds: calibration needs at least {2 * MIN_SEEDS_FOR_TEST}, so that each half "
            "is judged by the t-test"
        )
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(v)) for _ in range(splits)]
    rates = {}
    for shift in shifts:
        flagged = sum(
            accuracy_rule(list(v[o[:half]]), list(v[o[half : 2 * half]] - shift), t).regression for o in orders
        )
        rates[float(shift)] = flagged / splits
    return Calibration(len(v), half, splits, seed, t.alpha, t.min_effect, rates)


def calibration_report(
    runs, t: Thresholds, splits: int, seed: int, command: str
) -> tuple[dict, Calibration, StepSummary]:
    """``tinymnist calibrate``'s file: compare's measured error rates on one recipe's population, with the
    population's own statistics beside them."""
    from dataclasses import asdict

    s = summarize(runs)
    cal = calibrate(list(s.last_k_by_seed.values()), t, splits=splits, seed=seed)
    stats = {name: asdict(v) for name, v in (("last_k", s.last_k), ("final", s.final_test)) if v is not None}
    report = {
        "command": command,
        "step": s.step,
        "recipe": s.recipe.key,
        "seeds": list(s.seeds),
        "calibration": {**asdict(cal), "rates": {str(k): v for k, v in cal.rates.items()}},
        "pass_rate": None if s.verdict.smoke else asdict(s.pass_rate),  # a smoke population's is not judged
        "verdict": s.verdict.word,
        "stats": stats,
    }
    return report, cal, s
