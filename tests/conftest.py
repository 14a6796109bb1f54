import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    """MNIST_ROOT if set (CI sets it; then it must be valid), else ../shared/datasets beside the checkout."""
    if os.environ.get("MNIST_ROOT"):
        return Path(os.environ["MNIST_ROOT"])
    cand = REPO.parent / "shared" / "datasets"
    return cand if (cand / "MNIST" / "raw").is_dir() else None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("MNIST not found: set MNIST_ROOT to the folder holding MNIST/raw/")
    return root


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from tinymnist.data import load_mnist

    return load_mnist(mnist_root, "cpu", download=False)


@pytest.fixture(scope="session")
def small_mnist(mnist):
    return mnist.subset(1024, 500)


@pytest.fixture(autouse=True)
def _threads():
    # Determinism tests compare runs in one process; fix the thread count they run with.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def overriding(argv: list[str], *extra: str) -> list[str]:
    """``argv`` then ``extra``, each option in ``extra`` replacing the same option and its values in ``argv``:
    an option given twice is a usage error (cli._StoreOnce). Repeatable options (--set, --variant) add up."""
    given = {w for w in extra if w.startswith("--") and w not in ("--set", "--variant")}
    kept: list[str] = []
    dropping = False
    for word in argv:
        if word.startswith("--"):
            dropping = word in given
        if not dropping:
            kept.append(word)
    return [*kept, *extra]


def train_cmd(out, *extra) -> list[str]:
    """``tinymnist train`` of a short step-4 run (3 epochs of 3,000 images), for subprocess tests; an option in
    ``extra`` replaces its default."""
    base = ["--step", "4", "--seeds", "3", "--epochs", "3", "--train-subset", "3000", "--test-subset", "500"]
    return overriding([sys.executable, "-m", "tinymnist", "train", *base, "--out", str(out), "--quiet"], *extra)


def train_env(mnist_root) -> dict:
    return {**os.environ, "MNIST_ROOT": str(mnist_root), "OMP_NUM_THREADS": "1"}


def start_until_checkpoints(cmd: list[str], env: dict, *ckpts: Path, **popen) -> subprocess.Popen:
    """Start ``cmd`` and return once every one of ``ckpts`` exists (or the process ended, or 2 minutes)."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, **popen)
    deadline = time.time() + 120
    while not all(c.exists() for c in ckpts) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    return proc


def signal_after_first_checkpoint(cmd: list[str], env: dict, ckpt: Path, sig, **popen) -> subprocess.Popen:
    """Start ``cmd``, wait for its first epoch checkpoint, then send ``sig``; returns the process."""
    proc = start_until_checkpoints(cmd, env, ckpt, **popen)
    proc.send_signal(sig)
    return proc


def interrupt_on_call(real, n: int):
    """A stand-in for ``real`` that raises KeyboardInterrupt (Ctrl-C) on its n-th call."""
    calls: list[int] = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper
