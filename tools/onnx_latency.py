"""Batch-1 latency of step 4 in eager torch and in onnxruntime, with onnxruntime's intra-op spinning on and off.

``python -m tools.onnx_latency [--rounds N]``. Issue 32 asked where a "torch 341 ms vs onnxruntime (5779.8x)"
reading came from; this is the measurement behind the answer (it did not reproduce: 4.7-5.4x on that Xeon,
quiet and with both cores busy). The two are timed alternately, in rounds, after a warm-up, so drift on a
shared machine hits both alike; each figure is the median of the rounds' medians. Run it beside a busy core
(e.g. ``yes > /dev/null &``) to see what load does; OMP_WAIT_POLICY and OMP_NUM_THREADS apply as usual.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median


def _median_ms(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times) * 1e3


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.onnx_latency", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=_at_least_one, default=3, help="alternating rounds (default 3)")
    p.add_argument("--calls", type=_at_least_one, default=200, help="calls per round and engine (default 200)")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from tinymnist.engine import build_model
    from tinymnist.export import export_onnx
    from tinymnist.recipes import get_recipe

    model = build_model(get_recipe(4), 0, torch.device("cpu")).eval()
    x = torch.randn(1, 1, 28, 28)

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "step4.onnx")
        for spinning in ("1", "0"):
            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            onnx = partial(session.run, None, {session.get_inputs()[0].name: x.numpy()})
            for warm_up in (eager, onnx):  # first calls allocate and pick kernels: not timed
                _median_ms(warm_up, 20)
            rounds = [(_median_ms(eager, args.calls), _median_ms(onnx, args.calls)) for _ in range(args.rounds)]
            t, o = median(r[0] for r in rounds), median(r[1] for r in rounds)
            print(
                f"onnxruntime spinning {'on ' if spinning == '1' else 'off'}: torch {t:.3f} ms, onnxruntime "
                f"{o:.3f} ms, {t / o:.1f}x (batch 1, torch threads {torch.get_num_threads()}, {args.rounds} rounds)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
