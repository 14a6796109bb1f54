"""Seed statistics: the one module that turns per-seed figures into claims. Built on ``scipy.stats``.

Every accuracy claim is n seeds with mean, SD and a 95% confidence interval of the mean (Student t); the
olympic mean (MLPerf's: drop the best and the worst seed) where n >= 5; a pass rate with its 95% Wilson
interval; and, for ``compare``, a one-sided Welch t-test of two groups of seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
OLYMPIC_MIN_N = 5  # below 5 seeds, dropping two of them leaves too little to average
# Accuracies are multiples of 0.01 points (of 10,000 test images), so a mean or a difference of them meets a
# threshold exactly, or misses it by at least 0.01/n; float error alone is far below 1e-9. Thresholds are met
# within EPS: three seeds at 99.60 have a mean of 99.59999999999998, and a drop from 99.40 to 99.30 is
# 0.10000000000000853 (both were judged by the float error, not by the rule).
EPS = 1e-9


@dataclass(frozen=True)
class SeedStats:
    """One figure (final accuracy, say) over n seeds."""

    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1); nan for one seed
    min: float
    max: float
    ci_low: float  # 95% t-interval of the mean; nan for one seed
    ci_high: float
    olympic: float | None  # mean without the lowest and the highest seed; None for n < 5

    @classmethod
    def of(cls, values: Iterable[float]) -> SeedStats:
        v = np.asarray([float(x) for x in values], dtype=float)
        if v.size == 0:
            raise ValueError("no values")
        n, mean = int(v.size), float(np.mean(v))
        if n < 2 or not np.all(np.isfinite(v)):
            sd = lo = hi = math.nan
        else:
            # Every seed equal: the interval is the point (scipy would return nan). Tested on the values, not
            # on the SD: the SD of three equal 99.4s is 1.7e-14 in floating point, not 0.
            sd = 0.0 if np.ptp(v) == 0 else float(np.std(v, ddof=1))
            if sd == 0:
                lo = hi = mean
            else:
                lo, hi = (float(x) for x in stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=stats.sem(v)))
        olympic = float(np.mean(np.sort(v)[1:-1])) if n >= OLYMPIC_MIN_N else None
        return cls(n, mean, sd, float(np.min(v)), float(np.max(v)), lo, hi, olympic)

    def ci(self, digits: int = 2) -> str:
        """``[-5.48, 30.41]``: brackets and a comma, so a negative bound never reads as a dash (issue 32)."""
        return "n/a" if math.isnan(self.ci_low) else f"[{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"

    def fmt(self, digits: int = 2) -> str:
        sd = "n/a" if math.isnan(self.sd) else f"{self.sd:.{digits}f}"
        return f"mean {self.mean:.{digits}f} (95% CI {self.ci(digits)}, SD {sd}, min {self.min:.{digits}f}, n={self.n})"


@dataclass(frozen=True)
class Rate:
    """k successes of n trials, with the 95% Wilson score interval of the rate."""

    k: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        if n == 0:
            return cls(0, 0, math.nan, math.nan)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return cls(k, n, float(ci.low), float(ci.high))

    def fmt(self) -> str:
        if self.n == 0:
            return "0/0 seeds"
        return f"{self.k}/{self.n} seeds, 95% CI [{100 * self.low:.0f}%, {100 * self.high:.0f}%]"


def welch_drop_p(new: Iterable[float], old: Iterable[float]) -> float:
    """p-value of the one-sided Welch t-test that NEW's mean is below OLD's (unequal variances).

    Two groups with no spread at all give no t statistic; then the answer is certain: 0 if NEW is lower, else 1.
    """
    a, b = np.asarray(list(new), dtype=float), np.asarray(list(old), dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 0.0 if a.mean() < b.mean() else 1.0
    with warnings.catch_warnings():
        # Seeds that agree to the last digit make scipy warn of cancellation; the p-value is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def welch_within_p(new: Iterable[float], old: Iterable[float], margin: float) -> float:
    """p-value of the one-sided Welch t-test that NEW's mean is above OLD's mean minus ``margin``: a small p
    shows that NEW lost less than ``margin`` (the TOST-style half of an equivalence test, for "clearly no
    regression"; ``welch_drop_p`` is the other question, "clearly a drop")."""
    return welch_drop_p([o - margin for o in old], new)


def paired_drop_p(new: Iterable[float], old: Iterable[float]) -> float:
    """p-value of the one-sided paired t-test that NEW is below OLD, seed by seed (``new[i]`` and ``old[i]``
    are one seed's figures): the question ``welch_drop_p`` asks, on the per-seed differences."""
    a, b = np.asarray(list(new), dtype=float), np.asarray(list(old), dtype=float)
    if a.shape != b.shape or a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    d = a - b
    if np.ptp(d) == 0:
        return 0.0 if d.mean() < 0 else 1.0
    return float(stats.ttest_rel(a, b, alternative="less").pvalue)


def mean_lower_bound(values: Iterable[float], confidence: float = 0.99) -> float:
    """The one-sided lower confidence bound of the mean (Student t): the mean is above it with ``confidence``."""
    v = np.asarray(list(values), dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan
    if np.ptp(v) == 0:
        return float(v.mean())
    return float(v.mean() - stats.t.ppf(confidence, v.size - 1) * stats.sem(v))


def last_k_mean(test_acc: list[float], k: int = 3) -> float:
    return float(np.mean(test_acc[-k:]))


def first_stable_epoch(test_acc: list[float], threshold: float = 99.4) -> int | None:
    """First epoch from which every later epoch stays at or above ``threshold``; None if the last is below."""
    first = None
    for i, acc in enumerate(test_acc, start=1):
        if acc >= threshold:
            first = first or i
        else:
            first = None
    return first
