"""``python -m benchmarks.population [--device cpu|cuda] [--rounds 2]``: seed-images per second by population
size, side by side in one run, to pick ``--population``'s default. Writes ``reports/population/bench_<device>.json``.

Two measurements, alternating sizes within each round so that the machine's drift falls on all of them:
- **end to end**: ``tinymnist train --step 4 --seeds 0-3 --epochs 1 --train-subset 25600`` with
  ``--population P``, wall time of the whole command (start-up, data, training, evaluation, files);
- **stacked compute**: one training step of P step-4 networks stacked with torch.func (tinymnist.population), on
  random batches of 128, after an untimed warm-up; fp32, and bf16 beside it. On CUDA every timed call ends with
  a synchronize, and sizes go up to 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SEEDS, SUBSET = 4, 25_600


def end_to_end(population: int, device: str, out: Path) -> float:
    """Wall seconds of the CLI training SEEDS seeds for one epoch of SUBSET images."""
    cmd = [
        sys.executable,
        "-m",
        "tinymnist",
        "train",
        "--step",
        "4",
        "--seeds",
        f"0-{SEEDS - 1}",
        "--epochs",
        "1",
        "--train-subset",
        str(SUBSET),
        "--test-subset",
        "2000",
        "--out",
        str(out),
        "--quiet",
        "--device",
        device,
        "--population",
        str(population),
    ]
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's code, installed or not
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, env=env)
    return time.perf_counter() - t


def stacked_step_seconds(size: int, device: torch.device, precision: str, steps: int = 10) -> float:
    from dataclasses import replace

    from tinymnist.engine import build_model, build_optimizer, sync
    from tinymnist.population import StackedModel, draw_masks
    from tinymnist.recipes import STEP4

    recipe = replace(STEP4, precision=precision)
    stack = StackedModel([build_model(recipe, s, device) for s in range(size)])
    opt = build_optimizer(recipe, list(stack.params.values()))
    gens = [torch.Generator(device=device).manual_seed(s) for s in range(size)]
    x = torch.randn(size, 128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (size, 128), device=device)

    def step() -> None:
        masks = draw_masks(stack, gens, 128, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = stack.forward_train(x, masks)
        loss = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(size, -1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    for _ in range(3):  # warm-up: kernels chosen, allocator settled
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.population", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON to write (default reports/population/bench_<device>.json)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    sizes = (1, 2, 4, 8) if dev.type == "cpu" else (1, 2, 4, 8, 16, 32, 64)
    work = REPO / ".benchmarks" / "population"
    e2e: dict[int, list[float]] = {s: [] for s in (1, 2, 4, 8)}
    compute: dict[str, dict[int, list[float]]] = {"fp32": {s: [] for s in sizes}, "bf16": {s: [] for s in sizes}}
    end_to_end(1, args.device, work / "warm")  # untimed: caches, files, the first import
    for r in range(args.rounds):
        for size in e2e:
            e2e[size].append(SEEDS * SUBSET / end_to_end(size, args.device, work / f"r{r}p{size}"))
        for precision in compute:
            for size in sizes:
                compute[precision][size].append(size * 128 / stacked_step_seconds(size, dev, precision))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    one = median(e2e[1])
    result = {
        "command": "python -m benchmarks.population " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "end_to_end": {
            str(s): {"seed_images_per_s": v, "median": median(v), "vs_population_1": median(v) / one}
            for s, v in e2e.items()
        },
        "stacked_compute": {
            prec: {str(s): {"seed_images_per_s": v, "median": median(v)} for s, v in d.items()}
            for prec, d in compute.items()
        },
    }
    out = Path(args.out or REPO / "reports" / "population" / f"bench_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    from tools.readme import population_speed_table

    print(population_speed_table(result))
    print(f"wrote {out}")
    return 0


def _device_name(dev: torch.device) -> str:
    from tinymnist.engine import device_name

    return device_name(dev)


if __name__ == "__main__":
    sys.exit(main())
