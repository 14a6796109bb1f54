"""The regression tests of the seed table: pure functions of a run's numbers and its recipe's Expectation."""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from harness.recipes import Expectation


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons)}


def check_run(expect: Expectation, step: int, seed: int, params: int, test_acc: list[float],
              status: str = "completed", planned_epochs: int | None = None) -> Verdict:
    """One seed's verdict. ``test_acc`` is the per-epoch test accuracy in percent."""
    who = f"step {step} seed {seed}"
    reasons: list[str] = []
    if status != "completed":
        reasons.append(f"{who}: run {status}, not completed")
    if planned_epochs is not None and len(test_acc) < planned_epochs and status == "completed":
        reasons.append(f"{who}: only {len(test_acc)} of {planned_epochs} epochs recorded")
    if expect.max_params is not None and params >= expect.max_params:
        reasons.append(f"{who}: {params:,} parameters, must be fewer than {expect.max_params:,}")
    if not test_acc:
        if any(v is not None for v in (expect.min_best_test, expect.min_last_k, expect.min_final)):
            reasons.append(f"{who}: no epoch finished, no accuracy to check")
        return Verdict(not reasons, reasons)
    if expect.min_best_test is not None and max(test_acc) < expect.min_best_test:
        reasons.append(f"{who}: best test accuracy {max(test_acc):.2f} < {expect.min_best_test:.2f}")
    if expect.min_last_k is not None:
        k = expect.last_k
        if len(test_acc) < k:
            reasons.append(f"{who}: {len(test_acc)} epochs, the last-{k} check needs at least {k}")
        first = len(test_acc) - min(k, len(test_acc)) + 1
        for i, acc in enumerate(test_acc[-k:], start=first):
            if acc < expect.min_last_k:
                reasons.append(f"{who}: epoch {i} test accuracy {acc:.2f} < {expect.min_last_k:.2f} "
                               f"(each of the last {k} epochs must reach it)")
    if expect.min_final is not None and test_acc[-1] < expect.min_final:
        reasons.append(f"{who}: final test accuracy {test_acc[-1]:.2f} < {expect.min_final:.2f}")
    return Verdict(not reasons, reasons)


def check_seeds(expect: Expectation, step: int, finals: dict[int, float], verdicts: dict[int, Verdict],
                required_seeds: tuple[int, ...] | None = None) -> Verdict:
    """The step's verdict over its seeds: every seed passes, the required seeds all ran, and the mean holds."""
    reasons = [r for s in sorted(verdicts) for r in verdicts[s].reasons]
    if required_seeds is not None:
        missing = sorted(set(required_seeds) - set(verdicts))
        if missing and expect.min_mean_final is not None:
            reasons.append(f"step {step}: mean check needs seeds {list(required_seeds)}, missing {missing}")
    if expect.min_mean_final is not None and finals:
        m = mean(finals.values())
        if m < expect.min_mean_final:
            reasons.append(f"step {step}: mean final test accuracy {m:.2f} over seeds {sorted(finals)} "
                           f"< {expect.min_mean_final:.2f}")
    return Verdict(not reasons, reasons)
