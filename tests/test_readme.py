"""The README's measured figures are generated from committed files, and its calibration is recomputed here."""

import json

import pytest

from tests.conftest import REPO
from tinymnist.compare import Thresholds, calibrate
from tinymnist.results import load_results
from tinymnist.summary import summarize
from tools import readme


def test_readme_blocks_match_their_files(capsys):
    assert readme.main(["--check"]) == 0, capsys.readouterr().err


def test_the_calibration_recomputes_from_the_committed_results():
    path = REPO / "reports" / "population" / "calibration.json"
    if not path.exists():
        pytest.skip("reports/population/calibration.json not committed yet")
    saved = json.loads(path.read_text())
    cal = saved["calibration"]
    runs = load_results(REPO / "reports" / "population")[f"step{saved['step']}"]
    values = list(summarize(runs).last_k_by_seed.values())
    again = calibrate(
        values, Thresholds(alpha=cal["alpha"], min_effect=cal["min_effect"]), splits=cal["splits"], seed=cal["seed"]
    )
    assert {str(k): v for k, v in again.rates.items()} == cal["rates"]
    # The design: false alarms at most alpha, plus the sampling error of the splits (binomial, 3 SD).
    n = cal["splits"]
    assert cal["rates"]["0.0"] <= cal["alpha"] + 3 * (cal["alpha"] * (1 - cal["alpha"]) / n) ** 0.5
    assert cal["rates"]["0.1"] >= cal["rates"]["0.05"] >= cal["rates"]["0.0"]


def _wall(path) -> float:
    return json.loads(path.read_text())["wall_seconds"]


def _bench_median_ms(name: str) -> float:
    bench = json.loads((REPO / "reports" / "baseline" / "bench.json").read_text())
    return next(b["stats"]["median"] for b in bench["benchmarks"] if b["name"] == name) * 1e3


def _experiment_counts() -> tuple[int, int]:
    """The runs and the experiments in reports/experiments, as `tinymnist log` reads them."""
    folders = [d for d in (REPO / "reports" / "experiments").iterdir() if any(d.glob("*/seed*.json"))]
    return sum(len(list(d.glob("*/seed*.json"))) for d in folders), len(folders)


def _prose_figures() -> list[str]:
    """The README's prose figures, rebuilt from the files they cite."""
    base = [round(_wall(REPO / "reports" / "baseline" / "step4" / f"seed{s}.json")) for s in (0, 1, 2)]
    gpu = [_wall(REPO / "reports" / "gpu" / f"step{n}" / "seed0.json") for n in (1, 2, 3, 4)]
    ort1, eager1 = _bench_median_ms("test_inference[onnxruntime-1]"), _bench_median_ms("test_inference[torch-1]")
    ort_k, eager_k = (1e6 / _bench_median_ms(f"test_inference[{e}-1000]") for e in ("onnxruntime", "torch"))
    return [
        f"{base[0]}, {base[1]} and {base[2]} s for seeds 0, 1, 2 in the baseline",  # in the seeds' order
        "({} runs in {} experiments,".format(*_experiment_counts()),
        f"step 1 {gpu[0]:.1f} s, step 2 {gpu[1]:.1f} s, step 3 {gpu[2]:.1f} s, step 4 {gpu[3]:.1f} s",
        f"{ort1:.3f} ms vs {eager1:.3f} ms in PyTorch eager ({eager1 / ort1:.1f}x",
        f"{ort_k:,.0f} vs {eager_k:,.0f} images/s ({ort_k / eager_k:.1f}x",
    ]


@pytest.mark.parametrize("figure", _prose_figures())
def test_prose_figures_match_their_files(figure):
    text = " ".join((REPO / "README.md").read_text().split())  # line breaks are not part of a figure
    assert figure in text


def test_a_claim_block_gives_no_verdict_until_every_seed_has_finished(tmp_path):
    """Two of the sixteen fresh seeds of a step-5 claim, and an interrupted third that does not count."""
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    runs = [
        make_result(5, 200, RAMP + [99.45, 99.5, 99.41], params=4972),
        make_result(5, 201, RAMP + [99.5, 99.39, 99.6], params=4972),
        replace(make_result(5, 202, [97.0, 97.1], params=4972, planned_epochs=15), status="interrupted"),
    ]
    write_results(tmp_path, runs)
    text = readme._claim(5, tmp_path)
    assert "Step 5 (4,972 parameters), the registered recipe on fresh seeds 200-215" in text
    assert "2 of 16 seeds finished so far, no verdict until all have" in text
    # last-3 means 99.4533 and 99.4967: mean 99.475; final 99.41 and 99.60
    assert "| last-3-epoch mean test accuracy | 2 | 99.475 |" in text
    assert "| final-epoch test accuracy | 2 | 99.505 |" in text
    assert "last 3 epochs: 1 of 2; the lowest single value in those epochs is 99.39." in text
    assert "Gate" not in text and "Why" not in text
    assert readme._claim(5, tmp_path / "none").startswith("Not claimed yet: `tinymnist train --step 5 --seeds 200-215")


def test_a_finished_claim_is_judged_by_the_steps_gate(tmp_path):
    from tests.synth import RAMP, make_result, write_results

    runs = [make_result(5, s, RAMP + [99.45, 99.5, 99.41], params=4972) for s in range(200, 215)]
    write_results(tmp_path, runs + [make_result(5, 215, RAMP + [99.5, 99.39, 99.6], params=4972)])
    text = readme._claim(5, tmp_path)
    assert "finished so far" not in text
    assert "last 3 epochs: 15 of 16; the lowest single value in those epochs is 99.39." in text
    assert "- **Gate: FAIL**, 15/16 seeds, 95% CI [72%, 99%] (Wilson interval)." in text
    assert "- Why: step 5 seed 215: epoch 14 test accuracy 99.39 < 99.40" in text
    write_results(tmp_path, [make_result(5, 215, RAMP + [99.45, 99.5, 99.41], params=4972)])
    assert "- **Gate: PASS**, 16/16 seeds, 95% CI [81%, 100%] (Wilson interval)." in readme._claim(5, tmp_path)


def test_mutation_runs_are_filed_module_by_module():
    from tools.mutation import NOT_RUN, merge, module_statuses

    results = module_statuses(
        "    tinymnist.verdict.x_judge__mutmut_1: killed\n"
        "    tinymnist.verdict.x_judge__mutmut_2: survived\n"
        "    tinymnist.compare.x_compare__mutmut_1: not checked\n"
        "    tinymnist.stats.x_mean__mutmut_1: not checked\n"
    )
    filed = {
        "modules": {
            "compare": {"commit": "old", "tests": ["t"], "counts": {"killed": 5}, "survivors": []},
            "verdict": {"commit": "old", "tests": ["t"], "counts": {NOT_RUN: 2}, "survivors": []},
        }
    }
    merged = merge(filed, results, "new", ["tests/test_verdict.py"])
    # checked by this run: replaced, with its commit, tests, counts and survivors
    assert merged["verdict"] == {
        "commit": "new",
        "tests": ["tests/test_verdict.py"],
        "counts": {"killed": 1, "survived": 1},
        "survivors": ["tinymnist.verdict.x_judge__mutmut_2"],
    }
    # not reached by this run: the filed entry stands
    assert merged["compare"] == filed["modules"]["compare"]
    # never filed and not reached: filed as not run, so the total still counts it
    assert merged["stats"]["counts"] == {NOT_RUN: 1}
    assert list(merged) == ["compare", "stats", "verdict"]


def test_a_sweep_decides_nothing_until_every_listed_candidate_has_its_seeds(tmp_path, monkeypatch):
    head = "| rank | candidate | changes | params | n | val last-3 mean (95% CI) | SD | pass | s/seed | vs #1 |"
    sweep = tmp_path / "reports" / "frontier" / "step6" / "SWEEP.md"
    sweep.parent.mkdir(parents=True)
    monkeypatch.setattr(readme, "REPO", tmp_path)

    def decision(*rows):
        sweep.write_text("\n".join([head, "|---|", *rows, "Top two: ..."]) + "\n")
        return readme._frontier(6).splitlines()[-1]

    top = "| 1 | step6.a | x=1 | 9,000 | 8 | 99.5 | 0.1 | 0/8 | 300 | (top) |"
    base = "| 2 | step6 | (the base recipe) | 8,952 | {n} | 99.4 | 0.1 | 0/8 | 300 | {vs} |"
    untrained = "| 3 | step6.c | y=2 | | 0 | not trained | | | | |"
    assert decision(top, base.format(n=4, vs="not resolved: -0.1, p 0.2")) == (
        "Decision: none yet; 1 of 2 candidates have not finished their 8 seeds (0 not started; the sweep runs in "
        "the background and resumes where it stopped)."
    )
    # a listed candidate with no finished seed may be training now: no decision, even a clear one, before it
    assert decision(top, base.format(n=8, vs="worse: -0.1, p 0.001"), untrained) == (
        "Decision: none yet; 1 of 3 candidates have not finished their 8 seeds (1 not started; the sweep runs in "
        "the background and resumes where it stopped)."
    )
    assert decision(top, base.format(n=8, vs="worse: -0.1, p 0.001")).startswith(
        "Decision: the base recipe `step6` is resolved worse than the top candidate"
    )
    assert decision(top, base.format(n=8, vs="not resolved: -0.02, p 0.3")).endswith("step 6 stays as registered.")


def test_a_module_is_filed_with_its_mutants_test_time_where_mutmut_recorded_it(tmp_path):
    from tools.mutation import merge, module_statuses, test_seconds

    meta = tmp_path / "mutants" / "src" / "tinymnist"
    meta.mkdir(parents=True)
    (meta / "verdict.py.meta").write_text(json.dumps({"durations_by_key": {"a": 1.25, "b": 2.0}}))
    (meta / "stats.py.meta").write_text(json.dumps({"exit_code_by_key": {}}))  # no timings: none filed
    assert test_seconds(tmp_path / "mutants") == {"verdict": 3.25}
    run = module_statuses("tinymnist.verdict.x_a__mutmut_1: killed\ntinymnist.stats.x_b__mutmut_1: killed\n")
    merged = merge({}, run, "c", [], test_seconds(tmp_path / "mutants"))
    assert merged["verdict"]["test_seconds"] == 3 and "test_seconds" not in merged["stats"]


def test_a_round2_claim_says_whether_issue_33s_target_is_reached(tmp_path):
    """Step 5's target: every one of the 16 fresh seeds holds >= 99.40 in each of its last 3 epochs; step 6's: a
    mean final >= 99.60 over the 16. Judged only once all 16 have finished."""
    from tests.synth import RAMP, make_result, write_results

    seeds = readme.CLAIM2_SEEDS
    write_results(tmp_path, [make_result(5, s, RAMP + [99.45, 99.5, 99.41], params=4972) for s in seeds[:15]])
    assert (
        "target for step 5 (every seed ≥ 99.40 in each of its last 3 epochs): not judged until all seeds have "
        "finished; 15 of 15 seeds hold it." in readme._claim(5, tmp_path, seeds, target=True)
    )
    write_results(tmp_path, [make_result(5, seeds[-1], RAMP + [99.5, 99.39, 99.6], params=4972)])
    text = readme._claim(5, tmp_path, seeds, target=True)
    assert "fresh seeds 300-315" in text and ": **missed**; 15 of 16 seeds hold it." in text
    write_results(tmp_path, [make_result(5, seeds[-1], RAMP + [99.5, 99.41, 99.6], params=4972)])
    assert ": **reached**; 16 of 16 seeds hold it." in readme._claim(5, tmp_path, seeds, target=True)
    write_results(tmp_path, [make_result(6, s, RAMP + [99.6, 99.6, 99.61 - (s % 2) / 50], params=9802) for s in seeds])
    text = readme._claim(6, tmp_path, seeds, target=True)  # finals alternate 99.61 and 99.59: mean 99.600
    assert "(a mean final ≥ 99.60 over the 16 seeds): **reached**; the mean final is 99.600 over 16 seeds." in text
    write_results(tmp_path, [make_result(6, seeds[0], RAMP + [99.6, 99.6, 99.58], params=9802)])
    assert ": **missed**; the mean final is 99.598 over 16 seeds." in readme._claim(6, tmp_path, seeds, target=True)


def test_a_claims_tta_row_gives_the_same_plain_mean_as_the_claims_own_block():
    """Both name the mean final-epoch test accuracy of the same 16 weights files; step 5's is 99.3925 exactly,
    which a hand-summed mean rounded to 99.393 and the claim block's (the statistics module's) to 99.392."""
    path = REPO / "reports" / "frontier" / "round2" / "tta-claim.json"
    if not path.exists():
        pytest.skip("reports/frontier/round2/tta-claim.json not committed yet")
    steps = json.loads(path.read_text())["steps"]
    assert steps, "the TTA claim file names no step"
    claims = load_results(REPO / "reports" / "frontier" / "round2" / "claim")  # read once, every step's folder
    for step, entry in steps.items():
        block = summarize(claims[f"step{step}"]).final_test.mean
        assert [f"{r['plain_mean']:.3f}" for r in entry["recipes"].values()] == [f"{block:.3f}"], step
