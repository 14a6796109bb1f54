"""Regression forensics (issue 19): the results store, the history across commits, and bisect, on a throwaway git
repository that holds this project over five commits, one of which really makes step 2 worse.

The configuration: step 2, 1 epoch on the first 6,000 training images, judged on the first 2,000 test images,
seeds 0-4, one seed at a time. Measured on this machine (2026-12-03, `tinymnist train --step 2 --seeds 0-4
--epochs 1 --train-subset 6000 --test-subset 2000 --population 1`): final accuracy mean 69.59, SD 5.97 over
the five seeds. The bad commit drops step 2's learning rate from 0.05 to 0.002: mean 23.10, SD 3.93. The drop,
46 points, is about 8 SDs of the seed noise; the test asserts that margin from its own runs. Commits that do
not touch training give the same figures to the last bit, which bisect takes as "clearly no regression".
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import train_env
from tinymnist.cli import main
from tinymnist.history import add, history, machine_key
from tinymnist.results import config_key, load_results
from tools.forensics import CONFIG, demo_repo


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Five commits of this project's package; the third lowers step 2's learning rate 25-fold (the same
    repository ``python -m tools.forensics`` bisects for the README)."""
    return demo_repo(tmp_path_factory.mktemp("demo") / "project")


def _state(repo):
    return (
        git(repo, "worktree", "list", "--porcelain"),
        git(repo, "status", "--porcelain"),
        git(repo, "rev-parse", "HEAD"),
    )


def test_bisect_names_the_commit_that_broke_step_2_and_history_marks_it(project, tmp_path, mnist_root, capsys):
    repo, shas = project
    store = tmp_path / "store"
    before = _state(repo)
    env = train_env(mnist_root)  # one thread: the in-process bisect below sets the same
    config = [*CONFIG, "--data-root", str(mnist_root)]
    argv = ["bisect", shas[0], shas[-1], "--step", "2", *config, "--store", str(store), "--repo", str(repo)]
    # in a subprocess from another folder, as a user runs it
    done = subprocess.run(
        [sys.executable, "-m", "tinymnist", *argv], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"first bad commit: {shas[2]} step 2: a smaller learning rate"
    assert any(shas[1][:12] in line and line.endswith("good") for line in lines)
    # the checkout is as it was: no worktree, no bisect state, nothing changed
    assert _state(repo) == before
    assert not (repo / ".git" / "BISECT_LOG").exists()
    # the store is plain results folders, one per commit, configuration and machine, that compare reads as is
    tested = sorted(p.name for p in store.iterdir())
    assert shas[0][:12] in tested and shas[2][:12] in tested and shas[4][:12] in tested
    (cfg,) = [p.name for p in (store / shas[0][:12]).iterdir()]
    assert cfg == "e1-train6000-test2000"  # the bisect's own configuration (tools.forensics.CONFIG)
    machine = next((store / shas[0][:12] / cfg).iterdir()).name
    good = load_results(store / shas[0][:12] / cfg / machine)["step2"]
    bad = load_results(store / shas[2][:12] / cfg / machine)["step2"]
    # each run proves it ran its commit's own code: the tinymnist it imported is in that commit's worktree
    for sha, runs in ((shas[0], good), (shas[2], bad)):
        assert all(f"/wt-{sha[:12]}/" in r.extra["tinymnist"] for r in runs), [r.extra for r in runs]
    lg = [r.test_acc[-1] for r in good]
    lb = [r.test_acc[-1] for r in bad]
    sd = max(_sd(lg), _sd(lb))
    assert sum(lg) / 5 - sum(lb) / 5 > 5 * sd  # the drop is far beyond the seed noise at this size
    folders = [str(store / sha[:12] / cfg / machine) for sha in (shas[0], shas[2])]
    assert main(["compare", *folders]) == 1

    # a second bisect over a span with no regression reuses the store and says so (exit 4)
    capsys.readouterr()
    torch.set_num_threads(1)  # the machine the store holds: the subprocess above ran with one thread
    argv2 = ["bisect", shas[0], shas[1], "--step", "2", *config, "--store", str(store), "--repo", str(repo)]
    assert main(argv2) == 4
    out = capsys.readouterr().out
    assert "no regression" in out.splitlines()[-1]

    # history over the same store marks the same commit, and writes HISTORY.md, HISTORY.json and a plot
    series = history(store, repo, ["step2"])
    assert [p.commit.sha for p in series[0].regressions] == [shas[2]]
    hist = tmp_path / "hist"
    assert main(["history", "show", "--store", str(store), "--out", str(hist), "--repo", str(repo)]) == 0
    md = (hist / "HISTORY.md").read_text()
    row = next(line for line in md.splitlines() if shas[2][:12] in line)
    assert "**REGRESSION**" in row and "step 2: a smaller learning rate" in row
    assert (hist / "history-step2.png").stat().st_size > 1000
    data = json.loads((hist / "HISTORY.json").read_text())
    flagged = [c["commit"] for c in data["series"][0]["commits"] if c["regression"]]
    assert flagged == [shas[2]]


def _sd(xs):
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def test_bisect_refuses_too_few_seeds_and_a_non_repository(tmp_path, capsys):
    assert main(["bisect", "a", "b", "--step", "2", "--seeds", "0-2", "--store", str(tmp_path / "s")]) == 2
    assert "needs at least 5" in capsys.readouterr().err
    argv = ["bisect", "a", "b", "--step", "2", "--store", str(tmp_path / "s"), "--repo", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a git checkout" in err[0]


# --- the store -----------------------------------------------------------------------------------------------


def _results(tmp_path, name, sha="0123456789ab", lr=None):
    from dataclasses import replace

    from tests.synth import make_result, write_results

    runs = [replace(make_result(2, s, [90.0 + s]), git_sha=sha) for s in range(3)]
    if lr is not None:
        for r in runs:
            r.recipe["lr"] = lr
    folder = tmp_path / name
    write_results(folder, runs)
    return folder, runs


def test_store_adds_by_commit_and_machine_is_idempotent_and_refuses_another_run(tmp_path):
    folder, runs = _results(tmp_path, "r")
    store = tmp_path / "store"
    first = add(folder, store)
    assert len(first.new) == 3 and not first.unchanged
    dest = store / "0123456789ab" / config_key(runs[0]) / machine_key(runs[0]) / "step2"
    assert sorted(p.name for p in dest.iterdir()) == ["seed0.json", "seed1.json", "seed2.json"]
    before = {p: p.read_bytes() for p in store.rglob("*.json")}
    again = add(folder, store)
    assert not again.new and len(again.unchanged) == 3
    other, _ = _results(tmp_path, "o", lr=0.01)
    with pytest.raises(Exception, match=r"another run of step 2 seed 0 .*\(recipe lr 0.05 -> 0.01\)"):
        add(other, store)
    assert {p: p.read_bytes() for p in store.rglob("*.json")} == before  # all or none: nothing was added


def test_store_refuses_runs_without_a_commit(tmp_path, capsys):
    folder, _ = _results(tmp_path, "r", sha="abc123def456-dirty")
    assert main(["history", "add", str(folder), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recorded commit 'abc123def456-dirty'" in err[0] and "commit and train again" in err[0]
    assert not (tmp_path / "store").exists()  # nothing filed, and the folder parsing made is taken back


# --- commits that cannot be judged, and Ctrl-C ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """good, then a commit whose package does not import, then step 2's regression, then docs."""
    repo = tmp_path_factory.mktemp("broken") / "project"
    repo, shas = demo_repo(repo)  # five commits; rebuild the middle ones on top of the first
    git(repo, "reset", "-q", "--hard", shas[0])
    recipes = repo / "src" / "tinymnist" / "recipes.py"
    good_text = recipes.read_text()
    recipes.write_text(good_text + "\nraise ImportError('half-done refactor')\n")
    out = [shas[0], _commit(repo, "refactor: half done")]
    recipes.write_text(good_text.replace("    lr=0.05,\n", "    lr=0.002,\n"))
    out.append(_commit(repo, "step 2: a smaller learning rate, and the refactor undone"))
    (repo / "NOTES.md").write_text("notes\n")
    out.append(_commit(repo, "docs: notes"))
    return repo, out


def _commit(repo, message):
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def _bisect_whole_span(repo, shas, tmp_path, mnist_root) -> dict:
    """subprocess arguments of `tinymnist bisect FIRST LAST --step 2` on the test's configuration, run from
    another folder as a user runs it, into tmp_path/store."""
    argv = ["bisect", shas[0], shas[-1], "--step", "2", *CONFIG, "--data-root", str(mnist_root)]
    argv += ["--store", str(tmp_path / "store"), "--repo", str(repo)]
    return {
        "args": [sys.executable, "-m", "tinymnist", *argv],
        "text": True,
        "env": train_env(mnist_root),
        "cwd": tmp_path,
    }


def test_a_commit_that_does_not_run_is_skipped_named_and_leaves_the_culprit_undecided(broken, tmp_path, mnist_root):
    repo, shas = broken
    done = subprocess.run(**_bisect_whole_span(repo, shas, tmp_path, mnist_root), capture_output=True)
    assert done.returncode == 5, done.stdout + done.stderr  # undecided
    lines = done.stdout.strip().splitlines()
    skipped = next(line for line in lines if line.startswith(shas[1][:12]))
    assert "skip: its code does not run" in skipped and "half-done refactor" in skipped
    assert lines[-1].startswith("undecided: skipped commits leave the first bad commit among: ")
    assert shas[1][:12] in lines[-1] and shas[2][:12] in lines[-1]
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_ctrl_c_leaves_the_store_whole_and_no_worktree(broken, tmp_path, mnist_root):
    import os
    import signal
    import time

    repo, shas = broken
    store = tmp_path / "store"
    proc = subprocess.Popen(
        **_bisect_whole_span(repo, shas, tmp_path, mnist_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and git(repo, "worktree", "list", "--porcelain").count("worktree ") < 2:
        time.sleep(0.2)
    time.sleep(3)  # into the training of GOOD's seeds
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not list(Path(tempfile_dir()).glob("tinymnist-bisect-*/wt-*"))
    for p in store.rglob("*.json"):
        json.loads(p.read_text())  # every filed run is whole (the store may be empty)


def tempfile_dir():
    import tempfile

    return tempfile.gettempdir()


# --- the review's findings (session 5) -----------------------------------------------------------------------


def _tiny_repo(path):
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a").write_text("a\n")
    return path, _commit(path, "first")


def test_history_of_one_seed_and_a_stray_file_writes_json_with_nulls(tmp_path):
    from dataclasses import replace

    from tests.synth import make_result, write_results
    from tinymnist.history import to_json

    repo, sha = _tiny_repo(tmp_path / "repo")
    folder = tmp_path / "r"
    write_results(folder, [replace(make_result(2, 0, [90.0]), git_sha=sha[:12])])
    store = tmp_path / "store"
    add(folder, store)
    stray = next(store.rglob("seed0.json")).with_name("seed0.bak.json")
    stray.write_text("{}")  # not a results file name: neither listed nor read
    series = history(store, repo)
    data = json.loads(to_json(series))
    (point,) = data["series"][0]["commits"]
    assert point["n"] == 1 and point["ci"] == [None, None] and point["p"] is None
    assert main(["history", "show", "--store", str(store), "--out", str(tmp_path / "h"), "--repo", str(repo)]) == 0


def test_bisect_refuses_a_good_that_is_not_on_bads_first_parent_line(tmp_path, capsys):
    repo, first = _tiny_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "b").write_text("b\n")
    side = _commit(repo, "side")
    git(repo, "checkout", "-q", "main")
    (repo / "c").write_text("c\n")
    main_tip = _commit(repo, "main")
    argv = ["bisect", side, main_tip, "--step", "2", "--store", str(tmp_path / "s"), "--repo", str(repo)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a first-parent descendant" in err[0]
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_sweep_ranked_with_another_split_is_refused(tmp_path, capsys):
    from dataclasses import replace

    from tests.synth import make_result, write_results
    from tinymnist.recipes import get_recipe

    runs = []
    for s in range(2):
        r = make_result(5, s, [99.4] * 3, recipe=get_recipe(5), params=4972)
        epochs = [replace(e, val_acc=99.5, val_loss=0.02) for e in r.epochs]
        runs.append(replace(r, epochs=epochs, val_images=10_000, train_images=50_000))
    write_results(tmp_path / "sw", runs)
    argv = ["sweep", "--step", "5", "--seeds", "0-1", "--epochs", "3", "--out", str(tmp_path / "sw"), "--rank-only"]
    assert main([*argv, "--val-split", "5000"]) == 2
    assert "trained with a validation split of 10,000, not --val-split 5,000" in capsys.readouterr().err
    assert main([*argv, "--val-split", "10000"]) == 0
    assert "| 1 | step5 | (the base recipe) | 4,972 | 2 | 99.500" in (tmp_path / "sw" / "SWEEP.md").read_text()
    # the fourth independent sweep: a seed trained with another recipe was ranked under the candidate's name
    for seed in (0, 1):  # (one seed alone is refused by the folder's one-recipe rule: results.recipes_differ)
        path = tmp_path / "sw" / "step5" / f"seed{seed}.json"
        d = json.loads(path.read_text())
        d["recipe"]["lr"] = 0.2
        path.write_text(json.dumps(d))
    assert main([*argv, "--val-split", "10000"]) == 2
    err = capsys.readouterr().err
    assert "seed0.json: trained with another recipe than candidate step5's (lr 0.1 -> 0.2)" in err, err


def test_a_fifo_is_no_ci_file(tmp_path, capsys):
    import os

    fifo = tmp_path / "summary"
    os.mkfifo(fifo)
    assert main(["compare", str(tmp_path), str(tmp_path), "--markdown", str(fifo)]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_a_commit_without_its_own_tinymnist_is_skipped_not_run_with_the_installed_copy(tmp_path):
    """Cause 1 of issue 30: a tree where the package is not where the jobs look would import the copy
    installed in this environment, and file today's figures under the old commit."""
    from tinymnist.bisection import Bisector, Skip, Spec

    wt = tmp_path / "wt"
    (wt / "lib" / "tinymnist").mkdir(parents=True)  # the package, but not in src/ or at the top level
    (wt / "lib" / "tinymnist" / "__init__.py").write_text("")
    b = Bisector(tmp_path, tmp_path / "store", Spec(("--step", "2"), "step2"), [0], 5, "m", None, 1)
    try:
        with pytest.raises(Skip, match=r"before this interface \(no tinymnist package in its tree; .* would run"):
            b._probe(wt, {**b.env, "PYTHONPATH": str(wt)})
    finally:
        b.close()


def _show_one_commit(tmp_path, repo, sha):
    """Three step-2 runs of ``sha`` filed in a store, and ``history show`` of it: (store, HISTORY folder)."""
    from dataclasses import replace

    from tests.synth import make_result, write_results

    folder = tmp_path / "r"
    write_results(folder, [replace(make_result(2, s, [90.0 + s]), git_sha=sha[:12]) for s in range(3)])
    store, out = tmp_path / "store", tmp_path / "h"
    add(folder, store)
    assert main(["history", "show", "--store", str(store), "--out", str(out), "--repo", str(repo)]) == 0
    return store, out


def test_latin_1_commit_subjects_neither_crash_history_show_nor_bisect(tmp_path, capsys):
    """Issue 30, cause 5: old commits may carry Latin-1 subjects with no encoding header; git prints their bytes
    as they are, and a strict UTF-8 decode crashed history show and bisect with exit 3."""
    repo, first = _tiny_repo(tmp_path / "repo")
    # `git commit` would re-encode the message; an old or imported commit holds the raw bytes, as this one
    tree = git(repo, "write-tree")
    body = f"tree {tree}\nparent {first}\nauthor t <t@t> 0 +0000\ncommitter t <t@t> 0 +0000\n\n".encode()
    obj = tmp_path / "commit"
    obj.write_bytes(body + b"caf\xe9: r\xe9sum\xe9 du jour\n")  # Latin-1, no encoding header
    second = git(repo, "hash-object", "-t", "commit", "-w", str(obj))
    git(repo, "update-ref", "refs/heads/main", second)
    raw = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s"], capture_output=True).stdout
    assert b"\xe9" in raw  # the bytes really are not UTF-8
    store, out = _show_one_commit(tmp_path, repo, second)
    # shown as its bytes (the fourth independent sweep: U+FFFD said nothing of what the byte was)
    assert "caf\\xe9: r\\xe9sum\\xe9 du jour" in (out / "HISTORY.md").read_text()
    subjects = [c["subject"] for s in json.loads((out / "HISTORY.json").read_text())["series"] for c in s["commits"]]
    assert "caf\\xe9: r\\xe9sum\\xe9 du jour" in subjects
    argv = ["bisect", second, first, "--step", "2", "--store", str(store), "--repo", str(repo)]
    assert main(argv) == 2  # BAD before GOOD: a clean refusal, as for any subject
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("odd", ["\r", "\x1c", "\u2028"])
def test_a_subject_with_a_character_splitlines_splits_on_is_one_commit(tmp_path, capsys, odd):
    """The eighth independent sweep: a subject holding "\\r", "\\x1c" or U+2028 was split into two "lines" of
    git's output, and history show and bisect ended with exit 3. One commit, and its subject shown on one line."""

    repo, first = _tiny_repo(tmp_path / "repo")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"docs: a{odd}b")
    second = git(repo, "rev-parse", "HEAD")
    store, out = _show_one_commit(tmp_path, repo, second)
    subjects = [c["subject"] for s in json.loads((out / "HISTORY.json").read_text())["series"] for c in s["commits"]]
    assert subjects == [f"docs: a{odd}b"], subjects
    assert main(["bisect", second, first, "--step", "2", "--store", str(store), "--repo", str(repo)]) == 2
    assert "internal error" not in capsys.readouterr().err


def test_one_nights_16_seeds_from_two_cpu_models_are_one_accuracy_row_and_throughput_stays_per_machine(tmp_path):
    """Issue 30, cause 11: the nightly's 16 step-4 seeds come from runners with two CPU models; history split
    them into two rows of 8 and marked each untested. Accuracy is one population; throughput is per machine."""
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    repo, sha = _tiny_repo(tmp_path / "repo")
    store = tmp_path / "store"
    for cpu, seeds, ips in (("AMD EPYC 9B14", range(0, 8), 9000.0), ("Intel Xeon", range(8, 16), 6000.0)):
        runs = [
            replace(
                make_result(4, s, RAMP + [99.45, 99.46, 99.47 + s / 1000], ips=ips, device_name=cpu), git_sha=sha[:12]
            )
            for s in seeds
        ]
        add(write_results(tmp_path / cpu.replace(" ", "_"), runs), store)
    out = tmp_path / "h"
    assert main(["history", "show", "--store", str(store), "--out", str(out), "--repo", str(repo)]) == 0
    data = json.loads((out / "HISTORY.json").read_text())
    (series,) = data["series"]
    (row,) = series["commits"]
    assert row["n"] == 16 and row["pass_rate"] == [16, 16]
    assert row["images_per_second"] == {"cpu-AMD_EPYC_9B14-2t": 9000.0, "cpu-Intel_Xeon-2t": 6000.0}
    assert row["seeds_per_machine"] == {"cpu-AMD_EPYC_9B14-2t": 8, "cpu-Intel_Xeon-2t": 8}
    md = (out / "HISTORY.md").read_text()
    assert md.count(f"`{sha[:12]}`") == 1 and "cpu-Intel_Xeon-2t: 6,000 (8)" in md


def test_a_smoke_run_and_a_full_run_of_one_commit_are_two_configurations_not_a_collision(tmp_path):
    """Issue 30, cause 12: the store's key had no configuration, so a smoke bisect and a nightly of one commit
    collided (the second was refused as another run)."""
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    repo, sha = _tiny_repo(tmp_path / "repo")
    store = tmp_path / "store"
    full = [replace(make_result(4, s, RAMP + [99.5] * 3), git_sha=sha[:12]) for s in range(3)]
    one = {**full[0].recipe, "epochs": 1}  # a run records the recipe it trained: --epochs 1 changes both
    smoke = [replace(r, train_images=6000, test_images=2000, planned_epochs=1, recipe=one) for r in full]
    for r in smoke:
        r.epochs = r.epochs[:1]
    add(write_results(tmp_path / "full", full), store)
    added = add(write_results(tmp_path / "smoke", smoke), store)
    assert len(added.new) == 3
    configs = sorted(p.name for p in (store / sha[:12]).iterdir())
    assert configs == ["e1-train6000-test2000", "e15-train60000-test10000"]
    series = history(store, repo)
    assert sorted((s.key, s.config) for s in series) == [
        ("step4", "e1-train6000-test2000"),
        ("step4", "e15-train60000-test10000"),
    ]
    # A dry run of as many images (a few batches an epoch) is a third configuration, never the subset run's.
    dry = [replace(r, identity={**r.identity, "max_batches": 5}) for r in smoke]
    assert len(add(write_results(tmp_path / "dry", dry), store).new) == 3
    assert "e1-train6000-test2000-b5" in {p.name for p in (store / sha[:12]).iterdir()}
    # HISTORY.json gives smoke runs no pass rate: their gate was not judged (HISTORY.md says so too).
    from tinymnist.history import to_json

    rows = {x["configuration"]: x["commits"][0] for x in json.loads(to_json(history(store, repo)))["series"]}
    assert rows["e1-train6000-test2000"]["pass_rate"] is None and rows["e1-train6000-test2000"]["judged"] is False
    assert rows["e15-train60000-test10000"]["pass_rate"] == [3, 3] and rows["e15-train60000-test10000"]["judged"]


def test_a_results_file_cannot_file_a_run_outside_the_store(tmp_path, capsys):
    """The third independent sweep: "device": "../../x" was a folder name, and history add wrote outside."""
    folder, _ = _results(tmp_path, "r")
    path = folder / "step2" / "seed0.json"
    d = json.loads(path.read_text())
    d["device"] = "../../../escaped"
    path.write_text(json.dumps(d))
    assert main(["history", "add", str(folder), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "seed0.json" in err and "field device is '../../../escaped'" in err
    assert not (tmp_path / "escaped-unknown-1t").exists() and not any(tmp_path.parent.glob("escaped*"))


def test_a_bisect_with_tinymnist_commit_set_is_refused_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYMNIST_COMMIT", "0123456789abcdef")
    assert main(["bisect", "a", "b", "--step", "2", "--store", str(tmp_path / "s")]) == 2
    assert "TINYMNIST_COMMIT is set, but a bisect records each commit's own hash" in capsys.readouterr().err


def test_a_store_of_the_older_layout_is_still_read_and_not_filed_twice(tmp_path):
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    repo, sha = _tiny_repo(tmp_path / "repo")
    store = tmp_path / "store"
    runs = [replace(make_result(4, s, RAMP + [99.5] * 3), git_sha=sha[:12]) for s in range(3)]
    write_results(store / sha[:12] / machine_key(runs[0]), runs)  # STORE/<commit>/<machine>/<key>/seedS.json
    (series,) = history(store, repo)
    assert series.points[0].n == 3 and series.config == config_key(runs[0])
    again = add(write_results(tmp_path / "r", runs), store)
    assert not again.new and len(again.unchanged) == 3


def test_ctrl_c_during_a_bisect_files_the_seeds_that_finished(broken, tmp_path, mnist_root):
    """Issue 30, cause 2: a Ctrl-C lost the seeds that had finished, and then said the store kept them."""
    import os
    import signal
    import time

    repo, shas = broken
    temp = tmp_path / "tmp"
    temp.mkdir()
    kw = _bisect_whole_span(repo, shas, tmp_path, mnist_root)
    kw["env"] = {**kw["env"], "TMPDIR": str(temp)}  # this bisect's work folder, and no other's
    proc = subprocess.Popen(**kw, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    finished: set[int] = set()
    deadline = time.time() + 300
    while time.time() < deadline and not finished and proc.poll() is None:
        for p in temp.glob("tinymnist-bisect-*/out-*/step2/seed*.json"):
            try:
                if json.loads(p.read_text())["status"] == "completed":
                    finished.add(int(p.stem[4:]))
            except (ValueError, KeyError, OSError):
                pass  # being written
        time.sleep(0.05)
    assert finished, "no seed finished before the deadline"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    filed = {int(p.stem[4:]) for p in (tmp_path / "store").rglob("step2/seed*.json")}
    assert finished <= filed  # every seed that finished before the interrupt is in the store
    assert f"The same command continues from the store: {sys.executable} -m tinymnist bisect" in err
    for p in (tmp_path / "store").rglob("*.json"):
        assert json.loads(p.read_text())["status"] == "completed"


def test_history_says_when_a_commits_recipe_differs_from_the_previous_ones(tmp_path):
    """The third independent sweep: a run with --set lr=0.5 and a stock run at the next commit were one series,
    tested against each other, the change never said."""
    repo, first = _tiny_repo(tmp_path / "repo")
    (repo / "b").write_text("b\n")
    second = _commit(repo, "second")
    store = tmp_path / "store"
    add(_results(tmp_path, "one", first[:12])[0], store)
    add(_results(tmp_path, "two", second[:12], lr=0.5)[0], store)
    out = tmp_path / "h"
    assert main(["history", "show", "--store", str(store), "--out", str(out), "--repo", str(repo)]) == 0
    rows = [x for x in (out / "HISTORY.md").read_text().splitlines() if x.startswith("| `")]
    assert "recipe changed" not in rows[0] and "recipe changed: lr 0.05 -> 0.5" in rows[1]
    commits = json.loads((out / "HISTORY.json").read_text())["series"][0]["commits"]
    assert commits[1]["recipe_change"] == ["lr 0.05 -> 0.5"]


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda d: d["recipe"].update(lr=-1.0), "its recipe's lr=-1.0 is outside its range"),
        (lambda d: d["recipe"].update(step=99), "field step is 2, but its recipe's is 99"),
        (lambda d: d.update(step=99) or d["recipe"].update(step=99), "its recipe's step=99 is not a registered step"),
        (lambda d: d.update(step=3) or d["recipe"].update(step=3), "key 'step2' is a built-in step's, but step=3"),
        (lambda d: d["recipe"].update(batch_size=0), "its recipe's batch_size=0 is outside its range"),
        (lambda d: d["recipe"].update(schedule="sometimes"), "schedule='sometimes' is not known"),
        (lambda d: [e.update(val_acc=99.0, val_loss=0.1) for e in d["epochs"]], "but val_images is 0"),
        (lambda d: d.update(val_images=10000, train_images=50000), "val_images is 10000, but its epochs have no"),
        # the review of those fixes: what makes a run smoke, and which split its figures are, is the file's to say
        # in one way only
        (lambda d: d.update(identity={"max_batches": True}), "identity.max_batches is True, not an integer >= 1"),
        (lambda d: d.update(identity={"max_batches": 0}), "identity.max_batches is 0, not an integer >= 1"),
        (lambda d: d.update(extra={"judged_on": "val"}), "field extra.judged_on is never written by a run"),
        # the fifth sweep
        (lambda d: d.update(params=0), "field params is 0, not a number in [1, 1e+12]"),
        (lambda d: d.update(identity={"seed": 999}), "field identity.seed is 999, but the run's seed is 0"),
    ],
)
def test_history_add_refuses_a_recorded_recipe_or_split_no_run_can_have(tmp_path, capsys, edit, said):
    """The third independent sweep (F11): a recorded lr of -1, a step 99 and validation figures without a
    validation split were filed into the history as if a run could have had them."""
    folder, _ = _results(tmp_path, "r")
    path = folder / "step2" / "seed0.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    assert main(["history", "add", str(folder), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed0.json" in err and said in err, err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))


def test_a_bisect_row_keeps_its_columns_whatever_the_subject(tmp_path):
    """The third sweep (F24): a Latin-1 subject printed as its bytes took more columns than it counted, and a
    wide subject likewise, so the bisect table's columns wandered."""
    from tinymnist.bisection import Tested
    from tinymnist.history import Commit

    latin1 = b"caf\xe9 r\xe9sum\xe9 fix".decode("utf-8", "surrogateescape")
    # the ninth sweep: "\r", FS, U+2028 and an ESC colour code went to the terminal raw
    odd = "cr\rx fs\x1cy ls\u2028z \x1b[31mred"
    subjects = ["short", latin1, "x" * 80, "日本語の件名" * 6, "e\u0301clair (a combining accent)", odd]
    rows = [Tested(Commit("0" * 40, "2026-01-01", s), "good").row() for s in subjects]
    shown = [r.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for r in rows]
    import unicodedata

    def column_of_n(row: str) -> int:
        head = row[: row.index("  n=")]
        return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in head)

    assert len({column_of_n(r) for r in shown}) == 1, shown
    assert "caf\\xe9" in shown[1] and "..." in shown[2]
    assert "cr\\x0dx fs\\x1cy ls\\u2028z \\x1b[31" in rows[5] and rows[5].isprintable(), rows[5]


def test_a_dry_run_filed_before_the_key_had_its_batches_is_found_under_its_own_configuration(tmp_path):
    """The review of the third sweep's fixes: dry runs filed before the store's key had "-bN" sit in the folder
    of the full configuration; stored() listed them there and population() then found them under neither."""
    from dataclasses import replace

    from tests.synth import make_result, write_results
    from tinymnist.history import population, stored

    runs = [replace(make_result(2, s, [90.0]), git_sha="0123456789ab", identity={"max_batches": 5}) for s in range(3)]
    dry, full = config_key(runs[0]), config_key(replace(runs[0], identity={}))
    assert dry == full + "-b5"
    write_results(tmp_path / "store" / "0123456789ab" / full / machine_key(runs[0]), runs)  # the old key's folder
    assert [k[1] for k in stored(tmp_path / "store")] == [dry]
    assert len(population(tmp_path / "store", "0123456789ab", dry, machine_key(runs[0]), "step2")) == 3
    assert population(tmp_path / "store", "0123456789ab", full, machine_key(runs[0]), "step2") == []


def test_one_smoke_seed_cannot_hide_the_others_and_a_smoke_population_shows_no_pass_rate(tmp_path, capsys):
    """The fourth independent sweep: one seed on a subset among full ones made the whole folder "not judged",
    so a failing seed passed compare with exit 0; and calibrate and log showed a smoke population as 16/16."""
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    full = [make_result(4, s, RAMP + [99.5] * 3) for s in range(3)]
    base = write_results(tmp_path / "base", full)
    mixed = [replace(full[0], epochs=[replace(e, test_acc=90.0) for e in full[0].epochs]), full[1]]
    mixed.append(replace(full[2], test_images=5000))
    new = write_results(tmp_path / "mixed", mixed)
    assert main(["compare", str(base), str(new)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixed/step4: holds runs of 2 configurations" in err, err
    assert "e15-train60000-test5000: seeds 2" in err
    many = [make_result(4, s, RAMP + [99.5, 99.4 + s / 100, 99.5]) for s in range(12)]
    smoke = write_results(tmp_path / "smoke" / "sub", [replace(r, test_images=5000) for r in many])
    assert main(["calibrate", str(smoke), "--step", "4", "--out", str(tmp_path / "cal.json")]) == 0
    out = capsys.readouterr().out
    assert "gate pass rate not judged (smoke run)" in out and "12/12" not in out, out
    assert json.loads((tmp_path / "cal.json").read_text())["pass_rate"] is None
    assert main(["log", str(tmp_path / "smoke"), "--out", str(tmp_path / "log.md")]) == 0
    row = next(x for x in (tmp_path / "log.md").read_text().splitlines() if x.startswith("| sub |"))
    assert "NOT JUDGED (smoke run)" in row and "12/12 seeds" not in row


def test_a_folder_holding_seeds_of_two_recipes_is_refused_naming_them(tmp_path, capsys):
    """The fifth independent sweep: a seed retrained with another gate beside the others was judged by the
    first seed's gate, so the report's pass rate was another recipe's. Another seeds list is no other recipe."""
    from dataclasses import replace

    from tests.synth import RAMP, make_result, write_results

    runs = [make_result(4, s, RAMP + [99.5] * 3) for s in range(3)]
    strict = {**runs[2].recipe, "expect": {**runs[2].recipe["expect"], "min_last_k": 99.9}}
    mixed = write_results(tmp_path / "mixed", [*runs[:2], replace(runs[2], recipe=strict)])
    for argv in (["compare", str(mixed), str(mixed)], ["report", str(mixed), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "mixed/step4: seeds 0 and 2 were trained with different recipes" in err, err
        assert "expect" in err and "99.9" in err and "train --name KEY" in err
    assert not (tmp_path / "o" / "REPORT.md").exists()
    other_seeds = {**runs[2].recipe, "seeds": [7, 8]}
    same = write_results(tmp_path / "same", [*runs[:2], replace(runs[2], recipe=other_seeds)])
    assert main(["compare", str(same), str(same)]) == 0, capsys.readouterr().err


def test_one_commits_population_in_the_store_is_one_recipe(tmp_path, capsys):
    """The sixth independent sweep: runs trained with --set lr=0.5 under the key step2 were filed beside the
    commit's own step-2 runs, so history show made one row of two recipes and a bisect reused them."""
    from dataclasses import replace

    from tests.synth import make_result, write_results
    from tinymnist.recipes import STEP2

    repo, sha = _tiny_repo(tmp_path / "repo")
    store = tmp_path / "store"
    own = [replace(make_result(2, s, [90.0]), git_sha=sha[:12]) for s in range(3)]
    other = [
        replace(make_result(2, s, [95.0], recipe=replace(STEP2, lr=0.5)), git_sha=sha[:12], device_name="other")
        for s in range(3, 6)
    ]
    assert main(["history", "add", str(write_results(tmp_path / "a", own)), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["history", "add", str(write_results(tmp_path / "b", other)), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was added" in err and "different recipes (lr" in err, err
    assert len(list(store.rglob("seed*.json"))) == 3
    stray = next(store.rglob("seed0.json")).parent / "seed9.json"  # filed by hand, as an older version could
    stray.write_text(json.dumps(replace(other[0], seed=9, device_name=own[0].device_name).to_dict()))
    argv = ["history", "show", "--store", str(store), "--out", str(tmp_path / "h"), "--repo", str(repo)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeds 0 and 9 were trained with different recipes" in err, err
    assert not (tmp_path / "h" / "HISTORY.md").exists()


def test_a_store_folder_renamed_by_hand_is_refused_not_shown_under_another_commit(tmp_path, capsys):
    """The fourth independent sweep: runs of one commit, their folder renamed to another commit's hash, were
    shown in history under the other commit's row (exit 0)."""
    from dataclasses import replace

    from tests.synth import make_result, write_results

    repo, sha = _tiny_repo(tmp_path / "repo")
    store = tmp_path / "store"
    add(write_results(tmp_path / "r", [replace(make_result(2, s, [90.0]), git_sha=sha[:12]) for s in range(3)]), store)
    (store / sha[:12]).rename(store / "0123456789ab")
    argv = ["history", "show", "--store", str(store), "--out", str(tmp_path / "h"), "--repo", str(repo)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"a run of commit {sha[:12]}, filed under 0123456789ab" in err, err
    (store / "0123456789ab").rename(store / sha[:12])
    # the fifth sweep: a machine or configuration folder renamed by hand was trusted (CPU runs shown as an H100's)
    (config,) = (store / sha[:12]).iterdir()
    (machine,) = config.iterdir()
    machine.rename(config / "cuda-H100-1t")
    assert main(argv) == 2
    assert f"a run of machine {machine.name}, filed under cuda-H100-1t" in capsys.readouterr().err
    (config / "cuda-H100-1t").rename(machine)
    config.rename(config.parent / "e3-train600-test100")
    assert main(argv) == 2
    assert f"a run of configuration {config.name}, filed under e3-train600-test100" in capsys.readouterr().err


def test_a_bisect_names_a_tracked_recipe_file_by_its_path_in_each_commits_tree(tmp_path):
    """The fourth independent sweep: `bisect --recipe rec.toml` trained every commit with the checkout's copy,
    so a regression committed in the recipe file itself could not be found. A file git tracks is named by its
    path in the tree (each job runs in its commit's worktree); any other file by its absolute path."""
    from tinymnist.commands.bisect import _recipe_at_each_commit

    repo, _ = _tiny_repo(tmp_path / "repo")
    (repo / "recipes").mkdir()
    for name in ("tracked.toml", "untracked.toml"):
        (repo / "recipes" / name).write_text('name = "r"\nbase = "step2"\n')
    git(repo, "add", "recipes/tracked.toml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a recipe")
    outside = tmp_path / "elsewhere.toml"
    outside.write_text('name = "r"\nbase = "step2"\n')
    assert _recipe_at_each_commit((repo / "recipes" / "tracked.toml").resolve(), repo) == "recipes/tracked.toml"
    untracked = (repo / "recipes" / "untracked.toml").resolve()
    assert _recipe_at_each_commit(untracked, repo) == str(untracked)
    assert _recipe_at_each_commit(outside.resolve(), repo) == str(outside.resolve())


def test_a_bisect_with_a_linked_commit_folder_in_the_store_is_refused_before_it_trains(tmp_path, capsys):
    """The fifth independent sweep: a symlink at STORE/<commit> let the seeds train, then the commit was skipped
    ("its results cannot be filed") and BAD called no regression, exit 4."""
    repo, first = _tiny_repo(tmp_path / "repo")
    (repo / "f").write_text("2")
    git(repo, "add", "f")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "second")
    second = git(repo, "rev-parse", "HEAD")
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (store / first[:12]).symlink_to(outside, target_is_directory=True)
    argv = ["bisect", first, second, "--step", "2", "--store", str(store), "--repo", str(repo), "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"store/{first[:12]}: cannot write here (a symlink to" in err, err
    assert list(outside.iterdir()) == []
