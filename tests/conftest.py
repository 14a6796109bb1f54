import os
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
    from harness.data import load_mnist

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
