"""One job list, run anywhere (issue 29): --list-jobs, the local executor's processes, their failures and
interrupts, --threads, and the import layers around dispatch. Real processes throughout; the SLURM executor's
tests against a real cluster are tests/test_slurm.py."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, start_until_checkpoints, train_env
from tinymnist.cli import main

# Step 2 for one epoch on 2,000 images, judged on 500: a few seconds a seed, one thread.
TINY = ["--step", "2", "--epochs", "1", "--train-subset", "2000", "--test-subset", "500"]
LONGER = ["--step", "2", "--epochs", "3", "--train-subset", "12000", "--test-subset", "500"]
TIMING = {"seconds", "eval_seconds", "images_per_second"}


def figures(path: Path) -> list[dict]:
    """A result's per-epoch figures without the clock: what two runs of one seed must agree on to the bit."""
    return [{k: v for k, v in e.items() if k not in TIMING} for e in json.loads(path.read_text())["epochs"]]


def tm(args, mnist_root, cwd=REPO, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tinymnist", *args], env=train_env(mnist_root), cwd=cwd, text=True, **kw
    )


def test_list_jobs_is_one_resumable_train_per_seed_and_each_job_runs_on_its_own(tmp_path, mnist_root, capsys):
    out = tmp_path / "out"
    argv = ["train", *TINY, "--seeds", "0-2", "--set", "lr=0.04", "--name", "exp", "--out", str(out)]
    assert main([*argv, "--list-jobs"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [j["name"] for j in jobs] == ["exp seed 0", "exp seed 1", "exp seed 2"]
    for s, j in enumerate(jobs):
        assert j["argv"][1:4] == ["-m", "tinymnist", "train"] and j["cwd"] == os.getcwd()
        assert j["argv"][-1] == "--resume" and ["--executor", "inline"] == j["argv"][-3:-1]
        assert j["result"] == str(out.absolute() / "exp" / f"seed{s}.json")
        assert j["env"] == {} and "--threads" not in j["argv"]  # the machine that runs it decides
    assert not out.joinpath("exp").exists()  # listing trains nothing

    # an engine runs a listed job as it is (here: from another folder); it writes the result it names
    done = subprocess.run(jobs[1]["argv"], cwd=tmp_path, env=train_env(mnist_root), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(Path(jobs[1]["result"]).read_text())
    assert (result["seed"], result["recipe"]["lr"], result["recipe"]["key"]) == (1, 0.04, "exp")
    # and again: a job is idempotent (--resume over its completed result trains nothing and says PASS or not)
    again = subprocess.run(jobs[1]["argv"], cwd=tmp_path, env=train_env(mnist_root), capture_output=True, text=True)
    assert again.returncode == 0 and json.loads(Path(jobs[1]["result"]).read_text()) == result


def test_shards_of_the_job_list_are_disjoint_and_whole_for_train_and_sweep(tmp_path, capsys):
    def listed(argv):
        assert main(argv) == 0
        return [j["name"] for j in json.loads(capsys.readouterr().out)]

    train = ["train", "--step", "2", "4", "--seeds", "0-4", "--out", str(tmp_path), "--list-jobs"]
    sweep = ["sweep", "--step", "2", "--seeds", "0-3", "--val-split", "500", "--variant", "a: lr=0.04"]
    sweep += ["--grid", "batch_size=64,256", "--out", str(tmp_path), "--list-jobs"]
    for argv, total in ((train, 10), (sweep, 16)):
        whole = listed(argv)
        shards = [listed([*argv, "--shard", f"{k}/3"]) for k in (1, 2, 3)]
        assert len(whole) == total and sorted(sum(shards, [])) == sorted(whole)
        assert all(len(set(a) & set(b)) == 0 for a in shards for b in shards if a is not b)
    assert "step2.a seed 3" in whole and "step2.batch_size-256 seed 0" in whole


def test_local_jobs_equal_the_same_seeds_trained_in_one_process(tmp_path, mnist_root):
    """Two jobs at once on this machine's cores, one thread each, give every figure of the same seeds trained
    one after another in one process with one thread."""
    a, b = tmp_path / "jobs", tmp_path / "inline"
    done = tm(["train", *TINY, "--seeds", "0-2", "--out", str(a), "--population", "2"], mnist_root, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 jobs on local processes, 1 thread(s) each" in done.stdout
    assert (
        "seed 2: completed" in done.stdout and "step 2: NOT JUDGED (smoke run)" in done.stdout
    )  # a subset is not judged
    inline = ["train", *TINY, "--seeds", "0-2", "--out", str(b), "--executor", "inline", "--threads", "1"]
    assert tm(inline, mnist_root, capture_output=True).returncode == 0
    for s in range(3):
        assert figures(a / "step2" / f"seed{s}.json") == figures(b / "step2" / f"seed{s}.json")
        assert json.loads((a / "step2" / f"seed{s}.json").read_text())["threads"] == 1
        assert (a / "step2" / f"seed{s}.log").is_file()  # each job's output is kept beside its result


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _start(argv, mnist_root, ckpts):
    """``tinymnist ARGV`` in a session of its own (so a signal to its group is a terminal's Ctrl-C), returned
    once every one of ``ckpts`` exists."""
    cmd = [sys.executable, "-m", "tinymnist", *argv]
    popen = dict(start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return start_until_checkpoints(cmd, train_env(mnist_root), *ckpts, **popen)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_every_job_and_the_resume_finishes_bit_identical(tmp_path, mnist_root):
    ref = tmp_path / "ref"
    assert tm(["train", *LONGER, "--seeds", "0", "1", "--out", str(ref)], mnist_root).returncode == 0
    out = tmp_path / "run"
    argv = ["train", *LONGER, "--seeds", "0", "1", "--out", str(out)]
    proc = _start(argv, mnist_root, [out / "step2" / f"seed{s}.ckpt" for s in (0, 1)])
    kids = _children(proc.pid)
    assert len(kids) == 2  # one process per job, two at once
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the driver's group (each job has its own)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT): the running jobs were stopped" in err and "Traceback" not in err
    assert not any(Path(f"/proc/{k}").exists() for k in kids)  # no job left running
    resume = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    assert resume.endswith("--resume")
    done = subprocess.run(resume, shell=True, env=train_env(mnist_root), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for s in (0, 1):
        assert figures(out / "step2" / f"seed{s}.json") == figures(ref / "step2" / f"seed{s}.json")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_job_killed_by_the_system_is_named_and_exits_6(tmp_path, mnist_root):
    out = tmp_path / "run"
    proc = _start(["train", *LONGER, "--seeds", "0", "1", "--out", str(out)], mnist_root, [out / "step2/seed0.ckpt"])
    victim = next(k for k in _children(proc.pid) if "--seeds\x000\x00" in Path(f"/proc/{k}/cmdline").read_text())
    os.kill(victim, signal.SIGKILL)  # what the out-of-memory killer does
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err
    assert "tinymnist train: step 2 seed 0: the job died (killed by SIGKILL (out of memory?))" in err
    assert "seed 1: completed" in stdout  # the other job finished and is kept
    assert "GATE FAILED: step 2: seeds [0] missing" in err  # a partly failed list is never a pass


def test_a_jobs_own_error_is_one_line_naming_the_job(tmp_path, mnist_root):
    from tinymnist.runner import seed_lock

    out = tmp_path / "run"
    with seed_lock(out, "step2", 1):  # another writer holds seed 1
        done = tm(["train", *TINY, "--seeds", "0", "1", "--out", str(out)], mnist_root, capture_output=True)
    assert done.returncode == 2, done.stderr
    line = next(x for x in done.stderr.splitlines() if "seed 1" in x and "being written" in x)
    assert line.startswith("tinymnist train: step 2 seed 1: error: ") and "(log: " in line
    assert "Traceback" not in done.stderr and "seed 0: completed" in done.stdout


def test_threads_are_set_per_job_and_wait_passively(tmp_path, mnist_root, capsys):
    assert (
        main(["train", "--step", "2", "--seeds", "0", "1", "--threads", "3", "--list-jobs", "--out", str(tmp_path)])
        == 0
    )
    jobs = json.loads(capsys.readouterr().out)
    assert all(j["argv"][j["argv"].index("--threads") + 1] == "3" for j in jobs)
    assert all(j["env"]["OMP_NUM_THREADS"] == "3" and j["env"]["OMP_WAIT_POLICY"] == "PASSIVE" for j in jobs)
    # a run in this process takes the thread count it is given, and records it
    argv = ["train", *TINY, "--seeds", "0", "--threads", "1", "--executor", "inline", "--out", str(tmp_path / "a")]
    assert tm(argv, mnist_root, capture_output=True).returncode == 0
    assert json.loads((tmp_path / "a" / "step2" / "seed0.json").read_text())["threads"] == 1


def test_a_wait_policy_the_user_set_is_kept(monkeypatch):
    from tinymnist.threads import thread_env

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert thread_env(2) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert thread_env(1)["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_sweep_shard_trains_its_share_and_rank_only_ranks_them_all(tmp_path, mnist_root):
    base = ["sweep", "--step", "2", "--seeds", "0", "1", "--val-split", "500", "--train-subset", "2000"]
    base += ["--epochs", "1", "--variant", "slow: lr=0.01", "--out", str(tmp_path)]
    one = tm([*base, "--shard", "1/2"], mnist_root, capture_output=True)
    assert one.returncode == 0, one.stderr
    assert "shard 1/2: 2 runs" in one.stdout and not (tmp_path / "SWEEP.md").exists()
    trained = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/seed*.json"))
    assert trained == ["step2.slow/seed0.json", "step2/seed0.json"]
    assert tm([*base, "--shard", "2/2"], mnist_root, capture_output=True).returncode == 0
    ranked = tm([*base, "--rank-only"], mnist_root, capture_output=True)
    assert ranked.returncode == 0 and "n = 2 per candidate" in (tmp_path / "SWEEP.md").read_text()


def test_the_runner_imports_no_executor_and_the_executors_no_runner():
    """The layers: commands choose an executor; an executor runs jobs and never imports the runner, the engine
    or torch; the runner runs one process's seeds and never imports an executor."""
    checks = {
        "tinymnist.runner": "tinymnist.executors",
        "tinymnist.executors.local, tinymnist.executors.slurm": ("tinymnist.runner", "tinymnist.engine", "torch"),
    }
    for module, banned in checks.items():
        code = f"import sys, {module}; bad = [m for m in sys.modules if m.startswith({banned!r})]; assert not bad, bad"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_failures_add_up_to_one_code_each_named_by_its_job(tmp_path):
    from tinymnist.executors import Ended, Job, failure_code

    done = tmp_path / "seed0.json"
    done.write_text("{}")
    job = Job("step 4 seed 0", ("x",), str(tmp_path), result=str(done))
    lost = Job("step 4 seed 1", ("x",), str(tmp_path), result=str(tmp_path / "seed1.json"))
    said: list[str] = []
    assert failure_code([Ended(job, 1)], said.append, "tm") == 0 and said == []  # a gate failing is a verdict
    # it ended by itself without a result of its own (a crash before tinymnist could say so, a model calling
    # os._exit): a job that died (6), named; not a bug of tinymnist's (3)
    assert failure_code([Ended(job, 0), Ended(lost, 1, "ModuleNotFoundError: x", hint="; h")], said.append, "tm") == 6
    assert said[-1] == f"tm: step 4 seed 1: ended with code 1 without writing {lost.result}: ModuleNotFoundError: x; h"
    # an old result beside a job that crashed is not the job's; under --resume a kept completed one is
    assert not Ended(job, 1, fresh=False).finished
    assert Ended(Job("r", ("x", "--resume"), str(tmp_path), result=str(done)), 0, fresh=False).finished
    bug = Ended(lost, 3, "tinymnist train: internal error: ValueError: x (traceback saved to /t); please report it")
    usage = Ended(lost, 2, "tinymnist train: error: --data-root: no MNIST")
    killed = Ended(lost, None, "killed by SIGKILL (out of memory?)")
    assert failure_code([usage, killed, bug], said.append, "tm") == 3  # a bug before a death before bad input
    assert said[-3:] == [
        "tm: step 4 seed 1: error: --data-root: no MNIST",
        "tm: step 4 seed 1: the job died (killed by SIGKILL (out of memory?)); finished seeds are kept, and the "
        "same command with --resume finishes the rest",
        "tm: step 4 seed 1: internal error: ValueError: x (traceback saved to /t); please report it",
    ]
    assert failure_code([usage, killed], said.append, "tm") == 6
    assert failure_code([usage], said.append, "tm") == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--slurm-time", "5"], "--slurm-time is an option of --executor slurm; add --executor slurm or leave it out"),
        (["--list-jobs", "--junit-xml", "j.xml"], "--list-jobs trains nothing, so it writes no --junit-xml"),
        (["--executor", "slurm", "--threads", "4"], "--threads 4 is more than the 1 CPU(s) a SLURM job gets"),
        (["--name", "step3"], "'step3' is a built-in step's name; choose another, e.g. step3.mine"),
        (["--name", "a b"], "'a b': a folder name of letters, digits"),
    ],
)
def test_executor_options_that_cannot_apply_are_refused_in_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--step", "2", "--seeds", "0", "1", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].count(message) == 1 and "Traceback" not in err


def test_an_exported_omp_num_threads_is_the_default(monkeypatch):
    from tinymnist.threads import cores, default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3 and default_threads(8) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == cores() and default_threads(10**6) == 1


def test_a_job_that_crashes_beside_an_old_result_is_no_pass(tmp_path, mnist_root):
    """Every job exits 1 before it trains (a broken environment), in a folder holding an earlier run: the
    old results are not this run's, and the command says the jobs died (6), not PASS."""
    out = tmp_path / "run"
    argv = ["train", *TINY, "--seeds", "0", "1", "--out", str(out)]
    assert tm(argv, mnist_root, capture_output=True).returncode == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nif 'inline' in sys.argv: sys.exit(1)\n")
    env = {**train_env(mnist_root), "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "tinymnist", *argv], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 6, done.stdout + done.stderr
    assert "tinymnist train: step 2 seed 0: ended with code 1 without writing" in done.stderr
    assert "NOT JUDGED" not in done.stdout


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_an_error_in_the_driver_leaves_no_job_running(tmp_path, mnist_root):
    out = tmp_path / "run"
    (out / "step2").mkdir(parents=True)
    # the second job's log cannot be opened, and that is found only as it starts, after the first (a folder or a
    # FIFO there is refused before any job starts: the eighth independent sweep of issue 30)
    (out / "step2" / "seed1.log").symlink_to(tmp_path / "elsewhere.log")
    done = tm(["train", *LONGER, "--seeds", "0", "1", "--out", str(out)], mnist_root, capture_output=True)
    assert done.returncode == 2 and "seed1.log: cannot write the job's log" in done.stderr
    assert (out / "step2" / "seed0.log").exists()  # the first job had started
    mine = [p for p in Path("/proc").glob("[0-9]*") if str(out) in _cmdline(p)]
    assert mine == []


def _cmdline(proc: Path) -> str:
    try:
        # bytes: another process's command line may hold a name that is not UTF-8 (tests of such names)
        return (proc / "cmdline").read_bytes().decode("utf-8", "replace").replace("\x00", " ")
    except OSError:
        return ""


def test_version_names_the_installed_package_and_the_torch_it_runs_on(capsys):
    from importlib import metadata

    import torch

    assert main(["--version"]) == 0
    torch_version = metadata.version("torch")
    assert capsys.readouterr().out.strip() == f"tinymnist {metadata.version('tinymnist')} (torch {torch_version})"
    # the line reads the metadata (no torch import); it names the torch that runs (whose __version__ may add a
    # local tag such as +cu130 that the metadata lacks)
    assert torch.__version__.split("+")[0] == torch_version.split("+")[0]


def test_an_empty_shard_still_writes_the_ci_files_it_was_asked_for(tmp_path, capsys):
    junit, md = tmp_path / "j.xml", tmp_path / "m.md"
    argv = ["train", "--step", "4", "--seeds", "0", "--shard", "2/3", "--out", str(tmp_path / "o")]
    assert main([*argv, "--junit-xml", str(junit), "--markdown", str(md)]) == 0
    assert 'tests="0"' in junit.read_text() and "nothing to train in this shard" in md.read_text()


def test_a_model_with_no_parameters_is_refused_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    (tmp_path / "zeromod.py").write_text(
        "import torch.nn as nn\n\ndef build(**kw):\n    return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["train", "--step", "4", "--set", "model=zeromod:build", "--data-root", str(tmp_path / "no-data")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model 'zeromod:build' has no trainable parameters" in err and "MNIST" not in err
    assert err.count("\n") == 1


def test_a_smoke_sweep_prints_not_judged_as_its_file_says(tmp_path, capsys, monkeypatch, small_mnist):
    import tinymnist.data

    monkeypatch.setattr(tinymnist.data, "load_mnist", lambda *a, **k: small_mnist)
    argv = ["sweep", "--step", "2", "--seeds", "0", "--val-split", "100", "--train-subset", "300", "--epochs", "1"]
    assert main([*argv, "--executor", "inline", "--out", str(tmp_path)]) == 0
    ranked = [x for x in capsys.readouterr().out.splitlines() if x.startswith("1. ")]
    assert ranked and "smoke run: not judged" in ranked[0] and "pass on validation" not in ranked[0]
    assert "smoke run: not judged" in (tmp_path / "SWEEP.md").read_text()


@pytest.mark.parametrize(
    "code, said",
    [
        ("import sys\nsys.exit(0)\n", "importing {mod} failed (SystemExit: 0 (at "),
        ("import sys\n\ndef build(**kw):\n    sys.exit(0)\n", "its builder raised SystemExit: 0"),
        # any BaseException of the user's own, not only SystemExit (the independent sweep of issue 30)
        ("class Boom(BaseException):\n    pass\n\ndef build(**kw):\n    raise Boom('boom')\n", "raised Boom: boom"),
        ("class Boom(BaseException):\n    pass\n\nraise Boom('at import')\n", "failed (Boom: at import (at "),
        (
            "class Boom(BaseException):\n    pass\n\ndef __getattr__(name):\n    raise Boom('lookup')\n",
            "looking up 'build' raised Boom: lookup",
        ),
        (
            "class Bad(Exception):\n    def __str__(self):\n        raise RuntimeError('str')\n\n"
            "def build(**kw):\n    raise Bad()\n",
            "its builder raised Bad: (its message cannot be shown: its __str__ raised)",
        ),
    ],
)
def test_user_code_that_calls_sys_exit_is_named_never_a_silent_pass(tmp_path, capsys, monkeypatch, code, said):
    """Issue 30, cause 3: a plugin or builder calling sys.exit(0) ended tinymnist with exit 0 and no output."""
    mod = f"exits{abs(hash(code)) % 10_000}"
    (tmp_path / f"{mod}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["train", "--step", "4", "--set", f"model={mod}:build", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said.format(mod=mod) in err and err.count("\n") == 1
