"""The SLURM executor against a real single-node cluster (``bash tools/slurm-up.sh`` brings one up on the
loopback address; .ci/run does). Where there is no cluster these tests skip, unless TINYMNIST_REQUIRE_SLURM=1
(as in .ci/run), where a missing cluster fails them: a skip must not pass for a test."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, start_until_checkpoints, train_env
from tests.test_executors import LONGER, TINY, figures


def _cluster_up() -> str | None:
    """Why there is no cluster to test against, or None when there is one."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not on PATH): bash tools/slurm-up.sh brings up a local cluster"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install 'tinymnist[slurm]'"
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if done.returncode != 0 or not {"idle", "mixed", "allocated"} & set(done.stdout.split()):
        return f"no SLURM node is up ({(done.stderr or done.stdout).strip()[:100]}): bash tools/slurm-up.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = _cluster_up()
    if why is not None:
        if os.environ.get("TINYMNIST_REQUIRE_SLURM") == "1":
            pytest.fail(f"TINYMNIST_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


def _queue() -> list[str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if "tinymnist" in line]


def tm(args, mnist_root, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tinymnist", *args], env=train_env(mnist_root), cwd=REPO, text=True, **kw
    )


def test_an_array_of_four_seeds_equals_the_local_executor_metric_for_metric(tmp_path, mnist_root):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    argv = ["train", *TINY, "--seeds", "0-3"]
    done = tm([*argv, "--executor", "slurm", "--out", str(on_slurm)], mnist_root, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 jobs on a SLURM job array, 1 thread(s) each" in done.stdout
    assert "slurm: submitted array" in done.stdout and "step 2: NOT JUDGED (smoke run)" in done.stdout
    assert tm([*argv, "--out", str(local), "--threads", "1"], mnist_root, capture_output=True).returncode == 0
    for s in range(4):
        assert figures(on_slurm / "step2" / f"seed{s}.json") == figures(local / "step2" / f"seed{s}.json")
    assert _queue() == []


def test_a_sweep_of_two_variants_runs_through_slurm(tmp_path, mnist_root):
    argv = ["sweep", "--step", "2", "--seeds", "0", "1", "--val-split", "500", "--train-subset", "2000"]
    argv += ["--epochs", "1", "--variant", "slow: lr=0.01", "--variant", "small: batch_size=64"]
    argv += ["--executor", "slurm", "--slurm-parallelism", "2", "--out", str(tmp_path)]
    done = tm(argv, mnist_root, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slurm: submitted array" in done.stdout and "(6 jobs)" in done.stdout
    md = (tmp_path / "SWEEP.md").read_text()
    assert all(f"| {k} |" in md for k in ("step2", "step2.slow", "step2.small"))
    assert json.loads((tmp_path / "step2.small" / "seed1.json").read_text())["recipe"]["batch_size"] == 64


def _start(argv, mnist_root, ckpts):
    """``tinymnist ARGV`` in a session of its own (so a signal to its group is a terminal's Ctrl-C), returned
    once every one of ``ckpts`` exists."""
    cmd = [sys.executable, "-m", "tinymnist", *argv]
    popen = dict(start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return start_until_checkpoints(cmd, train_env(mnist_root), *ckpts, **popen)


def test_ctrl_c_cancels_the_array_and_the_resume_finishes_bit_identical(tmp_path, mnist_root):
    ref, out = tmp_path / "ref", tmp_path / "run"
    argv = ["train", *LONGER, "--seeds", "0", "1", "--threads", "1"]
    assert tm([*argv, "--out", str(ref)], mnist_root, capture_output=True).returncode == 0
    slurm = [*argv, "--executor", "slurm", "--out", str(out)]
    proc = _start(slurm, mnist_root, [out / "step2" / f"seed{s}.ckpt" for s in (0, 1)])
    assert len(_queue()) == 2
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT): the running jobs were stopped" in err and "Traceback" not in err
    assert _queue() == []  # cancelled, and waited for: nothing left in squeue
    resume = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    done = subprocess.run(resume, shell=True, env=train_env(mnist_root), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for s in (0, 1):
        assert figures(out / "step2" / f"seed{s}.json") == figures(ref / "step2" / f"seed{s}.json")


def test_a_job_killed_with_scancel_is_named_and_exits_6(tmp_path, mnist_root):
    out = tmp_path / "run"
    argv = ["train", *LONGER, "--seeds", "0", "1", "--executor", "slurm", "--out", str(out)]
    proc = _start(argv, mnist_root, [out / "step2" / "seed1.ckpt"])
    victim = next(line.split()[0] for line in _queue() if line.split()[0].endswith("_1"))
    subprocess.run(["scancel", victim], check=True)
    stdout, err = proc.communicate(timeout=400)
    assert proc.returncode == 6, stdout + err
    line = next(x for x in err.splitlines() if "step 2 seed 1" in x)
    assert line.startswith("tinymnist train: step 2 seed 1: the job died (CANCELLED AT ") and "--resume" in line
    assert "seed 0: completed" in stdout and _queue() == []
