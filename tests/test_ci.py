"""JUnit XML, job summaries and shards: what CI reads, read back the way CI reads it."""

import argparse
import json
import time
from pathlib import Path

import pytest
import xmlschema
from junitparser import Error, Failure, JUnitXml

import tinymnist.data
import tinymnist.verdict
from tests.synth import RAMP, make_result, step4_runs, write_results
from tinymnist.cli import main
from tinymnist.commands import train as train_cmd

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).with_name("junit.xsd")))


def _cases(path):
    SCHEMA.validate(str(path))
    return [c for suite in JUnitXml.fromfile(str(path)) for c in suite]


def _props(case) -> dict:
    # junitparser 5 reads results and times; a case's properties are read from its element
    return {p.get("name"): p.get("value") for p in case._elem.iter("property")}


@pytest.fixture
def judged(monkeypatch, small_mnist):
    """Train as if the 1,024-image subset were the full dataset: accuracy is judged, as in tox -e accuracy."""
    monkeypatch.setattr(tinymnist.data, "load_mnist", lambda *a, **k: small_mnist)
    monkeypatch.setattr(tinymnist.verdict, "TRAIN_IMAGES", len(small_mnist.train_x))
    monkeypatch.setattr(tinymnist.verdict, "TEST_IMAGES", len(small_mnist.test_x))


def test_train_judges_accuracy_and_writes_junit(judged, tmp_path, capsys):
    """One epoch on 1,024 images cannot reach 99.4: train must say FAIL and exit 1 (not NOT JUDGED and 0)."""
    junit, md = tmp_path / "train.xml", tmp_path / "summary.md"
    argv = ["train", "--step", "4", "--seeds", "0", "1", "--epochs", "3", "--out", str(tmp_path / "o"), "--quiet"]
    argv += ["--executor", "inline"]  # in this process: the subset above stands for the full data here only
    assert main([*argv, "--junit-xml", str(junit), "--markdown", str(md)]) == 1
    out = capsys.readouterr()
    assert "step 4: FAIL" in out.out and "GATE FAILED: step 4 seed 0: epoch" in out.err
    cases = _cases(junit)
    seeds = [c for c in cases if c.name.startswith("seed")]
    assert [c.name for c in seeds] == ["seed 0", "seed 1"]
    for c in seeds:
        (problem,) = c.result
        assert isinstance(problem, Failure) and "test accuracy" in problem.message and "< 99.40" in problem.message
        p = _props(c)
        assert int(p["params"]) == 8952 and 0 <= float(p["final"]) <= 100 and float(p["seconds"]) > 0
        assert c.time > 0
    (step,) = [c for c in cases if c.name.startswith("recipe verdict")]
    assert step.is_passed  # no step-level rule of its own failed: the seeds' failures are their own cases
    assert "| step 4 | 2 | FAIL |" in md.read_text()


def test_a_diverged_run_is_an_error_not_a_failure(judged, tmp_path):
    junit = tmp_path / "t.xml"
    argv = ["train", "--step", "1", "--seeds", "0", "--epochs", "2", "--set", "lr=100", "--out", str(tmp_path / "o")]
    assert main([*argv, "--quiet", "--junit-xml", str(junit)]) == 1
    (seed,) = [c for c in _cases(junit) if c.name == "seed 0"]
    (problem,) = seed.result
    assert isinstance(problem, Error) and "diverged" in problem.message


def test_compare_junit_and_markdown(tmp_path):
    a = write_results(tmp_path / "a", step4_runs())
    b = write_results(tmp_path / "b", step4_runs(last3=((99.0, 99.0, 99.0),) * 3))
    junit, md = tmp_path / "c.xml", tmp_path / "c.md"
    md.write_text("earlier step's summary\n")
    assert main(["compare", str(a), str(b), "--junit-xml", str(junit), "--markdown", str(md)]) == 1
    cases = {c.name: c for c in _cases(junit)}
    acc = cases["last-3 mean test acc"]
    (problem,) = acc.result
    assert isinstance(problem, Failure) and "last-3 mean test accuracy 99.00" in problem.message
    assert float(_props(acc)["effect"]) < -0.4
    assert cases["train images/s"].is_passed
    text = md.read_text()
    assert text.startswith("earlier step's summary\n")  # appended, as $GITHUB_STEP_SUMMARY collects
    assert "| 4 | last-3 mean test acc |" in text and "REGRESSION" in text


def _args(*argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    train_cmd.add_parser(sub)
    return p.parse_args(["train", *argv])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_shards_are_disjoint_and_cover_the_list(n):
    from tinymnist.recipes import get_recipe

    recipes = [get_recipe(1), get_recipe(4)]
    every = [(r.key, s) for r in recipes for s in range(100, 116)]
    got = []
    for k in range(1, n + 1):
        args = _args("--step", "1", "4", "--seeds", "100-115", "--shard", f"{k}/{n}")
        got.append([(r.key, s) for r, seeds in train_cmd.jobs_of(args, recipes) for s in seeds])
    flat = [j for shard in got for j in shard]
    assert sorted(flat) == sorted(every) and len(flat) == len(set(flat))
    assert max(map(len, got)) - min(map(len, got)) <= 1  # balanced


@pytest.mark.parametrize("value", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_exits_2(value, capsys):
    assert main(["train", "--step", "4", "--shard", value]) == 2
    assert "write K/N with 1 <= K <= N" in capsys.readouterr().err


def test_shard_outputs_gather_by_copying(judged, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(tinymnist.verdict, "TRAIN_IMAGES", 60_000)  # smoke runs again: only files matter here
    for k in (1, 2):
        argv = ["train", "--step", "4", "--seeds", "0-2", "--shard", f"{k}/2", "--dry-run", "--quiet"]
        assert main([*argv, "--out", str(tmp_path / f"s{k}")]) == 0
    merged = tmp_path / "merged"
    for k in (1, 2):
        shutil.copytree(tmp_path / f"s{k}", merged, dirs_exist_ok=True)
    seeds = sorted(json.loads(p.read_text())["seed"] for p in (merged / "step4").glob("seed*.json"))
    assert seeds == [0, 1, 2]
    assert main(["report", str(merged), "--out", str(tmp_path / "rep")]) == 0


def test_two_overrides_of_one_field_exit_2(tmp_path, capsys):
    assert main(["train", "--step", "4", "--epochs", "1", "--set", "epochs=3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--epochs 1 and --set epochs=3 both set epochs" in err and err.count("\n") == 1
    assert main(["train", "--step", "4", "--set", "lr=0.1", "--set", "lr=0.2", "--out", str(tmp_path)]) == 2
    assert "--set lr=0.1 and --set lr=0.2 both set lr" in capsys.readouterr().err


def test_the_seed_cap_counts_every_range_together(tmp_path, capsys):
    argv = ["train", "--step", "4", "--seeds", "0-9999", "10000-10005", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "more than 10,000 seeds in all" in capsys.readouterr().err


def test_a_subset_as_large_as_the_data_is_not_a_smoke_run(judged, tmp_path, small_mnist, capsys):
    """train and report judge the same files the same way (issue 18, B4)."""
    out = tmp_path / "o"
    argv = ["train", "--step", "4", "--seeds", "0", "--epochs", "1", "--out", str(out), "--quiet"]
    code = main([*argv, "--train-subset", str(len(small_mnist.train_x) + 5)])
    said = capsys.readouterr().out
    assert code == 1 and "SMOKE" not in said and "step 4: FAIL" in said
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    assert "Gate: FAIL" in (tmp_path / "r" / "REPORT.md").read_text()


def test_a_fresh_sample_must_be_at_least_as_large(tmp_path):
    from tinymnist.compare import compare

    base = write_results(tmp_path / "a", step4_runs())
    fresh = [make_result(4, s, RAMP + [99.5, 99.5, 99.5]) for s in (10, 11)]
    regs = compare(base, write_results(tmp_path / "b", fresh)).regressions
    assert any("2 fresh seeds against the baseline's 3" in r for r in regs)
    bigger = [make_result(4, s, RAMP + [99.5, 99.5, 99.5]) for s in (10, 11, 12)]
    assert compare(base, write_results(tmp_path / "c", bigger)).regressions == []


def test_a_subset_run_is_not_judged_anywhere_it_is_shown(tmp_path, mnist_root):
    """Issue 32: a 2-epoch run on 2,000 images showed a passing JUnit case, "1/1 seeds" in the summary and "the
    10,000 MNIST test images" in REPORT.md. Not judged is not judged everywhere."""
    junit, md, out = tmp_path / "t.xml", tmp_path / "summary.md", tmp_path / "o"
    argv = ["train", "--step", "4", "--seeds", "0", "1", "--epochs", "2", "--train-subset", "2000"]
    argv += ["--test-subset", "1000", "--data-root", str(mnist_root), "--out", str(out), "--quiet"]
    assert main([*argv, "--junit-xml", str(junit), "--markdown", str(md)]) == 0
    cases = _cases(junit)
    assert [c.name for c in cases] == ["seed 0", "seed 1", "recipe verdict (seeds present, mean final, one recipe)"]
    assert all(c.is_skipped and not c.is_passed for c in cases)
    assert "smoke run (2,000 training images an epoch, 2 epochs, 1,000 test images)" in cases[0].result[0].message
    summary = md.read_text()
    assert "NOT JUDGED (smoke run)" in summary and "not judged (smoke run)" in summary
    assert "1/1" not in summary and "2/2" not in summary and "PASS" not in summary
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "REPORT.md").read_text()
    assert "on 1,000 of the 10,000 MNIST test images, after training on 2,000 training images an epoch" in report
    assert "percent on the 10,000" not in report and "NOT JUDGED" in report


def test_the_accuracy_axis_holds_a_curve_below_98_and_zooms_on_full_runs():
    from tinymnist.report import accuracy_axis

    assert accuracy_axis(step4_runs()) == (98.0, 100.0)  # full runs: the last tenths
    low = [make_result(4, 0, [85.2, 90.4])]
    lo, hi = accuracy_axis(low)
    assert lo <= 85.2 and hi == 100.0 and lo >= 0


def test_an_interval_with_a_negative_bound_prints_with_brackets():
    from tinymnist.stats import Rate, SeedStats

    s = SeedStats.of([1.0, 23.0])
    assert s.ci().startswith("[-") and ", " in s.ci() and s.ci().endswith("]")
    assert Rate.of(1, 8).fmt() == "1/8 seeds, 95% CI [2%, 47%]"


def test_compare_junit_names_a_half_point_drop_of_one_seed(tmp_path):
    import shutil

    from tests.conftest import REPO

    base = REPO / "reports" / "baseline"
    new = tmp_path / "new"
    shutil.copytree(base, new)
    path = new / "step4" / "seed0.json"
    d = json.loads(path.read_text())
    for e in d["epochs"]:
        e["test_acc"] -= 0.5
    path.write_text(json.dumps(d))
    junit = tmp_path / "c.xml"
    assert main(["compare", str(base), str(new), "--junit-xml", str(junit)]) == 1
    cases = _cases(junit)
    (acc,) = [c for c in cases if c.classname == "tinymnist.compare.4" and c.name.startswith("last-3 mean")]
    (problem,) = acc.result
    assert isinstance(problem, Failure) and "step 4: last-3 mean test accuracy" in problem.message
    assert "(-0.17;" in problem.message  # the drop: 0.5 points on one of three seeds
    assert all(c.is_passed for c in cases if c.classname != "tinymnist.compare.4")


def test_three_shards_of_six_seeds_write_disjoint_results_whose_union_is_all(tmp_path, mnist_root):
    found = []
    for k in (1, 2, 3):
        out = tmp_path / f"s{k}"
        argv = ["train", "--step", "4", "--seeds", "0-5", "--shard", f"{k}/3", "--dry-run", "--quiet"]
        assert main([*argv, "--data-root", str(mnist_root), "--out", str(out)]) == 0
        found.append({json.loads(p.read_text())["seed"] for p in (out / "step4").glob("seed*.json")})
    assert set().union(*found) == set(range(6)) and sum(map(len, found)) == 6


@pytest.mark.parametrize("flag", ["--junit-xml", "--markdown"])
def test_an_unwritable_ci_file_fails_before_any_training(tmp_path, capsys, flag):
    """The known defect of session 4: a bad --junit-xml or --markdown was found only after training."""
    from tinymnist.cli import main

    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "out.xml"  # a folder that is a file: cannot be created
    started = time.perf_counter()
    assert main(["train", "--step", "4", "--out", str(tmp_path / "o"), flag, str(bad)]) == 2
    assert time.perf_counter() - started < 30  # refused at parsing: no data read, nothing trained
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: {bad}: cannot create its folder" in err
    assert not (tmp_path / "o" / "step4").exists()
    assert main(["train", "--step", "4", "--out", str(tmp_path / "o"), flag, str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
