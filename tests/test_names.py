"""Issue 30, cause 13: names that are not UTF-8. A results or experiment folder so named made report and log
crash (exit 3), and the resume command printed for such an --out did not run back into the same folder.
Real folders with Latin-1 bytes in their names, real subprocesses, and bash to run the printed command."""

import json
import os
import shutil
import signal
import subprocess
import sys

from tests.conftest import REPO, signal_after_first_checkpoint, train_cmd, train_env


def _named(parent, raw: bytes):
    return parent / os.fsdecode(raw)


def test_report_and_log_read_and_write_folders_whose_names_are_not_utf8(tmp_path, mnist_root):
    results = _named(tmp_path, b"r\xe9sultats")
    shutil.copytree(REPO / "reports" / "baseline", results)
    out = _named(tmp_path, b"rapport-\xe9t\xe9")
    env = train_env(mnist_root)
    done = subprocess.run(
        [sys.executable, "-m", "tinymnist", "report", results, "--out", out], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    text = (out / "REPORT.md").read_text(encoding="utf-8")  # valid UTF-8, the odd byte shown as itself
    assert "r\\xe9sultats" in text
    experiments = _named(tmp_path, b"exp\xe9riences")
    shutil.copytree(
        REPO / "reports" / "experiments" / sorted(os.listdir(REPO / "reports" / "experiments"))[0], experiments / "one"
    )
    log = tmp_path / "log.md"
    done = subprocess.run(
        [sys.executable, "-m", "tinymnist", "log", experiments, "--out", log], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert "exp\\xe9riences" in log.read_text(encoding="utf-8")


def test_the_resume_command_printed_for_a_non_utf8_out_resumes_into_the_same_folder(tmp_path, mnist_root):
    out = _named(tmp_path, b"r\xe9sultats it's")
    proc = signal_after_first_checkpoint(
        train_cmd(out, "--epochs", "6"),
        train_env(mnist_root),
        out / "step4" / "seed3.ckpt",
        signal.SIGINT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    command = err.split(b"Resume with: ")[1].strip().decode("ascii")  # pasteable: plain ASCII
    assert "$'" in command and "\\xe9" in command
    done = subprocess.run(["bash", "-c", command], env=train_env(mnist_root), cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr
    final = json.loads((out / "step4" / "seed3.json").read_text())
    assert final["status"] == "completed" and len(final["epochs"]) == 6
    assert sorted(os.listdir(tmp_path)) == [os.fsdecode(b"r\xe9sultats it's")]  # no second folder


def test_a_job_list_refuses_a_folder_name_json_cannot_carry(tmp_path):
    """JSON holds Unicode text: r\xe9s would reach a scheduler as r\ufffds, another folder. Refused, named."""
    out = _named(tmp_path, b"r\xe9s")
    done = subprocess.run(
        [sys.executable, "-m", "tinymnist", "train", "--step", "4", "--list-jobs", "--out", out],
        env=train_env(tmp_path),
        capture_output=True,
    )
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.count(b"\n") == 1 and b"r\\xe9s" in done.stderr and b"is not UTF-8" in done.stderr
    fine = subprocess.run(
        [sys.executable, "-m", "tinymnist", "train", "--step", "4", "--list-jobs", "--out", tmp_path / "r\u00e9s"],
        env=train_env(tmp_path),
        capture_output=True,
    )
    assert fine.returncode == 0 and json.loads(fine.stdout)[0]["result"].endswith("r\u00e9s/step4/seed0.json")
