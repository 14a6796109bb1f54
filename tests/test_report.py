import re

import pytest

from tests.synth import RAMP, make_result, step4_runs, write_results
from tinymnist.cli import main
from tinymnist.compare import compare


@pytest.fixture
def results(tmp_path):
    runs = step4_runs() + [make_result(1, s, [98.0, 98.9, 99.1 + 0.02 * s], train=[98.5, 99.5, 99.8]) for s in range(3)]
    return write_results(tmp_path / "results", runs)


def test_report_sections_and_figures(results, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out)]) == 0
    md = (out / "REPORT.md").read_text()
    for section in ("## Step 1:", "## Step 4:", "**Target.**", "**Result**", "**Analysis.**", "vs the seed write-up"):
        assert section in md, section
    # Step 4 final epochs 99.55, 99.48, 99.50: mean 99.51, min 99.48, max 99.55, sample std 0.035.
    assert "| final-epoch test accuracy | 99.51 | 99.48 | 99.55 | 0.04 |" in md
    # last-3 means: 99.50, 99.433, 99.477 -> 99.47
    assert re.search(r"\| mean test accuracy, last 3 epochs \| 99\.47 \| 99\.43 \| 99\.50 \|", md)
    assert "≥ 99.4 in each of the last 3 epochs for 3 of 3 seeds." in md
    assert "Over-fits: train 99.80 vs test 99.12 at epoch 3 (gap +0.68, mean of 3 seeds)." in md
    assert "Gate: PASS, every seed meets its gate (3/3 seeds, 95% CI [44%, 100%] pass their own checks)." in md
    # Seed statistics of the last-3 means 99.50, 99.433, 99.477: t-interval with 2 degrees of freedom.
    assert "| last-3 mean test accuracy | 3 | 99.470 | 0.034 | [99.386, 99.554] |  |" in md
    assert "![seeds](seeds.png)" in md
    assert "Seed write-up: best test 99.47; ours 99.51 mean of best epochs (+0.04)" in md  # 99.55, 99.48, 99.50
    for png in ("accuracy.png", "loss.png", "lr.png", "params_vs_accuracy.png", "seeds.png"):
        assert (out / png).stat().st_size > 5000, png
        assert f"]({png})" in md


def test_report_benchmark_tables(results, tmp_path):
    import json

    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "machine_info": {"cpu": {"brand_raw": "Test CPU"}},
                "benchmarks": [
                    {
                        "name": "test_train[4-harness]",
                        "stats": {"median": 0.0128, "rounds": 5},
                        "extra_info": {
                            "kind": "train",
                            "step": 4,
                            "device": "cpu",
                            "pipeline": "harness",
                            "batch": 128,
                        },
                    },
                    {
                        "name": "test_infer[ort-1]",
                        "stats": {"median": 0.0002, "rounds": 9},
                        "extra_info": {"kind": "inference", "engine": "onnxruntime", "batch": 1, "threads": 2},
                    },
                ],
            }
        )
    )
    out = tmp_path / "r"
    assert main(["report", str(results), "--out", str(out), "--bench", str(bench)]) == 0
    md = (out / "REPORT.md").read_text()
    assert "| test_train[4-harness] | 4 | cpu | harness | 128 | 10,000 | 5 |" in md
    assert "| test_infer[ort-1] | onnxruntime | 1 | 2 | 0.200 | 5,000 |" in md


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "bad" / "step4").mkdir(parents=True)
    (tmp_path / "bad" / "step4" / "seed0.json").write_text('{"schema_version": 99}')
    assert main(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def _pair(tmp_path, old, new):
    return write_results(tmp_path / "old", old), write_results(tmp_path / "new", new)


def test_compare_no_regression(tmp_path, capsys):
    a, b = _pair(tmp_path, step4_runs(), step4_runs())
    c = compare(a, b)
    lines, regs = c.lines(), c.regressions
    assert regs == [] and any(
        line.startswith("| 4 | last-3 mean test acc | 99.47 (n=3) | 99.47 (n=3) | +0.00 | fixed rule") for line in lines
    )
    assert main(["compare", str(a), str(b)]) == 0
    assert "no regression" in capsys.readouterr().out


def test_compare_fixed_rule_below_five_seeds(tmp_path):
    worse = ((99.40, 99.41, 99.42),) * 3  # last-3 mean 99.41 vs 99.47: -0.06, within 0.10
    a, b = _pair(tmp_path, step4_runs(), step4_runs(worse))
    assert compare(a, b).regressions == []
    base = [make_result(4, s, RAMP + [99.6, 99.6, 99.6]) for s in range(3)]
    drop = [make_result(4, s, RAMP + [99.45, 99.45, 99.45]) for s in range(3)]  # -0.15, gates pass
    a, b = _pair(tmp_path / "x", base, drop)
    regs = compare(a, b).regressions
    assert len(regs) == 1 and "last-3 mean test accuracy 99.45 vs 99.60 (-0.15; fixed rule" in regs[0]


def test_compare_gate_failure(tmp_path, capsys):
    bad = ((99.45, 99.50, 99.55), (99.40, 99.39, 99.70), (99.47, 99.46, 99.50))
    a, b = _pair(tmp_path, step4_runs(), step4_runs(bad))
    regs = compare(a, b).regressions
    assert len(regs) == 1 and "step 4 seed 1: epoch 14 test accuracy 99.39 < 99.40" in regs[0]
    assert main(["compare", str(a), str(b)]) == 1
    assert "REGRESSION" in capsys.readouterr().err


def test_compare_always_regressions(tmp_path):
    """A missing seed, an unfinished or short run, a NaN: regressions whatever the means say."""
    from dataclasses import replace

    a = write_results(tmp_path / "old", step4_runs())
    cases = {
        "one of three seeds": step4_runs()[:1],
        "interrupted": step4_runs()[:2] + [make_result(4, 2, RAMP + [99.5] * 3, status="interrupted")],
        # cut short: a diverged run with the epochs it finished (a *completed* one with fewer than planned is a
        # damaged file, exit 2, as the fourth independent sweep asked: see below)
        "short": step4_runs()[:2]
        + [
            replace(
                make_result(4, 2, RAMP, planned_epochs=15),
                status="diverged",
                diverged_at={"epoch": 13, "batch": 7, "loss": "nan"},
            )
        ],
    }
    # A NaN is recorded by a run that diverged (in a completed one it is a damaged file, exit 2).
    diverged = {"status": "diverged", "diverged_at": {"epoch": 15, "batch": "evaluation", "loss": "nan"}}
    nan = step4_runs()
    nan[0] = replace(nan[0], **diverged)
    nan[0].epochs[-1].test_acc = float("nan")
    cases["nan"] = nan
    two_nan = step4_runs()
    for i in range(2):
        two_nan[i] = replace(two_nan[i], **diverged)
        two_nan[i].epochs[-1].test_acc = float("nan")
    cases["two nan"] = two_nan
    for name, runs in cases.items():
        b = write_results(tmp_path / name.replace(" ", "_"), runs)
        assert compare(a, b).regressions, name
        assert main(["compare", str(a), str(b)]) == 1, name
    # "completed" with fewer epochs than planned, or none: no run writes that; a damaged file, named
    for name, planned, test in (("zero epochs", 15, []), ("completed short", 20, RAMP + [99.5] * 3)):
        b = write_results(
            tmp_path / name.replace(" ", "_"), step4_runs()[:2] + [make_result(4, 2, test, planned_epochs=planned)]
        )
        assert main(["compare", str(a), str(b)]) == 2, name


def test_compare_names_a_changed_recipe(tmp_path):
    from dataclasses import replace

    from tinymnist.recipes import STEP4

    other = replace(STEP4, lr=0.05)
    new = [
        make_result(4, s, RAMP + list(l3), recipe=other)
        for s, l3 in enumerate(((99.45, 99.50, 99.55), (99.40, 99.42, 99.48), (99.47, 99.46, 99.50)))
    ]
    a, b = _pair(tmp_path, step4_runs(), new)
    c = compare(a, b)
    lines, regs = c.lines(), c.regressions
    assert regs == [] and any("| recipe |" in line and "lr 0.1 -> 0.05" in line for line in lines)


# --- 16-seed populations: the statistical rule --------------------------------------------------------

# Last-3 values spread like real step-4 seeds (SD 0.037 of the last-3 mean), all above the gate even 0.08
# lower, so that the statistical rule alone decides.
POP = [99.58 + 0.008 * ((7 * i) % 16 - 7.5) for i in range(16)]


def _population(seeds, shift=0.0):
    return [
        make_result(4, s, RAMP + [v + shift - 0.02, v + shift, v + shift + 0.02])
        for s, v in zip(seeds, POP, strict=False)
    ]  # 8 seeds take the first 8 values


@pytest.mark.parametrize(
    "case, seeds, shift, code",
    [
        ("same values on other seeds", range(16, 32), 0.0, 0),
        ("every seed 0.08 lower", range(16), -0.08, 1),
        ("every seed 0.03 lower: under the minimum effect", range(16), -0.03, 0),
        ("half the seeds missing", range(8), 0.0, 1),
    ],
)
def test_compare_populations(tmp_path, capsys, case, seeds, shift, code):
    a = write_results(tmp_path / "old", _population(range(16)))
    new = _population(seeds, shift)
    b = write_results(tmp_path / "new", new)
    assert main(["compare", str(a), str(b)]) == code, case
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if case != "half the seeds missing":
        acc_row = next(line for line in out.splitlines() if "last-3 mean test acc" in line)
        # the same seeds are judged paired, seed by seed; other seeds by Welch's test
        test = "Welch t-test, p " if seeds[0] >= 16 else "paired t-test on 16 shared seeds, p "
        assert test in acc_row and acc_row.endswith("REGRESSION |" if code else "ok |")
        assert "| gate |  | PASS, 16/16 seeds, 95% CI [81%, 100%] |" in out
    else:
        assert "seeds [8, 9, 10, 11, 12, 13, 14, 15] missing" in err


def test_compare_minimum_effect_and_alpha_flags(tmp_path):
    a = write_results(tmp_path / "old", _population(range(16)))
    b = write_results(tmp_path / "new", _population(range(16, 32), -0.03))  # fresh seeds: Welch's test
    # -0.03 on 16 seeds of SD 0.037: one-sided p = 0.015. Big enough once the minimum effect is 0.02, but
    # significant only at alpha 0.05, not at the default 0.01.
    assert main(["compare", str(a), str(b), "--min-effect", "0.02"]) == 0
    assert main(["compare", str(a), str(b), "--min-effect", "0.02", "--alpha", "0.05"]) == 1
    assert main(["compare", str(a), str(b), "--alpha", "2"]) == 2


def test_compare_throughput(tmp_path):
    a, b = _pair(tmp_path, step4_runs(), step4_runs(ips=8_900.0))  # -11%
    regs = compare(a, b).regressions
    assert len(regs) == 1 and "training throughput 8,900 vs 10,000 images/s (-11.0%" in regs[0]
    a, b = _pair(tmp_path / "ok", step4_runs(), step4_runs(ips=9_100.0))  # -9%
    assert compare(a, b).regressions == []
    a, b = _pair(tmp_path / "other", step4_runs(), step4_runs(ips=5_000.0, device_name="Other CPU"))
    c = compare(a, b)
    lines, regs = c.lines(), c.regressions
    assert regs == [] and any("skipped: different machine" in line for line in lines)


def test_compare_benchmark_json(tmp_path):
    import json

    def bench(folder, median):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bench.json").write_text(
            json.dumps(
                {
                    "machine_info": {"cpu": {"brand_raw": "X"}},
                    "benchmarks": [
                        {
                            "name": "t",
                            "fullname": "benchmarks/x.py::t",
                            "stats": {"median": median},
                            "extra_info": {"batch": 100},
                        }
                    ],
                }
            )
        )

    a, b = _pair(tmp_path, step4_runs(), step4_runs())
    bench(a, 0.010)
    bench(b, 0.012)  # 10,000/s -> 8,333/s: -16.7%
    regs = compare(a, b).regressions
    assert len(regs) == 1 and "benchmark benchmarks/x.py::t" in regs[0]


def test_compare_missing_step_and_bad_dirs(tmp_path, capsys):
    a, b = _pair(tmp_path, step4_runs() + [make_result(1, 0, [99.1] * 3)], step4_runs())
    regs = compare(a, b).regressions
    assert regs == [f"step 1: no results in {b}"]
    assert main(["compare", str(tmp_path / "nope"), str(b)]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_experiment_log(tmp_path):
    import json

    from tests.synth import make_result
    from tinymnist.results import save_result

    exp = tmp_path / "exp"
    for name, lr in (("a-base", None), ("b-lr05", 0.05)):
        for s in range(3):
            r = make_result(4, s, RAMP + [99.40 + 0.01 * s, 99.45, 99.50])
            if lr:
                r.recipe["lr"] = lr
            save_result(exp / name, r)
    (exp / "notes.json").write_text(json.dumps({"b-lr05": "no better than 0.1"}))
    out = tmp_path / "experiments.md"
    assert main(["log", str(exp), "--out", str(out)]) == 0
    md = out.read_text()
    assert "| a-base | 4 | (the step's recipe) | 8,952 | 0: 99.40 99.45 99.50<br>1: 99.41 99.45 99.50" in md
    assert "| b-lr05 | 4 | lr=0.05 | 8,952 |" in md and "| 99.40 | 99.50 (3) | 13, 13, 13 |" in md
    assert md.rstrip().endswith("| PASS, 3/3 seeds | no better than 0.1 |")
    # the seventh independent sweep: a conclusion naming no experiment was dropped without a word
    (exp / "notes.json").write_text(json.dumps({"b-lr05": "no better", "b-lr5": "a typo"}))
    assert main(["log", str(exp), "--out", str(out)]) == 2
    assert out.read_text() == md  # nothing written
    # the eighth: nor one naming a folder that holds no results
    (exp / "empty").mkdir()
    (exp / "notes.json").write_text(json.dumps({"b-lr05": "no better", "empty": "a lost note"}))
    assert main(["log", str(exp), "--out", str(out)]) == 2
    assert out.read_text() == md


def test_compare_selected_steps(tmp_path):
    a, b = _pair(tmp_path, step4_runs(), step4_runs() + [make_result(1, 0, [98.0] * 3)])  # step 1 fails
    assert compare(a, b).regressions and compare(a, b, keys=["step4"]).regressions == []
