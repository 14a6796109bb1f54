"""The validation split (--val-split), judging on it (--on val), and sweeps ranked on it (issue 21)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import tinymnist.data
from tests.synth import make_result, write_results
from tinymnist.cli import main
from tinymnist.data import split_validation, validation_indices
from tinymnist.recipes import RecipeError, get_recipe
from tinymnist.results import EpochStats, ResultsError, load_result, load_results
from tinymnist.sweep import Candidate, candidate_key, candidates, grid_points, rank, sweep_markdown
from tinymnist.verdict import is_smoke

SMALL = ["--epochs", "2", "--train-subset", "256", "--test-subset", "128", "--set", "batch_size=64", "--quiet"]


@pytest.fixture
def fast_data(small_mnist, monkeypatch):
    monkeypatch.setattr(tinymnist.data, "load_mnist", lambda *a, **k: small_mnist)
    return small_mnist


# --- the split ------------------------------------------------------------------------------------------


def test_the_split_is_stratified_by_hand_counts_and_fixed():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    np.random.default_rng(1).shuffle(labels)
    idx = validation_indices(labels, 10)
    # 10% of each class: 5, 3 and 2, counted by hand
    assert [int((labels[idx] == c).sum()) for c in (0, 1, 2)] == [5, 3, 2]
    assert list(idx) == sorted(set(idx.tolist())) and len(idx) == 10
    # one constant seed: the same images every call, whatever the global generators are doing
    np.random.seed(123)
    assert (validation_indices(labels, 10) == idx).all()
    # largest remainder: 7 of 100 is 3.5, 2.1 and 1.4 -> 4, 2, 1 (the biggest remainder gets the extra one)
    assert [int((labels[validation_indices(labels, 7)] == c).sum()) for c in (0, 1, 2)] == [4, 2, 1]


def test_the_split_of_mnist_is_disjoint_stratified_and_the_same_for_every_seed(mnist):
    a = split_validation(mnist, 10_000)
    assert len(a.train_x) == 50_000 and a.val_images == 10_000
    idx = validation_indices(mnist.train_y.numpy(), 10_000)
    assert (a.val_y == mnist.train_y[idx]).all()
    # the training set is every other image, in order, so train + val are the 60,000 with none twice
    rest = np.setdiff1d(np.arange(60_000), idx)
    assert (a.train_y == mnist.train_y[rest]).all() and len(np.intersect1d(rest, idx)) == 0
    share = np.bincount(mnist.train_y.numpy(), minlength=10) / 60_000
    got = np.bincount(a.val_y.numpy(), minlength=10) / 10_000
    assert np.abs(got - share).max() < 1e-4  # at most one image per class off its exact share
    # a subset after the split leaves the validation set whole
    assert (a.subset(1000, 100).val_y == a.val_y).all()


def test_training_with_a_split_records_it_and_judges_the_whole_training_set(fast_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--step", "2", *SMALL, "--seeds", "0", "--val-split", "300", "--out", str(out)]) == 0
    r = load_result(out / "step2" / "seed0.json")
    assert r.val_images == 300 and r.identity["val_images"] == 300 and r.train_images == 256
    assert all(e.val_acc is not None and 0 <= e.val_acc <= 100 and e.val_loss > 0 for e in r.epochs)
    assert r.schema_version == 3
    # 50,000 trained + 10,000 held out is the full training set: not a smoke run
    full = make_result(2, 0, [99.0])
    assert is_smoke(replace(full, train_images=50_000, val_images=0))
    assert not is_smoke(replace(full, train_images=50_000, val_images=10_000))


def test_resume_with_another_split_is_refused_naming_it(fast_data, tmp_path, monkeypatch, capsys):
    import tinymnist.engine as engine
    from tests.conftest import interrupt_on_call

    out = tmp_path / "out"
    base = ["train", "--step", "2", *SMALL, "--seeds", "0", "--out", str(out)]
    real = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", interrupt_on_call(real, 3))  # epoch 2 test evaluation (1: test, 2: val)
    assert main([*base, "--val-split", "300"]) == 130
    monkeypatch.setattr(engine, "evaluate", real)
    assert main([*base, "--val-split", "200", "--resume"]) == 2
    assert "val_images 300 -> 200" in capsys.readouterr().err


def test_a_split_out_of_range_is_one_line(tmp_path, capsys):
    assert main(["train", "--step", "2", "--val-split", "60000", "--out", str(tmp_path)]) == 2
    assert "--val-split: 60000: hold out between 1 and 50,000" in capsys.readouterr().err


# --- judging on validation ------------------------------------------------------------------------------


def _with_val(r, val):
    epochs = [replace(e, val_acc=v, val_loss=0.01) for e, v in zip(r.epochs, val, strict=True)]
    return replace(r, epochs=epochs, val_images=10_000, train_images=50_000)


def test_on_val_judges_the_validation_figures_and_refuses_runs_without_them(tmp_path, capsys):
    runs = [_with_val(make_result(4, s, [99.0, 99.1, 99.2]), [99.5, 99.5, 99.6]) for s in range(3)]
    write_results(tmp_path / "r", runs)
    on_test, on_val = load_results(tmp_path / "r")["step4"], load_results(tmp_path / "r", "val")["step4"]
    assert on_test[0].test_acc == [99.0, 99.1, 99.2] and on_val[0].test_acc == [99.5, 99.5, 99.6]
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep"), "--on", "val"]) == 0
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "judged on validation" in text and "99.53" in text  # the last-3 mean of 99.5, 99.5, 99.6
    # Every figure named for what it is (the third sweep: tables, target and analysis said "test").
    assert "| best validation accuracy |" in text and "validation accuracy ≥ 99.40 in each of the last 3" in text
    assert "test accuracy" not in text and "best test" not in text and "vs test" not in text
    # A gate failed on validation figures says so: "test accuracy" there would send the user to the wrong figures.
    low = [_with_val(make_result(4, s, [99.0, 99.1, 99.2]), [99.5, 99.3, 99.35]) for s in range(3)]
    write_results(tmp_path / "low", low)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "r"), str(tmp_path / "low"), "--on", "val"]) == 1
    out = capsys.readouterr()
    assert "epoch 2 validation accuracy 99.30 < 99.40" in out.out + out.err
    assert "test accuracy" not in out.out + out.err
    write_results(tmp_path / "plain", [make_result(4, 0, [99.0, 99.1, 99.2])])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "plain"), str(tmp_path / "plain"), "--on", "val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed0.json: no validation figures" in err[0] and "--on test" in err[0]


def test_schema_2_files_read_with_no_validation_figures(tmp_path):
    d = make_result(4, 0, [99.0]).to_dict()
    d["schema_version"] = 2
    del d["val_images"]
    for e in d["epochs"]:
        del e["val_loss"], e["val_acc"]
    (tmp_path / "step4").mkdir()
    (tmp_path / "step4" / "seed0.json").write_text(json.dumps(d))
    r = load_result(tmp_path / "step4" / "seed0.json")
    assert r.val_images == 0 and r.epochs[0].val_acc is None


@pytest.mark.parametrize("bad", ["val_acc", "val_loss"])
def test_validation_fields_are_typed_on_load(tmp_path, bad, capsys):
    d = make_result(4, 0, [99.0]).to_dict()
    d["epochs"][0][bad] = "high"
    (tmp_path / "step4").mkdir()
    (tmp_path / "step4" / "seed0.json").write_text(json.dumps(d))
    with pytest.raises(ResultsError, match=f"epochs\\[1\\].{bad} is 'high'"):
        load_result(tmp_path / "step4" / "seed0.json")
    d["epochs"][0][bad] = 140.0 if bad == "val_acc" else 1.0
    (tmp_path / "step4" / "seed0.json").write_text(json.dumps(d))
    if bad == "val_acc":
        with pytest.raises(ResultsError, match="outside"):
            load_result(tmp_path / "step4" / "seed0.json")


# --- sweeps ---------------------------------------------------------------------------------------------


def test_candidates_keys_grid_and_duplicates():
    base = get_recipe(5)
    assert grid_points(["lr=0.05,0.1", "batch_size=32,64"]) == [
        ["lr=0.05", "batch_size=32"],
        ["lr=0.05", "batch_size=64"],
        ["lr=0.1", "batch_size=32"],
        ["lr=0.1", "batch_size=64"],
    ]
    cands = candidates(base, [["batch_size=32"]], ["lr=0.05,0.2"], [])
    assert [c.key for c in cands] == ["step5", "step5.batch_size-32", "step5.lr-0.05", "step5.lr-0.2"]
    assert cands[1].recipe.batch_size == 32 and cands[1].recipe.expect == base.expect
    # the same changes name the same folder on every run (a rerun resumes); odd characters get a hash
    odd = candidate_key(base, ['model_kwargs={"dropout": 0.1}'])
    assert odd == candidate_key(base, ['model_kwargs={"dropout": 0.1}']) and len(odd) <= 64
    assert odd != candidate_key(base, ['model_kwargs={"dropout": 0.2}'])
    with pytest.raises(RecipeError, match="are one recipe"):
        candidates(base, [["lr=0.1"]], [], [])  # lr=0.1 is step 5's own: the base twice
    with pytest.raises(RecipeError, match="--grid lr: expected KEY=V1,V2"):
        grid_points(["lr"])


def _val_runs(key_recipe, seeds, val_last, test_last):
    """Runs whose validation and test figures disagree, so that a ranking on test would differ."""
    out = []
    for s, v, t in zip(seeds, val_last, test_last, strict=True):
        r = make_result(5, s, [t, t, t], recipe=key_recipe, params=4000)
        out.append(_with_val(r, [v, v, v]))
    return out


def test_rank_orders_on_validation_only_and_tests_against_the_top(tmp_path):
    base = get_recipe(5)
    cands = candidates(base, [["batch_size=32"], ["max_scale=0.09"]], [], [])
    seeds = list(range(8))
    spread = np.array([-0.04, -0.03, -0.02, -0.01, 0.01, 0.02, 0.03, 0.04])  # mean 0, SD 0.03
    noise = [spread, spread[::-1], np.roll(spread, 3)]
    # validation: batch_size=32 best by 0.2 (resolvable), max_scale second by 0.01 behind it (not);
    # test: the opposite order, far apart, so that any use of test would show
    val = {cands[0].key: 99.2 + noise[0], cands[1].key: 99.4 + noise[1], cands[2].key: 99.39 + noise[2]}
    test = {cands[0].key: 99.9, cands[1].key: 98.0, cands[2].key: 98.5}
    for c in cands:
        write_results(tmp_path, _val_runs(c.recipe, seeds, val[c.key], [test[c.key]] * 8))
    ranked = rank(cands, load_results(tmp_path, "val"), seeds)
    assert [r.candidate.key for r in ranked] == ["step5.batch_size-32", "step5.max_scale-0.09", "step5"]
    assert ranked[0].versus_top is None
    assert not ranked[1].versus_top.regression  # 0.01 apart: not resolved
    assert ranked[2].versus_top.regression and ranked[2].versus_top.p < 0.01  # 0.2 below: resolved
    assert ranked[0].last_k.mean == pytest.approx(float(np.mean(val[cands[1].key])))
    md = sweep_markdown(ranked, "tinymnist sweep ...", 10_000, seeds)
    for figure in ("99.90", "98.00", "98.50", "99.9 ", "98.0 "):
        assert figure not in md  # no test figure anywhere in SWEEP.md
    assert "the data does not resolve this difference" in md
    assert "| 3 | step5 | (the base recipe) | 4,000 | 8 |" in md


def test_rank_with_too_few_seeds_says_untested():
    base = get_recipe(5)
    cands = candidates(base, [["batch_size=32"]], [], [])
    runs = {c.key: _val_runs(c.recipe, [0, 1], [99.4 + i / 10, 99.5], [99.0, 99.0]) for i, c in enumerate(cands)}
    ranked = rank(cands, runs, [0, 1])
    assert all(r.versus_top is None for r in ranked)
    assert "untested (n < 5 a side)" in sweep_markdown(ranked, "cmd", 10_000, [0, 1])


def test_unfinished_candidates_rank_last(tmp_path):
    base = get_recipe(5)
    cands = candidates(base, [["batch_size=32"]], [], [])
    runs = {cands[0].key: _val_runs(cands[0].recipe, [0], [99.0], [99.0])}
    ranked = rank(cands, runs, [0, 1])
    assert [r.candidate.key for r in ranked] == ["step5", "step5.batch_size-32"]
    assert not ranked[0].complete and ranked[1].last_k is None
    assert "(unfinished)" in sweep_markdown(ranked, "cmd", 1, [0, 1])
    assert isinstance(ranked[0].candidate, Candidate)


def test_sweep_end_to_end_is_resumable_and_prints_no_test_figure(fast_data, tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--step", "2", "--variant", "lr=0.1", "--seeds", "0-1", "--epochs", "1"]
    argv += ["--train-subset", "256", "--val-split", "200", "--out", str(out), "--population", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test" not in printed.replace(str(tmp_path), "")
    text = (out / "SWEEP.md").read_text()
    assert "step2.lr-0.1" in text and "smoke run: not judged" in text
    first = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*.json")}
    assert len(first) == 4
    assert main(argv) == 0  # a rerun keeps every completed seed: nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*.json")} == first
    assert all(load_result(p).val_images == 200 for p in first)


def test_a_sweep_needs_a_validation_split(tmp_path, capsys):
    assert main(["sweep", "--step", "5", "--seeds", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--val-split N is required" in err and len(err.strip().splitlines()) == 1
    assert not list(Path(tmp_path).iterdir())


def test_epoch_stats_default_to_no_validation():
    e = EpochStats(1, 0.1, 99.0, 0.1, 99.0, 0.01, 1.0, 0.1, 100.0)
    assert e.val_acc is None and e.val_loss is None


def test_named_variants_name_their_folder():
    from tinymnist.sweep import parse_variant

    assert parse_variant("anchor: model=blocks lr=0.1") == ("anchor", ["model=blocks", "lr=0.1"])
    assert parse_variant("lr=0.1 batch_size=32") == (None, ["lr=0.1", "batch_size=32"])
    cands = candidates(get_recipe(5), ["anchor: model=blocks", "batch_size=32"], [], [])
    assert [c.key for c in cands] == ["step5", "step5.anchor", "step5.batch_size-32"]
    with pytest.raises(RecipeError, match="no changes"):
        candidates(get_recipe(5), ["empty: "], [], [])
    with pytest.raises(RecipeError, match="must be a folder name"):
        parse_variant("a/b: lr=0.1")


def test_on_validation_moves_each_validation_figure_into_the_test_slots_and_says_so():
    r = make_result(4, 0, [99.0, 99.1, 99.2])
    r = replace(r, extra={"note": "kept"})
    v = _with_val(r, [0.0, 99.5, 99.6])  # 0.0: a real figure, not a missing one
    v = replace(v, epochs=[replace(e, val_loss=loss) for e, loss in zip(v.epochs, [0.0, 0.2, 0.3], strict=True)])
    judged = v.on_validation("somewhere")
    assert [e.test_acc for e in judged.epochs] == [0.0, 99.5, 99.6]
    assert [e.test_loss for e in judged.epochs] == [0.0, 0.2, 0.3]
    assert [e.train_acc for e in judged.epochs] == [e.train_acc for e in r.epochs]
    assert judged.extra == {"note": "kept", "judged_on": "val"}
    assert v.extra == {"note": "kept"}  # the run itself is unchanged


@pytest.mark.parametrize(
    "change",
    [
        lambda r: replace(r, val_images=0),  # figures, but no split recorded
        lambda r: replace(r, epochs=[replace(r.epochs[0], val_acc=None), *r.epochs[1:]]),
        lambda r: replace(r, epochs=[*r.epochs[:2], replace(r.epochs[2], val_loss=None)]),
    ],
    ids=["no-split", "an-epoch-without-val-acc", "an-epoch-without-val-loss"],
)
def test_on_validation_refuses_a_run_without_every_validation_figure(change):
    r = change(_with_val(make_result(4, 0, [99.0, 99.1, 99.2]), [99.5, 99.5, 99.6]))
    with pytest.raises(ResultsError) as e:
        r.on_validation("results/step4/seed0.json")
    assert str(e.value) == (
        "results/step4/seed0.json: no validation figures (trained without --val-split); judge it with --on test, "
        "or train with --val-split N"
    )


def test_an_interrupted_run_is_not_counted_in_a_ranking(tmp_path):
    """A seed cut off mid-training (its results file says interrupted) is a training in progress: it adds
    nothing to n or the mean, and leaves its candidate unfinished."""
    from dataclasses import replace

    base = get_recipe(5)
    (cand,) = candidates(base, [], [], [])
    seeds = list(range(8))
    runs = _val_runs(cand.recipe, seeds, [99.4] * 8, [99.4] * 8)
    runs[7] = replace(runs[7], status="interrupted", epochs=runs[7].epochs[:1])
    runs[7].epochs[0].val_acc = 97.0
    write_results(tmp_path, runs)
    (ranked,) = rank([cand], load_results(tmp_path, "val"), seeds)
    assert ranked.last_k.n == 7 and ranked.last_k.mean == pytest.approx(99.4) and not ranked.complete
    assert "| 1 | step5 (unfinished) | (the base recipe) | 4,000 | 7 |" in sweep_markdown(
        [ranked], "tinymnist sweep ...", 10_000, seeds
    )


def test_a_smoke_candidate_ranks_after_the_full_ones_and_is_tested_against_none():
    """The seventh independent sweep: a candidate cut short (a hand-edited results folder) with a higher mean
    ranked first, and every full candidate was then "worse" than it, a difference the data cannot make."""
    from dataclasses import replace

    base = get_recipe(5)
    cands = candidates(base, [["batch_size=32"]], [], [])
    seeds = list(range(6))
    spread = [99.30, 99.32, 99.28, 99.31, 99.29, 99.30]
    runs = {c.key: _val_runs(c.recipe, seeds, spread, [99.0] * 6) for c in cands}
    cut = cands[1].key
    runs[cut] = [
        replace(r, identity={**r.identity, "max_batches": 2}, epochs=[replace(e, test_acc=99.9) for e in r.epochs])
        for r in runs[cut]
    ]
    ranked = rank(cands, runs, seeds)
    assert [r.candidate.key for r in ranked] == ["step5", cut] and ranked[1].smoke
    assert ranked[1].versus_top is None
    # the eighth sweep: SWEEP.md said "untested (n < 5 a side)" of it, with 6 seeds; the reason is the smoke run
    md = sweep_markdown(ranked, "tinymnist sweep", 10000, seeds)
    assert next(row for row in md.splitlines() if f"| {cut} " in row).endswith("| untested (smoke run) |"), md
    assert "Top two" not in md  # one full candidate: no pair to speak of
