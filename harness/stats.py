"""Seed statistics, shared by the CLI, the report and compare: every figure is n seeds, mean, min, max, std."""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean, stdev


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    min: float
    max: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed

    @classmethod
    def of(cls, values) -> "Spread":
        v = [float(x) for x in values]
        if not v:
            raise ValueError("no values")
        return cls(len(v), mean(v), min(v), max(v), stdev(v) if len(v) > 1 else 0.0)

    def fmt(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} (min {self.min:.{digits}f}, std {self.std:.{digits}f}, n={self.n})"


def last_k_mean(test_acc: list[float], k: int = 3) -> float:
    return mean(test_acc[-k:])


def first_stable_epoch(test_acc: list[float], threshold: float = 99.4) -> int | None:
    """First epoch from which every later epoch stays at or above ``threshold``; None if the last is below."""
    first = None
    for i, acc in enumerate(test_acc, start=1):
        if acc >= threshold:
            first = first or i
        else:
            first = None
    return first
