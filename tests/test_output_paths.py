"""Issue 30, cause 4: an output path where a folder or something else stands ends with exit 2 and one line
naming it; nothing of the user's is moved aside or lost, and no hidden temporary is left behind."""

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, overriding
from tinymnist.cli import main
from tinymnist.results import OutputError, atomic_write_bytes, atomic_write_pair


def _user_folder(path: Path) -> Path:
    (path / "keep").mkdir(parents=True)
    (path / "keep" / "notes.txt").write_text("mine")
    return path


def _intact(path: Path) -> bool:
    return (path / "keep" / "notes.txt").read_text() == "mine"


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_report_over_a_folder_named_report_md_exits_2_and_moves_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    _user_folder(out / "REPORT.md")
    assert main(["report", str(REPO / "reports" / "baseline"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tinymnist report: error: {out / 'REPORT.md'}: cannot write here (a folder stands where this file goes; "
        "nothing was moved); choose another output path"
    ]
    assert _intact(out / "REPORT.md") and _hidden(out) == [] and not (out / "accuracy.png").exists()


def test_train_over_a_folder_named_like_its_result_exits_2_before_it_trains(tmp_path, mnist_root, capsys):
    out = tmp_path / "o"
    _user_folder(out / "step4" / "seed0.json")
    argv = ["train", "--step", "4", "--seeds", "0", "--dry-run", "--quiet", "--data-root", str(mnist_root)]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed0.json: cannot write here (a folder stands where this file goes" in err
    assert _intact(out / "step4" / "seed0.json") and _hidden(out / "step4") == []
    # refused before the first epoch (the third sweep of issue 30): no checkpoint, never weights without a result
    assert not (out / "step4" / "seed0.pt").exists() and not (out / "step4" / "seed0.ckpt").exists()


def test_every_atomic_write_refuses_a_folder_or_a_fifo_before_anything_moves(tmp_path):
    folder = _user_folder(tmp_path / "a.json")
    fifo = tmp_path / "b.json"
    os.mkfifo(fifo)
    for target in (folder, fifo):
        with pytest.raises(OutputError, match="stands where this file goes; nothing was moved"):
            atomic_write_bytes(target, b"x")
    ok = tmp_path / "c.json"
    ok.write_bytes(b"old")
    with pytest.raises(OutputError):  # a pair: the good target is not replaced either
        atomic_write_pair([(ok, b"new"), (folder, b"x")])
    assert ok.read_bytes() == b"old" and _intact(folder) and fifo.exists() and _hidden(tmp_path) == []


def test_a_write_that_fails_at_the_os_is_a_user_error_naming_the_path(tmp_path):
    with pytest.raises(OutputError) as e:
        atomic_write_bytes("/proc/tinymnist-no/REPORT.md", b"x")
    assert str(e.value).startswith("/proc/tinymnist-no") and "choose another output path" in str(e.value)
    assert isinstance(e.value, OSError)  # callers that say what they kept still catch it


def test_a_symlink_to_nothing_is_refused_before_anything_is_written(tmp_path, capsys):
    """The second independent sweep: --markdown appended through a dangling link and made a file elsewhere,
    --junit-xml was refused only after training, and report wrote its plots before refusing REPORT.md."""
    base = REPO / "reports" / "baseline"
    dangling = tmp_path / "summary.md"
    dangling.symlink_to(tmp_path / "nowhere.md")
    assert main(["compare", str(base), str(base), "--steps", "4", "--markdown", str(dangling)]) == 2
    assert "nowhere.md, which does not exist" in capsys.readouterr().err and not (tmp_path / "nowhere.md").exists()
    junit = tmp_path / "j.xml"
    junit.symlink_to(tmp_path / "nowhere.xml")
    assert main(["train", "--step", "4", "--dry-run", "--out", str(tmp_path / "o"), "--junit-xml", str(junit)]) == 2
    assert "nowhere.xml, which does not exist" in capsys.readouterr().err
    assert not list((tmp_path / "o").rglob("seed*"))  # refused while parsing: nothing trained
    out = tmp_path / "rep"
    out.mkdir()
    (out / "REPORT.md").symlink_to(tmp_path / "nowhere-report.md")
    assert main(["report", str(base), "--out", str(out)]) == 2
    assert "which does not exist, stands here" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md"]  # no plots beside a report not written


def test_a_symlink_at_a_file_tinymnist_names_is_refused_and_one_at_a_path_the_user_named_is_followed(tmp_path, capsys):
    """The third independent sweep (F17): a link at seed0.pt inside OUT, or at a plot inside report's folder,
    was written through, replacing a file outside the folder that no one named. Now such a link is refused
    before anything is trained or written; a link at a path the user named (--junit-xml) is still theirs."""
    base = REPO / "reports" / "baseline"
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my picture")
    (tmp_path / "rep2").mkdir()
    (tmp_path / "rep2" / "accuracy.png").symlink_to(mine)
    assert main(["report", str(base), "--out", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "accuracy.png" in err and "remove the link" in err, err
    assert mine.read_bytes() == b"my picture" and sorted(p.name for p in (tmp_path / "rep2").iterdir()) == [
        "accuracy.png"
    ]
    out = tmp_path / "out"
    (out / "step2").mkdir(parents=True)
    (out / "step2" / "seed0.pt").symlink_to(mine)
    junit = tmp_path / "ci" / "j.xml"
    junit.parent.mkdir()
    theirs = tmp_path / "theirs.xml"
    theirs.write_text("old")
    junit.symlink_to(theirs)
    argv = ["train", "--step", "2", "--dry-run", "--out", str(out), "--junit-xml", str(junit)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "seed0.pt" in err and "remove the link" in err and mine.read_bytes() == b"my picture", err
    assert not (out / "step2" / "seed0.json").exists() and theirs.read_text() == "old"
    (out / "step2" / "seed0.pt").unlink()
    assert main(argv) == 0
    assert junit.is_symlink() and theirs.read_text().startswith("<?xml")  # the path the user named: followed


def test_an_interrupted_report_writes_nothing(tmp_path, monkeypatch, capsys):
    """The third independent sweep: SIGTERM while report drew its plots left 4 of 5 PNGs and no REPORT.md, and
    said "no result was being written". Plots and markdown are now written as one, after all are rendered."""
    import tinymnist.report as report
    from tests.conftest import interrupt_on_call

    monkeypatch.setattr(report, "_save_png", interrupt_on_call(report._save_png, 3))
    out = tmp_path / "rep"
    assert main(["report", str(REPO / "reports" / "baseline"), "--out", str(out)]) == 130
    assert not out.exists() or not any(out.iterdir())


def test_a_linked_folder_inside_out_or_the_store_is_refused_before_anything_is_written(tmp_path, mnist_root, capsys):
    """The fourth independent sweep of issue 30: OUT/step4 linked to a folder elsewhere took the seed's result,
    weights and lock there (exit 0), and STORE/<commit> linked elsewhere took history add's runs."""
    from tests.synth import make_result, write_results

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "step2").symlink_to(outside, target_is_directory=True)
    argv = ["train", "--step", "2", "--seeds", "0", "--dry-run", "--quiet", "--data-root", str(mnist_root)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "o/step2: cannot write here (a symlink to" in err and "remove the link" in err
    assert list(outside.iterdir()) == []
    # the sixth sweep: local jobs opened their logs through the link before the runner refused it
    (outside / "seed0.log").write_text("mine")
    assert main([*argv[:4], "0-1", *argv[5:], "--out", str(tmp_path / "o"), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "o/step2: cannot write here (a symlink to" in err, err
    assert sorted(p.name for p in outside.iterdir()) == ["seed0.log"] and (outside / "seed0.log").read_text() == "mine"
    (outside / "seed0.log").unlink()
    from dataclasses import replace

    runs = [replace(make_result(2, s, [90.0]), git_sha="0123456789ab") for s in range(3)]
    folder = write_results(tmp_path / "r", runs)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "0123456789ab").symlink_to(outside, target_is_directory=True)
    assert main(["history", "add", str(folder), "--store", str(tmp_path / "store")]) == 2
    assert "store/0123456789ab: cannot write here (a symlink to" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_a_symlink_at_a_seeds_lock_or_job_log_is_refused_and_what_it_names_kept(tmp_path, mnist_root, capsys):
    """The second helper of the fourth sweep: a link at OUT/step2/seed0.lock had "pid N on HOST" written into
    the file it named, and one at seed1.log had the job's output replace it."""
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    out = tmp_path / "o"
    (out / "step2").mkdir(parents=True)
    (out / "step2" / "seed0.lock").symlink_to(victim)
    argv = ["train", "--step", "2", "--dry-run", "--quiet", "--data-root", str(mnist_root), "--out", str(out)]
    assert main([*argv, "--seeds", "0", "--executor", "inline"]) == 2
    assert "seed0.lock: cannot write here (a symlink stands where tinymnist keeps its lock" in capsys.readouterr().err
    assert victim.read_text() == "precious"
    (out / "step2" / "seed0.lock").unlink()
    (out / "step2" / "seed1.log").symlink_to(victim)
    assert main([*argv, "--seeds", "0", "1", "--executor", "local", "--threads", "1"]) == 2
    assert "seed1.log: cannot write the job's log (a symlink stands there" in capsys.readouterr().err
    assert victim.read_text() == "precious"
    # the eighth sweep: a FIFO at the lock was exit 3 (ftruncate), one at the log hung the local driver for good
    (out / "step2" / "seed1.log").unlink()
    for name, executor in (("seed0.lock", ["--executor", "inline"]), ("seed1.log", ["--executor", "local"])):
        os.mkfifo(out / "step2" / name)
        assert main([*argv, "--seeds", "0", "1", *executor, "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name}: cannot write here (something that is not a regular file" in err
        (out / "step2" / name).unlink()


def test_a_smoke_run_over_a_completed_full_run_is_refused_before_it_trains(tmp_path, mnist_root, capsys):
    """The fourth independent sweep: a dry run into a folder holding a completed 15-epoch result replaced it
    (exit 0) with an 11% smoke result: hours of a core lost to a test that proves nothing about accuracy."""
    from tests.synth import RAMP, make_result, write_results

    out = write_results(tmp_path / "o", [make_result(2, 0, RAMP + [99.3] * 3)])
    before = (out / "step2" / "seed0.json").read_bytes()
    argv = ["train", "--step", "2", "--seeds", "0", "--dry-run", "--quiet", "--data-root", str(mnist_root)]
    for weights in (False, True):  # a committed reference (reports/baseline) keeps the JSON alone
        if weights:
            (out / "step2" / "seed0.pt").write_bytes(b"weights")
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds a completed full run of step 2 seed 0, which this smoke run" in err
        assert (out / "step2" / "seed0.json").read_bytes() == before
    assert (out / "step2" / "seed0.pt").read_bytes() == b"weights"


def test_an_output_the_user_names_is_refused_where_a_runs_record_stands(tmp_path, capsys):
    """The fifth independent sweep: ``--junit-xml OUT/step4/seed0.json`` replaced a result with XML and
    ``--markdown`` appended to one, so hours of training were lost to a typo. A run's record (seedN.json, .pt,
    .ckpt, .lock, .log) is never an output; through a link to one neither. Another name beside them is."""
    import shutil

    from tests.synth import RAMP, make_result, write_results

    base = tmp_path / "base"
    shutil.copytree(REPO / "reports" / "baseline", base)
    record = base / "step4" / "seed0.json"
    kept = record.read_bytes()
    (tmp_path / "link.xml").symlink_to(record)
    for flag, path in (
        ("--junit-xml", record),
        ("--markdown", record),
        ("--junit-xml", tmp_path / "link.xml"),
    ):
        assert main(["compare", str(base), str(base), flag, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "a run's record goes by this name" in err, err
        assert record.read_bytes() == kept
    pop = write_results(tmp_path / "pop", [make_result(4, s, RAMP + [99.5, 99.4 + s / 100, 99.5]) for s in range(12)])
    pop_record = pop / "step4" / "seed5.json"
    before = pop_record.read_bytes()
    assert main(["calibrate", str(pop), "--splits", "10", "--out", str(pop_record)]) == 2
    assert "a run's record goes by this name" in capsys.readouterr().err and pop_record.read_bytes() == before
    # the sixth sweep: a name that becomes a record only while the run trains is refused before it trains
    fresh = tmp_path / "fresh"
    argv = ["train", "--step", "2", "--dry-run", "--out", str(fresh), "--junit-xml", str(fresh / "step2" / "seed0.pt")]
    assert main(argv) == 2
    assert (
        "seed0.pt: a run's record goes by this name" in capsys.readouterr().err and not fresh.joinpath("step2").exists()
    )
    beside = base / "step4" / "seed0.summary.md"
    assert main(["compare", str(base), str(base), "--markdown", str(beside)]) == 0
    assert beside.read_text().strip() and record.read_bytes() == kept
    # the eighth sweep: a hard link to a record, appended to, made the record unreadable
    hard = tmp_path / "hard.md"
    os.link(record, hard)
    assert main(["compare", str(base), str(base), "--markdown", str(hard)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hard.md: a file with 1 other name(s) (a hard link)" in err, err
    assert record.read_bytes() == kept


def test_one_file_is_not_two_outputs_and_a_folder_is_one_population(tmp_path, mnist_root, capsys):
    """The seventh independent sweep: ``--junit-xml X --markdown X`` left XML with markdown appended (exit 0);
    ``--junit-xml OUT/step2/seed0.json/j.xml`` made seed0.json a folder; ``--set lr=0.1 --seeds 0`` and then
    ``--seeds 1`` into one --out wrote a folder every reader refuses; options given twice kept the last."""
    base = str(REPO / "reports" / "baseline")
    same = tmp_path / "same.out"
    assert main(["compare", base, base, "--junit-xml", str(same), "--markdown", str(same)]) == 2
    assert "are one file" in capsys.readouterr().err and not same.exists()
    out = tmp_path / "o"
    argv = ["train", "--step", "2", "--dry-run", "--quiet", "--data-root", str(mnist_root), "--out", str(out)]
    assert main([*argv, "--junit-xml", str(out / "step2" / "seed0.json" / "j.xml")]) == 2
    assert "a run's record goes by this name" in capsys.readouterr().err and not (out / "step2").exists()
    assert main([*argv, "--seeds", "0", "--set", "lr=0.1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed0.json: seed 0 here was trained with another recipe" in err, err
    assert "lr 0.1 -> 0.05" in err and not (out / "step2" / "seed1.json").exists()
    assert main([*argv, "--seeds", "1", "--set", "lr=0.1"]) == 0  # the same recipe: one population
    capsys.readouterr()
    assert main(["compare", base, base, "--steps", "1", "--steps", "2"]) == 2
    assert "argument --steps: given twice" in capsys.readouterr().err
    # the eighth: an on/off flag too, and the refused command leaves no --out it made while parsing behind
    first, second = tmp_path / "first" / "o", tmp_path / "second"
    assert main([*overriding(argv, "--out", str(first)), "--dry-run", "--out", str(second)]) == 2
    assert "argument --dry-run: given twice" in capsys.readouterr().err
    assert not (tmp_path / "first").exists() and not second.exists()
    # --markdown naming the folder the run will make trained, then was refused at writing: refused before training
    fresh = tmp_path / "fresh"
    assert main([*overriding(argv, "--out", str(fresh)), "--markdown", str(fresh / "step2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step2's seeds in a folder of this name" in err and not (fresh / "step2").exists()
