"""Shared fixtures for the benchmark suite, and the machine facts every saved run carries."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import mnist, mnist_root  # noqa: E402,F401  (the same fixtures as the tests)


def pytest_benchmark_update_machine_info(config, machine_info):
    import onnxruntime

    from tinymnist.engine import device_name

    machine_info["torch"] = torch.__version__
    machine_info["onnxruntime"] = onnxruntime.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = device_name(torch.device("cpu"))
    machine_info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")


@pytest.fixture
def judge_speed(request):
    """Call it after the measured code has run: under --benchmark-disable (the test suite runs every benchmark
    once so that none rots) a speed gate is not judged, and the test says so as a skip; judged, a no-op."""

    def judge() -> None:
        if request.config.getoption("benchmark_disable"):
            pytest.skip("--benchmark-disable: ran once to prove it runs; speed not judged")

    return judge


@pytest.fixture(scope="session")
def mnist_cuda(request):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return request.getfixturevalue("mnist").to("cuda")  # the tensors already read and checked, not the files again


def pytest_addoption(parser):
    parser.addoption(
        "--recipe",
        action="append",
        default=[],
        metavar="FILE|NAME",
        help="also benchmark this recipe (a recipe file, a plugin's recipe or package.module:object), beside the "
        "built-in steps; repeatable",
    )


def pytest_generate_tests(metafunc):
    """``recipe``: every built-in step, then each --recipe, by the name the training tests use."""
    if "recipe_name" in metafunc.fixturenames:
        from tinymnist.recipes import RECIPES

        names = [str(s) for s in sorted(RECIPES)] + list(metafunc.config.getoption("recipe"))
        metafunc.parametrize("recipe_name", names)
