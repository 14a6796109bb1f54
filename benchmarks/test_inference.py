"""ONNX (onnxruntime, CPU execution provider) against PyTorch eager on the step-4 model.

Targets: onnxruntime's batch-1 latency at most half of eager's; its batch-1,000 throughput at least eager's.
The model is a fixed-seed step-4 network in eval form: speed does not depend on the weights' values.
"""

import time
from statistics import median

import pytest
import torch

from tinymnist.engine import build_model
from tinymnist.export import export_onnx, onnx_session
from tinymnist.recipes import get_recipe


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model = build_model(get_recipe(4), 0, torch.device("cpu")).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "step4.onnx")
    return model, onnx_session(path)


def _runner(engine, models, batch):
    model, session = models
    x = torch.randn(batch, 1, 28, 28)
    if engine == "torch":

        def run():
            with torch.inference_mode():
                model(x)
    else:
        feed = {session.get_inputs()[0].name: x.numpy()}

        def run():
            session.run(None, feed)

    return run


def _threads(engine, models):
    if engine == "torch":
        return torch.get_num_threads()
    opts = models[1].get_session_options()
    return opts.intra_op_num_threads or "default"


@pytest.mark.parametrize("batch", [1, 1000])
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_inference(benchmark, models, engine, batch):
    run = _runner(engine, models, batch)
    benchmark.extra_info.update(kind="inference", engine=engine, batch=batch, threads=_threads(engine, models))
    rounds = 300 if batch == 1 else 20
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=10)


def _median_seconds(run, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return median(times)


def test_onnx_targets(models, judge_speed, request):
    """Side by side, alternating, after warm-up: the speed targets of the ONNX export."""
    results = {}
    once = request.config.getoption("benchmark_disable")
    for batch, n in ((1, 5), (1000, 1)) if once else ((1, 200), (1000, 10)):
        runs = {e: _runner(e, models, batch) for e in ("torch", "onnxruntime")}
        for run in runs.values():
            _median_seconds(run, 5)
        t = {e: [] for e in runs}
        for _ in range(3):
            for e, run in runs.items():
                t[e].append(_median_seconds(run, n))
        results[batch] = {e: median(v) for e, v in t.items()}
    lat = results[1]
    thr = {e: 1000 / s for e, s in results[1000].items()}
    print(
        f"\nbatch 1 latency: torch {lat['torch'] * 1e3:.3f} ms, onnxruntime {lat['onnxruntime'] * 1e3:.3f} ms "
        f"({lat['torch'] / lat['onnxruntime']:.1f}x); batch 1000: torch {thr['torch']:,.0f}/s, "
        f"onnxruntime {thr['onnxruntime']:,.0f}/s"
    )
    judge_speed()
    assert lat["onnxruntime"] <= 0.5 * lat["torch"]
    assert thr["onnxruntime"] >= thr["torch"]
