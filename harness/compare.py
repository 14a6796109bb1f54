"""``python -m harness compare BASELINE_DIR NEW_DIR``: flag accuracy, gate and throughput regressions.

A regression (exit 1) is any of:
- a step's mean over seeds of the last-3-epoch mean test accuracy drops by more than 0.10 points;
- any seed of a gated step fails its gate in NEW;
- a throughput figure drops by more than 10%: training images/s per step from the results, and every
  benchmark in ``*.json`` pytest-benchmark files found in the two folders. Throughput is only compared
  between runs on the same device name and thread count; otherwise the row says why it was skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

from harness.report import load_benchmarks, machine_name, step_summary
from harness.results import load_results

MAX_ACC_DROP = 0.10
MAX_THROUGHPUT_DROP = 0.10


def _bench_throughput(folder: Path) -> tuple[dict[str, float], str]:
    """Per-second figure of every benchmark in the folder's pytest-benchmark JSON files, and their machine."""
    files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith("seed"))
    benches, machine = load_benchmarks(files, strict=False)
    figures = {b.get("fullname", b["name"]): b.get("extra_info", {}).get("batch", 1) / b["stats"]["median"]
               for b in benches}
    return figures, machine_name(machine)


def compare(baseline: str | os.PathLike, new: str | os.PathLike, max_acc_drop: float = MAX_ACC_DROP,
            max_throughput_drop: float = MAX_THROUGHPUT_DROP, steps: list[int] | None = None
            ) -> tuple[list[str], list[str]]:
    """The printed table's lines and the regressions found (empty when nothing regressed)."""
    old_r, new_r = load_results(baseline), load_results(new)
    if steps:
        old_r = {s: r for s, r in old_r.items() if s in steps}
        new_r = {s: r for s, r in new_r.items() if s in steps}
    if not old_r:
        raise FileNotFoundError(f"{baseline}: no step*/seed*.json results to compare against")
    if not new_r:
        raise FileNotFoundError(f"{new}: no step*/seed*.json results to compare")
    lines = ["| step | figure | baseline | new | difference | verdict |", "|---|---|---|---|---|---|"]
    regressions: list[str] = []

    def row(step, figure, old, new, diff, bad, note=""):
        verdict = "REGRESSION" if bad else (note or "ok")
        lines.append(f"| {step} | {figure} | {old} | {new} | {diff} | {verdict} |")

    for step in sorted(set(old_r) | set(new_r)):
        if step not in new_r:
            row(step, "runs", f"{len(old_r[step])} seeds", "missing", "", True)
            regressions.append(f"step {step}: no results in {new}")
            continue
        n = step_summary(new_r[step])
        failed = [r.seed for r in new_r[step] if not r.gate["passed"]]
        row(step, "seeds passing gate", "", f"{len(n['passed'])}/{len(n['seeds'])}", "", bool(failed))
        if failed:
            regressions.append(f"step {step}: seeds {failed} fail the gate: " + "; ".join(n["reasons"]))
        if step not in old_r:
            row(step, "last-3 mean test acc", "missing", f"{n['last_k'].mean:.2f}" if n["last_k"] else "n/a", "",
                False, "new step")
            continue
        o = step_summary(old_r[step])
        if o["last_k"] and n["last_k"]:
            d = n["last_k"].mean - o["last_k"].mean
            bad = d < -max_acc_drop
            row(step, f"last-{n['k']} mean test acc", f"{o['last_k'].mean:.2f}", f"{n['last_k'].mean:.2f}",
                f"{d:+.2f}", bad)
            if bad:
                regressions.append(f"step {step}: last-{n['k']} mean test accuracy {n['last_k'].mean:.2f} vs "
                                   f"{o['last_k'].mean:.2f} ({d:+.2f}, limit -{max_acc_drop:.2f})")
        if o["images_per_second"] and n["images_per_second"]:
            old_v, new_v = o["images_per_second"].mean, n["images_per_second"].mean
            d = new_v / old_v - 1
            if o["machines"] != n["machines"]:
                row(step, "train images/s", f"{old_v:,.0f}", f"{new_v:,.0f}", f"{d:+.1%}", False,
                    "skipped: different machine")
            else:
                bad = d < -max_throughput_drop
                row(step, "train images/s", f"{old_v:,.0f}", f"{new_v:,.0f}", f"{d:+.1%}", bad)
                if bad:
                    regressions.append(f"step {step}: training throughput {new_v:,.0f} vs {old_v:,.0f} images/s "
                                       f"({d:+.1%}, limit -{max_throughput_drop:.0%})")

    old_b, old_m = _bench_throughput(Path(baseline))
    new_b, new_m = _bench_throughput(Path(new))
    for name in sorted(set(old_b) & set(new_b)):
        d = new_b[name] / old_b[name] - 1
        if old_m != new_m:
            row("bench", name, f"{old_b[name]:,.0f}/s", f"{new_b[name]:,.0f}/s", f"{d:+.1%}", False,
                "skipped: different machine")
            continue
        bad = d < -max_throughput_drop
        row("bench", name, f"{old_b[name]:,.0f}/s", f"{new_b[name]:,.0f}/s", f"{d:+.1%}", bad)
        if bad:
            regressions.append(f"benchmark {name}: {new_b[name]:,.0f} vs {old_b[name]:,.0f} per second ({d:+.1%})")
    return lines, regressions
