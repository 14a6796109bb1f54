"""``tinymnist report RESULTS_DIR --out DIR``: REPORT.md and its PNGs, built from results JSON only.

It only renders: every figure comes from ``tinymnist.summary.StepSummary`` (statistics from ``tinymnist.stats``,
the verdict from ``tinymnist.verdict.judge``); nothing in the output is typed by hand.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from tinymnist.recipes import Recipe, label_of, short_name
from tinymnist.results import (
    RunResult,
    atomic_write_pair,
    load_benchmarks,
    load_results,
    machine_name,
    refuse_non_files,
    text_bytes,
)
from tinymnist.shell import Markdown, as_text, code_span, shell_join, table_row
from tinymnist.stats import OLYMPIC_MIN_N, SeedStats
from tinymnist.summary import TARGET, StepSummary, summarize

OVERFIT_GAP = 0.3  # train minus test, in points, above which a step is called over-fitting


def analysis(s: StepSummary) -> list[str]:
    """Sentences derived from the numbers of one step."""
    lines = []
    budget = s.recipe.expect.max_params
    if budget:
        lines.append(f"{s.params:,} parameters: {'within' if s.params < budget else 'OVER'} the {budget:,} budget.")
    else:
        lines.append(f"{s.params:,} parameters: {s.params / 10_000:.1f}x the 10,000 budget of the mission.")
    if s.per_epoch and s.best_at and s.final_test:
        last = s.per_epoch[-1]
        if last.gap > OVERFIT_GAP:
            lines.append(
                f"Over-fits: train {last.train:.2f} vs {s.split} {last.test:.2f} at epoch "
                f"{last.epoch} (gap {last.gap:+.2f}, mean of {len(s.seeds)} seeds)."
            )
        elif last.gap < 0:
            lines.append(
                f"No over-fitting: {s.split} {last.test:.2f} is above train {last.train:.2f} at epoch "
                f"{last.epoch} (train is measured under augmentation/dropout; gap {last.gap:+.2f})."
            )
        else:
            lines.append(
                f"Little over-fitting: train {last.train:.2f} vs {s.split} {last.test:.2f} at epoch "
                f"{last.epoch} (gap {last.gap:+.2f})."
            )
        acc, ep, seed = s.best_at
        lines.append(
            f"Best single epoch {acc:.2f} (seed {seed}, epoch {ep}); the final epoch averages "
            f"{s.final_test.mean:.2f}, min {s.final_test.min:.2f}."
        )
        n = len(s.at_target)
        lines.append(f"≥ {TARGET} in each of the last {s.k} epochs for {s.last_k_at_target} of {n} seeds.")
        stable = [v for v in s.stable_from.values() if v is not None]
        if stable:
            lines.append(
                f"Stays ≥ {TARGET} from epoch {min(stable)} at best, {max(stable)} at worst, for "
                f"{len(stable)} of {n} seeds."
            )
    ref = s.recipe.seed_reference
    if ref and s.best_test and s.final_test and s.split == "test":  # the write-up's figures are on test
        lines.append(
            f"Seed write-up: best test {ref['best_test']:.2f}; ours {s.best_test.mean:.2f} mean of "
            f"best epochs ({s.best_test.mean - ref['best_test']:+.2f}), "
            f"{s.final_test.mean:.2f} at the final epoch."
        )
    if s.verdict.smoke:
        lines.append(f"Gate: {s.verdict.word}: a training subset or cut-short epochs say nothing about accuracy.")
    else:
        lines.append(
            f"Gate: {s.verdict.word}, {s.verdict.rule_text} ({s.verdict.rate_text} pass their own checks"
            + ("" if s.verdict.passed or s.verdict.failed_seeds else "; the step-level check fails")
            + ")."
        )
    return lines


def _fmt(sp: SeedStats | None, digits: int = 2) -> str:
    if sp is None:
        return "n/a | | | |"
    sd = "n/a" if math.isnan(sp.sd) else f"{sp.sd:.{digits}f}"
    return f"{sp.mean:.{digits}f} | {sp.min:.{digits}f} | {sp.max:.{digits}f} | {sd}"


def _stat_row(name: str, sp: SeedStats | None) -> str:
    if sp is None:
        return f"| {name} | 0 | | | | |"
    sd = "n/a" if math.isnan(sp.sd) else f"{sp.sd:.3f}"
    olympic = "" if sp.olympic is None else f"{sp.olympic:.3f}"
    return f"| {name} | {sp.n} | {sp.mean:.3f} | {sd} | {sp.ci(3)} | {olympic} |"


def _augmentation(r: Recipe) -> str:
    parts = (
        ([f"rotation ±{r.max_degrees}°"] if r.max_degrees else [])
        + ([f"shift ±{r.max_shift * 28:.1f} px"] if r.max_shift else [])
        + ([f"zoom ×{1 - r.max_scale:g}-{1 + r.max_scale:g}"] if r.max_scale else [])
    )
    return ", ".join(parts) or "none"


def _options(r: Recipe) -> str:
    """The recipe's other settings where they differ from the defaults (EMA, precision, ...)."""
    changed = [
        f"{k} {getattr(r, k)}"
        for k in ("nesterov", "weight_decay", "label_smoothing", "ema", "precision", "compile")
        if getattr(r, k) != Recipe.__dataclass_fields__[k].default
    ]
    return f"; {', '.join(changed)}" if changed else ""


def _step_section(s: StepSummary) -> list[str]:
    r: Recipe = s.recipe
    e = r.expect
    target = []
    if e.max_params:
        target.append(f"fewer than {e.max_params:,} parameters")
    if e.min_best_test is not None:
        target.append(f"best {s.split} accuracy ≥ {e.min_best_test:.2f}")
    if e.min_last_k is not None:
        target.append(f"{s.split} accuracy ≥ {e.min_last_k:.2f} in each of the last {e.last_k} epochs")
    if e.min_final is not None:
        target.append(f"final {s.split} accuracy ≥ {e.min_final:.2f}")
    if e.min_mean_final is not None:
        target.append(f"mean final {s.split} accuracy ≥ {e.min_mean_final:.2f}")
    sched = r.schedule if r.schedule == "constant" else f"{r.schedule} (peak {r.lr})"
    out = [
        f"## {r.label.replace('step ', 'Step ', 1) if r.label.startswith('step ') else r.label}: {as_text(r.name)}",
        "",
        f"**Target.** {'; '.join(target)}; for each of seeds {list(r.seeds)}, in {r.epochs} epochs.",
        f"Recipe: model {code_span(r.model)}{f' {r.model_kwargs}' if r.model_kwargs else ''}, batch {r.batch_size}, "
        f"{r.optimizer} lr {r.lr} "
        f"momentum {r.momentum}, schedule {sched}, augmentation {_augmentation(r)}{_options(r)}.",
        "",
        f"**Result** (seeds {list(s.seeds)}, {s.epochs} epochs; mean | min | max | SD over seeds):",
        "",
        "| figure | mean | min | max | SD |",
        "|---|---|---|---|---|",
        f"| parameters | {s.params:,} | | | |",
        f"| best train accuracy | {_fmt(s.best_train)} |",
        f"| best {s.split} accuracy | {_fmt(s.best_test)} |",
        f"| final-epoch {s.split} accuracy | {_fmt(s.final_test)} |",
        f"| mean {s.split} accuracy, last {s.k} epochs | {_fmt(s.last_k)} |",
        f"| training seconds per epoch | {_fmt(s.epoch_seconds, 1)} |",
        f"| evaluation seconds per epoch | {_fmt(s.eval_seconds, 2)} |",
        f"| training images per second | {_fmt(s.images_per_second, 0)} |",
        f"| wall seconds per run | {_fmt(s.wall_seconds, 0)} |",
        "",
        f"**Seed statistics** (n seeds; 95% CI of the mean from Student's t; olympic mean drops the best and "
        f"the worst seed, from n = {OLYMPIC_MIN_N}). Gate pass rate: **{s.verdict.rate_text}** (Wilson interval).",
        "",
        "| figure | n | mean | SD | 95% CI | olympic mean |",
        "|---|---|---|---|---|---|",
        _stat_row(f"last-{s.k} mean {s.split} accuracy", s.last_k),
        _stat_row(f"final-epoch {s.split} accuracy", s.final_test),
        _stat_row(f"best {s.split} accuracy", s.best_test),
        "",
        as_text(f"Machine: {'; '.join(s.machines)}; torch {', '.join(s.torch)}; commit {', '.join(s.git_sha)}."),
        "",
    ]
    ref = r.seed_reference
    if ref and s.best_test and s.best_train and s.split == "test":
        out += [
            "| vs the seed write-up | seed | ours (mean) | difference |",
            "|---|---|---|---|",
            f"| parameters | {ref['params']:,} | {s.params:,} | {s.params - ref['params']:+,} |",
            f"| best train | {ref['best_train']:.2f} | {s.best_train.mean:.2f} | "
            f"{s.best_train.mean - ref['best_train']:+.2f} |",
            f"| best test | {ref['best_test']:.2f} | {s.best_test.mean:.2f} | "
            f"{s.best_test.mean - ref['best_test']:+.2f} |",
            "",
        ]
    out += [
        f"<details><summary>Per epoch (mean over seeds): train, {s.split}, gap; epochs at or above 99.4 per seed"
        "</summary>",
        "",
        f"| epoch | train | {s.split} | train − {s.split} |",
        "|---|---|---|---|",
    ]
    out += [f"| {p.epoch} | {p.train:.2f} | {p.test:.2f} | {p.gap:+.2f} |" for p in s.per_epoch]
    out += [""] + [f"- seed {seed}: {eps if eps else 'none'}" for seed, eps in s.at_target.items()]
    out += ["", "</details>", "", "**Analysis.**", ""] + [f"- {line}" for line in analysis(s)]
    if s.verdict.reasons:
        out += [""] + [f"- gate failure: {x}" for x in s.verdict.reasons]
    return out + [""]


def _benchmark_section(bench: list[dict]) -> list[str]:
    train = [b for b in bench if (b.get("extra_info") or {}).get("kind") == "train"]
    infer = [b for b in bench if (b.get("extra_info") or {}).get("kind") == "inference"]
    out = ["## Benchmarks", ""]
    if train:
        out += [
            "| training | step | device | pipeline | batch | images/s (median) | rounds |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in sorted(train, key=lambda b: (b["extra_info"]["step"], b["extra_info"]["device"], b["name"])):
            x = b["extra_info"]
            out.append(
                table_row(
                    b["name"],
                    x["step"],
                    x["device"],
                    x["pipeline"],
                    x["batch"],
                    f"{x['batch'] / b['stats']['median']:,.0f}",
                    b["stats"]["rounds"],
                )
            )
        out.append("")
    if infer:
        out += ["| inference | engine | batch | threads | median ms | images/s |", "|---|---|---|---|---|---|"]
        for b in sorted(infer, key=lambda b: (b["extra_info"]["batch"], b["extra_info"]["engine"])):
            x = b["extra_info"]
            out.append(
                table_row(
                    b["name"],
                    x["engine"],
                    x["batch"],
                    x.get("threads", ""),
                    f"{b['stats']['median'] * 1e3:.3f}",
                    f"{x['batch'] / b['stats']['median']:,.0f}",
                )
            )
        out.append("")
    return out


def accuracy_axis(runs: Sequence[RunResult]) -> tuple[float, float]:
    """98-100 shows full runs' last tenths (their first epochs may start below it); when the last epochs are
    below 98 (a smoke run) the axis reaches down to hold them, never an empty chart (issue 32)."""
    # A diverged run may record a NaN or infinite figure: it is judged, not drawn to scale.
    low = min((e.test_acc for r in runs for e in r.epochs[-3:] if math.isfinite(e.test_acc)), default=98.0)
    return (98.0 if low >= 98 else max(0.0, math.floor(low) - 1.0)), 100.0


def _val_images(results: dict) -> str:
    return " or ".join(f"{n:,}" for n in sorted({r.val_images or 0 for rs in results.values() for r in rs}))


def _images_used(results: dict) -> str:
    """What the runs were measured on, as they recorded it: "on the 10,000 MNIST test images", or a subset's
    own counts (issue 32: a 2,000-image run's report said 10,000)."""
    runs = [r for rs in results.values() for r in rs]
    tests = sorted({r.test_images for r in runs})
    trains = sorted({r.train_images for r in runs})
    both = " or ".join
    if tests == [10_000]:
        said = "on the 10,000 MNIST test images"
    else:
        said = f"on {both(f'{n:,}' for n in tests)} of the 10,000 MNIST test images"
    return f"{said}, after training on {both(f'{n:,}' for n in trains)} training images an epoch"


PLOTS = ("accuracy.png", "loss.png", "lr.png", "params_vs_accuracy.png", "seeds.png")  # what plots() may write


def plots(summaries: dict[str, StepSummary], results: dict[str, list[RunResult]], out: Path, staged: list) -> list[str]:
    """The report's plots, rendered into ``staged`` (path, PNG bytes) for the caller to write with its markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(results)  # in load_results' order: built-in steps first
    names = []

    def save(fig, name):
        _save_png(fig, out / name, staged)
        names.append(name)

    cols = min(len(steps), 2)
    rows = -(-len(steps) // cols)
    for what, fname, ylabel in (("acc", "accuracy.png", "accuracy (%)"), ("loss", "loss.png", "loss")):
        fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.8 * rows), squeeze=False, layout="constrained")
        for ax, step in zip(axes.flat, steps, strict=False):  # more axes than steps
            for i, r in enumerate(results[step]):
                ep = [e.epoch for e in r.epochs]
                c = f"C{i}"
                tr = [e.train_acc if what == "acc" else e.train_loss for e in r.epochs]
                te = [e.test_acc if what == "acc" else e.test_loss for e in r.epochs]
                ax.plot(ep, te, "-o", ms=3, color=c, label=f"{summaries[step].split}, seed {r.seed}")
                ax.plot(ep, tr, "--", color=c, alpha=0.7, label=f"train, seed {r.seed}")
            if what == "acc":
                ax.axhline(TARGET, color="k", lw=1, ls=":", label="99.4")
                ax.set_ylim(*accuracy_axis(results[step]))
            else:
                ax.set_yscale("log")
            ax.set_title(f"{summaries[step].recipe.label}: {summaries[step].params:,} params")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(steps) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="lower right" if what == "acc" else "upper right")
        save(fig, fname)

    sched = [s for s in steps if summaries[s].recipe.schedule != "constant"]
    if sched:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        for s in sched:
            r = results[s][0]
            ax.plot([e.epoch for e in r.epochs], [e.lr for e in r.epochs], "-o", ms=3, label=summaries[s].recipe.label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate (end of epoch)")
        ax.set_title("learning-rate schedule")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "lr.png")

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, s in enumerate(steps):
        sm = summaries[s]
        if sm.final_test is None:
            continue
        f = sm.final_test
        # Clamped at 0: the mean of equal seeds can land an ulp below their minimum, and matplotlib refuses
        # a negative error bar (seeds 0-2 all at 99.6 crashed the report).
        ax.errorbar(
            [sm.params],
            [f.mean],
            yerr=[[max(0.0, f.mean - f.min)], [max(0.0, f.max - f.mean)]],
            fmt="o",
            capsize=4,
            label=sm.recipe.label,
        )
        # Steps that share a network sit on one vertical line: alternate the labels above and below.
        ax.annotate(
            sm.recipe.label,
            (sm.params, f.mean),
            textcoords="offset points",
            xytext=(6, -12 if i % 2 else 4),
            fontsize=8,
        )
    ax.axhline(TARGET, color="k", lw=1, ls=":")
    ax.axvline(10_000, color="r", lw=1, ls=":")
    ax.annotate(
        "10,000-parameter budget",
        (10_000, ax.get_ylim()[0]),
        textcoords="offset points",
        xytext=(3, 3),
        fontsize=7,
        color="r",
    )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"final-epoch {summaries[steps[0]].split} accuracy (%), mean and range")
    ax.set_title("parameters vs accuracy")
    ax.grid(alpha=0.3)
    save(fig, "params_vs_accuracy.png")

    # Every seed's last-k mean, one column per step, against each step's own threshold: how far the seeds
    # spread, and how close the worst of them comes to the line, is what a mean alone hides.
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(steps), 3.6))
    for i, s in enumerate(steps):
        sm = summaries[s]
        values = list(sm.last_k_by_seed.values())
        if not values:
            continue
        jitter = [(j % 7 - 3) * 0.04 for j in range(len(values))]
        ax.scatter([i + d for d in jitter], values, s=14, color=f"C{i}", zorder=3)
        if sm.last_k is not None:
            ax.hlines(sm.last_k.mean, i - 0.3, i + 0.3, color="k", lw=1.5)
        line = sm.recipe.expect.min_last_k
        if line is not None:
            ax.hlines(line, i - 0.4, i + 0.4, color="r", lw=1, ls="--")
    ax.set_xticks(range(len(steps)), [summaries[s].recipe.label for s in steps])
    ax.set_ylabel(f"mean {summaries[steps[0]].split} accuracy, last {summaries[steps[0]].k} epochs (%)")
    ax.set_title("every seed (dots), the mean (black), the gate's threshold (red)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    save(fig, "seeds.png")
    return names


def build_report(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    bench_paths: Sequence[str | os.PathLike] = (),
    on: str = "test",
    rule: str = "seeds",
    command: str | None = None,
) -> Path:
    """REPORT.md and its plots in ``out_dir``; ``command``, the shell-quoted command line that made it (the
    command's own words, so that it pastes back), defaults to the plain form for callers without one."""
    results = load_results(results_dir, on)
    if not results:
        raise FileNotFoundError(f"{results_dir}: no <recipe>/seed*.json results; run tinymnist train first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {s: summarize(rs, rule=rule) for s, rs in results.items()}
    # before the plots: never new plots beside an old report
    refuse_non_files([out / n for n in ("REPORT.md", *PLOTS)])
    staged: list = []
    images = plots(summaries, results, out, staged)
    judged = (
        _images_used(results)
        if on == "test"
        else f"on each run's validation split ({_val_images(results)} images held out of the training set)"
    )
    split = "test" if on == "test" else "validation"
    if command is None:
        words = ["tinymnist", "report", os.fspath(results_dir), "--out", os.fspath(out_dir)]
        words += ([] if on == "test" else ["--on", "val"]) + (["--rule", rule] if rule != "seeds" else [])
        command = shell_join(words)
    lines = [
        "# tinymnist report" + ("" if on == "test" else " (judged on validation)"),
        "",
        f"Generated by {code_span(command)} from "
        f"{sum(map(len, results.values()))} results files; do not edit by hand. Accuracies in percent {judged}; "
        "SD is the sample standard deviation over seeds.",
        "",
        f"| step | change | params | gate | seeds passing (95% CI) | best {split} (mean) | final {split} mean "
        f"| final {split} min | last-3 mean (95% CI) | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, sm in summaries.items():
        if sm.final_test is None or sm.best_test is None or sm.last_k is None or sm.epoch_seconds is None:
            lines.append(
                table_row(
                    short_name(s), sm.recipe.name, f"{sm.params:,}", sm.verdict.word, sm.verdict.rate_text, *[""] * 5
                )
            )
            continue
        lines.append(
            table_row(
                short_name(s),
                sm.recipe.name,
                f"{sm.params:,}",
                sm.verdict.word,
                sm.verdict.rate_text,
                f"{sm.best_test.mean:.2f}",
                f"{sm.final_test.mean:.2f}",
                f"{sm.final_test.min:.2f}",
                f"{sm.last_k.mean:.2f} {sm.last_k.ci()}",
                f"{sm.epoch_seconds.mean:.1f}",
            )
        )
    lines.append("")
    for name in images:
        lines += [f"![{name[:-4]}]({name})", ""]
    for sm in summaries.values():
        lines += _step_section(sm)
    if bench_paths:
        bench, machine = load_benchmarks(bench_paths)
        lines += _benchmark_section(bench)
        if machine:
            lines += [f"Benchmark machine: {machine_name(machine)}, python {machine.get('python_version', '')}.", ""]
    path = out / "REPORT.md"
    atomic_write_pair([*staged, (path, text_bytes("\n".join(lines)))])
    return path


# --- the history across commits (tinymnist history show) -------------------------------------------------


def _save_png(fig, path: Path, staged: list) -> None:
    """Rendered, not yet written: a report's plots and its markdown are written as one (``atomic_write_pair``),
    so an interrupt never leaves new plots beside no report or an old one (the third sweep of issue 30)."""
    import io
    import warnings

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # "constrained_layout not applied" when an outlier seed squeezes an axis: the plot is still drawn, and a
        # library's two-line warning on stderr is not the command's one line (the fourth independent sweep)
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    staged.append((path, buf.getvalue()))


def _history_plot(series, path: Path, staged: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in series.points if p.summary is not None and p.summary.last_k is not None]
    x = list(range(len(pts)))
    mean = [p.summary.last_k.mean for p in pts]
    # one seed has no interval: draw its point alone
    lo = [
        p.summary.last_k.ci_low if not math.isnan(p.summary.last_k.ci_low) else m
        for p, m in zip(pts, mean, strict=True)
    ]
    hi = [
        p.summary.last_k.ci_high if not math.isnan(p.summary.last_k.ci_high) else m
        for p, m in zip(pts, mean, strict=True)
    ]
    fig, (ax, bx) = plt.subplots(
        2, 1, figsize=(max(6, 0.7 * len(pts) + 3), 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    ax.fill_between(x, lo, hi, alpha=0.25, label="95% CI of the mean")
    ax.plot(x, mean, "o-", color="black", label=f"mean last-{pts[0].summary.k if pts else 3} accuracy")
    expect = pts[0].summary.recipe.expect if pts else None
    # the recipe's own per-seed bar: its last-k, final or best-epoch threshold, else the mission's 99.4
    bars = [expect.min_last_k, expect.min_final, expect.min_best_test] if expect else []
    line = next((b for b in bars if b is not None), TARGET)
    ax.axhline(line, color="red", lw=1, ls="--", label=f"gate {line:.2f}")
    bad = [i for i, p in enumerate(pts) if p.regression]
    if bad:
        ax.plot(bad, [mean[i] for i in bad], "v", color="red", ms=12, label="regression (compare's test)")
    untested = [i for i, p in enumerate(pts) if i > 0 and not p.tested]
    if untested:
        ax.plot(
            untested,
            [mean[i] for i in untested],
            "o",
            mfc="none",
            color="grey",
            ms=11,
            label="untested (too few seeds)",
        )
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{series.key} ({series.config}), seeds from {len(series.machines)} machine(s)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    for i, machine in enumerate(series.machines):  # throughput per machine: CPUs differ in speed
        ips = [dict((m, v) for m, v, _ in p.throughput).get(machine, math.nan) for p in pts]
        bx.plot(x, ips, "s-", color=f"C{i + 2}", label=machine[:40])
    if len(series.machines) > 1:
        bx.legend(fontsize=6, loc="best")
    bx.set_ylabel("images/s")
    bx.grid(alpha=0.3)
    bx.set_xticks(x, [p.commit.short[:8] for p in pts], rotation=45, fontsize=7)
    _save_png(fig, path, staged)


def write_history(
    series,
    out_dir: str | os.PathLike,
    command: str,
    off_line: Sequence[str] = (),
    also: Sequence[tuple[Path, bytes]] = (),
) -> Path:
    """HISTORY.md and one PNG per recipe and configuration, from ``tinymnist.history.history``'s series."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged: list = []
    lines = [
        "# tinymnist history",
        "",
        f"Generated by {code_span(command)}; do not edit by hand. Commits in git order (first parent, oldest "
        "first). Each commit's population is tested against the previous commit's with compare's own test "
        "(one-sided Welch t-test, alpha 0.01, minimum effect 0.05 points, at least 5 seeds a side); 'untested' "
        "marks a commit with too few seeds for it. Accuracy is one population over every machine's seeds; "
        "images/s is per machine (seeds in brackets), never averaged across CPUs.",
        "",
    ]
    per_key: dict[str, int] = {}
    for s in series:
        per_key[s.key] = per_key.get(s.key, 0) + 1
    for s in series:
        png = f"history-{s.key}.png" if per_key[s.key] == 1 else f"history-{s.key}-{s.config}.png"
        k = s.points[0].summary.k if s.points and s.points[0].summary else 3
        lines += [
            f"## {label_of(s.key)}, {s.config}",
            "",
            f"Machines: {as_text(', '.join(s.machines))}.",
            "",
            f"| commit | date | subject | n | last-{k} mean (95% CI) | gate pass rate (95% CI) | images/s "
            "| p vs previous | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for i, p in enumerate(s.points):
            sm = p.summary
            lk = sm.last_k if sm else None
            ips = "; ".join(
                f"{v:,.0f} ({n})" if len(p.throughput) == 1 else f"{m}: {v:,.0f} ({n})" for m, v, n in p.throughput
            )
            check = p.versus_previous
            pv = "" if check is None or math.isnan(check.p) else f"{check.p:.2g}"
            if i == 0:
                verdict = "first"
            elif not p.tested:
                verdict = "untested (n < 5)"
            else:
                verdict = f"**REGRESSION** ({-check.drop:+.3f})" if p.regression else f"ok ({-check.drop:+.3f})"
            if p.recipe_change:
                verdict += f"; recipe changed: {as_text(', '.join(p.recipe_change))}"
            verdict = Markdown(verdict)  # its bold is ours; the recipe's words are escaped above
            rate = sm.verdict.rate_text if sm else ""
            mean = f"{lk.mean:.3f} {lk.ci(3)}" if lk else ""
            row = (
                code_span(p.commit.short),
                p.commit.date[:10],
                p.commit.subject[:70],
                p.n,
                mean,
                rate,
                ips,
                pv,
                verdict,
            )
            lines.append(table_row(*row))
        notes = [f"`{p.commit.short}`: {', '.join(p.notes)} (counted once)" for p in s.points if p.notes]
        lines += ["", *(f"Seeds on two machines: {n}." for n in notes), f"![{s.key} history]({png})", ""]
        _history_plot(s, out / png, staged)
    if off_line:
        lines += [f"Stored commits not on this first-parent line (left out): {', '.join(off_line)}.", ""]
    path = out / "HISTORY.md"
    atomic_write_pair([*staged, *also, (path, text_bytes("\n".join(lines)))])  # HISTORY.json too: one write
    return path
