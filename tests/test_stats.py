"""The statistics against values worked out by hand (issue 18: the README tests recomputed figures with the same
code that made them, so a wrong olympic mean or a miscalibrated calibrate would have passed)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from tinymnist.compare import Thresholds, accuracy_rule, calibrate
from tinymnist.stats import Rate, SeedStats, first_stable_epoch, last_k_mean, welch_drop_p, welch_within_p


def test_seed_stats_by_hand():
    s = SeedStats.of([1, 2, 3, 4, 5])
    assert (s.n, s.mean, s.min, s.max) == (5, 3.0, 1.0, 5.0)
    assert s.sd == pytest.approx(math.sqrt(2.5))  # sum of squares 10 over n - 1 = 4
    # t(0.975, 4) = 2.776445 (tables); half-width 2.776445 * sqrt(2.5) / sqrt(5)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert (s.ci_low, s.ci_high) == (pytest.approx(3 - half, abs=1e-5), pytest.approx(3 + half, abs=1e-5))
    assert s.olympic == 3.0  # mean of 2, 3, 4


def test_olympic_mean_drops_the_best_and_the_worst_not_the_first_and_last():
    assert SeedStats.of([10, 1, 7, 3, 100]).olympic == pytest.approx((3 + 7 + 10) / 3)
    assert SeedStats.of([5, 5, 1, 9, 5, 5]).olympic == 5.0
    assert SeedStats.of([1, 2, 3, 4]).olympic is None  # fewer than 5 seeds


def test_one_seed_and_equal_seeds():
    one = SeedStats.of([99.4])
    assert one.n == 1 and math.isnan(one.sd) and math.isnan(one.ci_low) and one.ci() == "n/a"
    same = SeedStats.of([99.4, 99.4, 99.4])
    assert same.sd == 0 and same.ci_low == same.ci_high == same.mean
    with pytest.raises(ValueError):
        SeedStats.of([])


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(8, 10), (0, 16), (16, 16), (1, 3)])
def test_wilson_interval_by_its_formula(k, n):
    r = Rate.of(k, n)
    lo, hi = _wilson(k, n)
    assert (r.low, r.high) == (pytest.approx(lo), pytest.approx(hi))
    assert r.low <= k / n <= r.high


def test_wilson_by_hand_and_empty():
    # 8 of 10: centre 0.71674, half-width 0.22657, worked through the formula by hand
    r = Rate.of(8, 10)
    assert (round(r.low, 4), round(r.high, 4)) == (0.4902, 0.9433)
    assert r.fmt() == "8/10 seeds, 95% CI [49%, 94%]"
    assert math.isnan(Rate.of(0, 0).low) and Rate.of(0, 0).fmt() == "0/0 seeds"


def test_welch_by_hand():
    # NEW 1, 2, 3 against OLD 2, 3, 4: difference -1, variances 1 and 1, SE sqrt(2/3), t = -1.2247,
    # Welch-Satterthwaite df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    t = -1 / math.sqrt(2 / 3)
    assert welch_drop_p([1, 2, 3], [2, 3, 4]) == pytest.approx(sps.t.cdf(t, 4))
    assert welch_drop_p([2, 3, 4], [1, 2, 3]) == pytest.approx(1 - sps.t.cdf(t, 4))
    # unequal variances: 1, 2, 3 (var 1) against 0, 4, 8 (var 16): df = (1/3 + 16/3)^2 / ((1/3)^2/2 + (16/3)^2/2)
    se2 = 1 / 3 + 16 / 3
    df = se2**2 / ((1 / 3) ** 2 / 2 + (16 / 3) ** 2 / 2)
    assert welch_drop_p([1, 2, 3], [0, 4, 8]) == pytest.approx(sps.t.cdf((2 - 4) / math.sqrt(se2), df))


def test_welch_without_spread_and_with_nan():
    assert welch_drop_p([1, 1], [2, 2]) == 0.0
    assert welch_drop_p([2, 2], [1, 1]) == 1.0
    assert welch_drop_p([2, 2], [2, 2]) == 1.0  # equal is no drop
    assert math.isnan(welch_drop_p([1, float("nan")], [2, 3]))


def test_welch_within_is_the_shifted_drop_test():
    # "lost less than 1": OLD shifted down by the margin, 0 1 2, against NEW 1 2 3: the same t as above
    t = -1 / math.sqrt(2 / 3)
    assert welch_within_p([1, 2, 3], [1, 2, 3], 1.0) == pytest.approx(sps.t.cdf(t, 4))
    # far inside the margin: certain
    assert welch_within_p([99.40, 99.41, 99.42], [99.40, 99.41, 99.42], 5.0) < 1e-3


def test_last_k_and_stable_epoch_by_hand():
    acc = [99.3, 99.5, 99.2, 99.4, 99.45]
    assert last_k_mean(acc, 3) == pytest.approx((99.2 + 99.4 + 99.45) / 3)
    assert first_stable_epoch(acc, 99.4) == 4
    assert first_stable_epoch([99.5, 99.5, 99.3], 99.4) is None
    assert first_stable_epoch([99.5, 99.5], 99.4) == 1


def test_accuracy_rule_switches_at_five_seeds_and_needs_the_minimum_effect():
    t = Thresholds()
    a = [99.40, 99.41, 99.42, 99.43, 99.44]
    # a drop of 0.04 with no noise at all is certain, and still no regression: below the 0.05 minimum effect
    assert not accuracy_rule(a, [x - 0.04 for x in a], t).regression
    assert accuracy_rule(a, [x - 0.06 for x in a], t).regression
    # four seeds a side: the fixed rule, a drop of more than 0.10
    assert not accuracy_rule(a[:4], [x - 0.10 for x in a[:4]], t).regression
    assert accuracy_rule(a[:4], [x - 0.11 for x in a[:4]], t).regression


def test_calibrate_on_data_with_a_known_answer():
    # Sixteen equal seeds: every half has no spread, so a shift is flagged exactly when it reaches the
    # minimum effect: rates 0 below 0.05 and 1 from it on.
    cal = calibrate([99.4] * 16, Thresholds(), shifts=(0.0, 0.04, 0.06, 1.0), splits=50)
    assert cal.rates == {0.0: 0.0, 0.04: 0.0, 0.06: 1.0, 1.0: 1.0}
    # Noise of SD 0.01: a 0.10 shift is 10 SDs, flagged by every split; no shift is flagged by none (a drop
    # needs 0.05, five SDs of the half means' difference)
    v = list(np.random.default_rng(1).normal(99.4, 0.01, 16))
    cal = calibrate(v, Thresholds(), shifts=(0.0, 0.10), splits=200)
    assert cal.rates == {0.0: 0.0, 0.1: 1.0}
    assert (cal.n_seeds, cal.half, cal.splits) == (16, 8, 200)


def test_calibrate_false_alarm_rate_is_about_alpha_without_a_minimum_effect():
    # With the minimum effect off, the rule is the bare one-sided Welch test: over many independent
    # Gaussian datasets its false-alarm rate is alpha. 400 datasets x 25 splits at alpha 0.05: the mean of
    # the rates is 0.05 within sampling error (halves of one dataset are not independent, hence the spread).
    rng = np.random.default_rng(7)
    rates = [
        calibrate(list(rng.normal(0, 1, 16)), Thresholds(alpha=0.05, min_effect=0.0), (0.0,), 25, s).rates[0.0]
        for s in range(400)
    ]
    assert 0.03 < float(np.mean(rates)) < 0.07


# --- the edges a mutation run found unchecked (reports/mutation/survivors.txt) -------------------------------


def test_two_seeds_have_an_sd_and_a_t_interval_and_none_is_refused():
    """n = 2 is the first n with an SD and an interval: 1 and 2 give SD 0.7071 and mean 1.5 +- 12.706 * 0.5."""
    s = SeedStats.of([1.0, 2.0])
    assert s.sd == pytest.approx(math.sqrt(0.5))
    assert (s.ci_low, s.ci_high) == pytest.approx((1.5 - 12.7062 * 0.5, 1.5 + 12.7062 * 0.5), rel=1e-5)
    assert s.ci() == "[-4.85, 7.85]" and s.ci(1) == "[-4.9, 7.9]"
    with pytest.raises(ValueError, match="^no values$"):
        SeedStats.of([])


def test_no_trials_is_zero_of_zero_with_no_interval():
    r = Rate.of(0, 0)
    assert (r.k, r.n) == (0, 0) and math.isnan(r.low) and math.isnan(r.high) and r.fmt() == "0/0 seeds"


def test_welch_with_one_side_constant_is_still_a_t_test():
    """One side without spread is a one-sample question, not a certainty: NEW 1, 1, 1 against OLD 1.5, 2, 2.5
    is t = -2 on 2 df (Welch-Satterthwaite, all the variance on OLD's side): p = 0.0918."""
    p = welch_drop_p([1.0, 1.0, 1.0], [1.5, 2.0, 2.5])
    assert p == pytest.approx(sps.t.cdf(-1.0 / math.sqrt(0.25 / 3), 2), rel=1e-9)
    assert welch_drop_p([1.5, 2.0, 2.5], [1.0, 1.0, 1.0]) == pytest.approx(1 - p, rel=1e-9)


def test_defaults_of_the_epoch_helpers():
    assert last_k_mean([1.0, 2.0, 3.0, 4.0]) == 3.0  # the last 3, not 4
    assert first_stable_epoch([99.3, 99.5, 99.45]) == 2  # the bar is 99.4
    assert first_stable_epoch([]) is None


def test_calibrate_defaults_and_its_minimum_population():
    values = [99.40 + 0.01 * (i % 7) for i in range(10)]
    cal = calibrate(values, shifts=(0.0,))
    assert (cal.n_seeds, cal.half, cal.splits, cal.seed) == (10, 5, 1000, 0)
    assert cal == calibrate(values, Thresholds(), shifts=(0.0,), splits=1000, seed=0)
    with pytest.raises(ValueError) as e:
        calibrate(values[:9])
    assert str(e.value) == "9 seeds: calibration needs at least 10, so that each half is judged by the t-test"


def test_calibrate_leaves_the_odd_seed_out_of_both_halves():
    """Eleven seeds: halves of five, and the eleventh sits out each split. Ten equal seeds and one 0.4 lower, at
    alpha 0.5 with no minimum effect: a split flags a drop exactly when the low seed falls in NEW's half (5 of
    11 places), never when it sits out (1 of 11) or is in the baseline's."""
    cal = calibrate([99.4] * 10 + [99.0], Thresholds(alpha=0.5, min_effect=0.0), shifts=(0.0,), splits=2000)
    assert cal.half == 5
    assert abs(cal.rates[0.0] - 5 / 11) < 0.03  # 6/11 if the odd seed joined NEW's half; sampling SD 0.011


def test_one_seed_a_side_has_no_p_value():
    """A t-test needs two seeds a side; with one, the rule reports no p rather than a certain one."""
    for a, b in (([99.5], [99.4]), ([99.5], [99.4, 99.4]), ([99.5, 99.5], [99.4]), ([99.5], [99.4, 99.3])):
        assert math.isnan(accuracy_rule(a, b, Thresholds()).p), (a, b)


def test_accuracy_rule_at_its_boundaries_word_for_word():
    """The second mutation run over compare (reports/mutation/): each edge of the one accuracy rule."""
    from scipy import stats as sps

    t = Thresholds()
    a = [99.40, 99.41, 99.42, 99.43, 99.44]
    # exactly the minimum effect, resolved: a regression (the drop is 0.05 up to rounding, hence EPS)
    at = accuracy_rule(a, [x - 0.05 for x in a], t)
    assert at.regression and at.drop == pytest.approx(0.05, abs=1e-12)
    # five seeds on one side only: the fixed rule, since a t-test needs five a side
    b4 = [x - 0.08 for x in a[:4]]
    four = accuracy_rule(a, b4, t)
    p = sps.ttest_ind(b4, a, equal_var=False, alternative="less").pvalue
    assert not four.regression and four.p == pytest.approx(p, rel=1e-12)
    assert four.rule == f"fixed rule: drop <= 0.10 (n < 5; p {p:.2g} for reference)"
    assert not accuracy_rule(b4, a, t).regression  # and with five on the other side
    # two seeds a side still have a p-value to show for reference
    two = accuracy_rule(a[:2], [x - 0.02 for x in a[:2]], t)
    p2 = sps.ttest_ind([x - 0.02 for x in a[:2]], a[:2], equal_var=False, alternative="less").pvalue
    assert two.p == pytest.approx(p2, rel=1e-12) and two.rule.endswith(f"p {p2:.2g} for reference)")
    # one seed on a side has none, and says so
    one = accuracy_rule(a[:1], a[:2], t)
    assert one.rule == "fixed rule: drop <= 0.10 (n < 5; p n/a for reference)" and math.isnan(one.p)


def test_seed_stats_in_one_line_word_for_word():
    from tinymnist.stats import SeedStats

    s = SeedStats.of([99.41, 99.43, 99.45])  # SD 0.02; CI worked out in test_verdict.py
    assert s.fmt() == "mean 99.43 (95% CI [99.38, 99.48], SD 0.02, min 99.41, n=3)"
    assert s.fmt(3) == "mean 99.430 (95% CI [99.380, 99.480], SD 0.020, min 99.410, n=3)"
    assert SeedStats.of([99.4]).fmt() == "mean 99.40 (95% CI n/a, SD n/a, min 99.40, n=1)"
