from hypothesis import given, settings
from hypothesis import strategies as st

from harness.gates import Verdict, check_run, check_seeds
from harness.recipes import RECIPES, STEP1, STEP4, Expectation

GOOD = [98.0 + 0.1 * i for i in range(12)] + [99.45, 99.48, 99.50]


def test_step4_pass():
    v = check_run(STEP4.expect, 4, 0, 8952, GOOD)
    assert v.passed and v.reasons == []


def test_step4_fails_when_one_of_last_three_dips():
    hist = GOOD[:-2] + [99.39] + GOOD[-1:]
    v = check_run(STEP4.expect, 4, 1, 8952, hist)
    assert not v.passed
    assert v.reasons == ["step 4 seed 1: epoch 14 test accuracy 99.39 < 99.40 (each of the last 3 epochs must "
                         "reach it)"]


def test_step4_best_epoch_earlier_does_not_count():
    hist = GOOD[:-4] + [99.6, 99.3, 99.45, 99.45]
    assert not check_run(STEP4.expect, 4, 0, 8952, hist).passed


def test_param_budget():
    v = check_run(STEP4.expect, 4, 0, 10_000, GOOD)
    assert not v.passed and "10,000 parameters, must be fewer than 10,000" in v.reasons[0]


def test_step1_best_test():
    assert check_run(STEP1.expect, 1, 0, 147658, [98.0, 99.01, 98.9]).passed
    v = check_run(STEP1.expect, 1, 2, 147658, [98.0, 98.99])
    assert v.reasons == ["step 1 seed 2: best test accuracy 98.99 < 99.00"]


def test_diverged_never_passes():
    v = check_run(Expectation(), 4, 0, 8952, [], status="diverged")
    assert not v.passed and "diverged" in v.reasons[0]


def test_short_run_fails_last_k():
    assert not check_run(STEP4.expect, 4, 0, 8952, [99.5, 99.5]).passed


def test_one_failing_seed_fails_the_step():
    verdicts = {0: check_run(STEP4.expect, 4, 0, 8952, GOOD),
                1: check_run(STEP4.expect, 4, 1, 8952, GOOD[:-1] + [99.2]),
                2: check_run(STEP4.expect, 4, 2, 8952, GOOD)}
    step = check_seeds(STEP4.expect, 4, {s: 99.5 for s in verdicts}, verdicts, (0, 1, 2))
    assert not step.passed and step.reasons == ["step 4 seed 1: epoch 15 test accuracy 99.20 < 99.40 "
                                                "(each of the last 3 epochs must reach it)"]


def test_mean_rule():
    e = Expectation(min_mean_final=99.6, min_final=99.5)
    ok = {s: Verdict(True) for s in (0, 1, 2)}
    assert check_seeds(e, 6, {0: 99.6, 1: 99.7, 2: 99.5}, ok, (0, 1, 2)).passed
    v = check_seeds(e, 6, {0: 99.5, 1: 99.6, 2: 99.6}, ok, (0, 1, 2))
    assert v.reasons == ["step 6: mean final test accuracy 99.57 over seeds [0, 1, 2] < 99.60"]
    assert not check_seeds(e, 6, {0: 99.9}, {0: Verdict(True)}, (0, 1, 2)).passed


def test_recipes_state_their_expectation():
    for r in RECIPES.values():
        assert r.epochs <= 15 and r.expect != Expectation(), r.step
    assert STEP4.expect.min_last_k == 99.40 and STEP4.seeds == (0, 1, 2)


acc = st.floats(90, 100, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(hist=st.lists(acc, min_size=1, max_size=15), i=st.integers(0, 14), bump=st.floats(0, 5),
       step=st.sampled_from(sorted(RECIPES)))
def test_verdict_is_monotone(hist, i, bump, step):
    """Raising any epoch's accuracy never turns a pass into a fail."""
    e = RECIPES[step].expect
    before = check_run(e, step, 0, 8952, hist, planned_epochs=len(hist)).passed
    raised = list(hist)
    raised[i % len(hist)] = min(100.0, raised[i % len(hist)] + bump)
    after = check_run(e, step, 0, 8952, raised, planned_epochs=len(hist)).passed
    assert after or not before
