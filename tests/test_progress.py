"""Issue 32: a long run's log shows each epoch when it happens, not when the process exits."""

import subprocess
import time

from tests.conftest import REPO, overriding, train_cmd, train_env


def _loud(out, epochs: int = 3) -> list[str]:
    """train_cmd without --quiet, over ``epochs`` epochs."""
    cmd = [a for a in train_cmd(out) if a != "--quiet"]
    cmd[cmd.index("--epochs") + 1] = str(epochs)
    return cmd


def _wait_for(path, text, proc, limit=120.0) -> bool:
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.02)
    return False


def test_a_train_writing_to_a_file_shows_epoch_1_while_it_is_still_running(mnist_root, tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            _loud(tmp_path / "out", epochs=5), env=train_env(mnist_root), cwd=REPO, stdout=f, stderr=subprocess.STDOUT
        )
        try:
            seen = _wait_for(log, "seed 3 epoch  1", proc)
            running = proc.poll() is None  # epochs 2 and 3 are still to come
        finally:
            proc.wait(timeout=300)
    assert seen and running, log.read_text()
    assert proc.returncode in (0, 1)
    text = log.read_text()
    assert text.index("seed 3 epoch  1") < text.index("seed 3 epoch  5") < text.index("seed 3: completed")


def test_a_local_job_log_holds_each_epoch_line(mnist_root, tmp_path):
    out = tmp_path / "out"
    cmd = overriding(_loud(out), "--seeds", "3", "4", "--executor", "local", "--population", "2", "--threads", "1")
    proc = subprocess.run(cmd, env=train_env(mnist_root), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    for seed in (3, 4):
        job_log = (out / "step4" / f"seed{seed}.log").read_text()
        assert [f"seed {seed} epoch  {e}" in job_log for e in (1, 2, 3)] == [True] * 3, job_log
    # the driver's own output names each job's end once
    assert proc.stdout.count("seed 3:") == 1 and proc.stdout.count("seed 4:") == 1, proc.stdout
