"""Milliseconds per training step of a registered model under layout, precision and dropout variants.

    python -m benchmarks.step_variants [--model step4] [--rounds 3] [--steps 40]

The evidence behind the layout and dropout choices in models/nets.py: variants are timed in alternating
rounds after an untimed warm-up, on random data (only the network is timed), batch 128; the claim is the ratio.
The last line times the harness's data path for a batch (indexing and augmentation) without the network.
"""

from __future__ import annotations

import argparse
import sys
import time
from statistics import median

import torch
import torch.nn.functional as F

from tinymnist.models import create_model

VARIANTS = {
    "fp32": dict(channels_last=False, bf16=False, kwargs={}),
    "fp32 channels_last": dict(channels_last=True, bf16=False, kwargs={}),
    "bf16 autocast": dict(channels_last=False, bf16=True, kwargs={}),
    "bf16 channels_last": dict(channels_last=True, bf16=True, kwargs={}),
    "fp32 no dropout": dict(channels_last=False, bf16=False, kwargs={"dropout": 0.0}),
}


def step_ms(model_name: str, variant: dict, steps: int, rounds: int) -> list[float]:
    torch.manual_seed(0)
    try:
        model = create_model(model_name, **variant["kwargs"])
    except TypeError:
        return []  # the variant does not apply to this model (no dropout argument)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    if variant["channels_last"]:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant["bf16"]):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) / steps * 1e3)
    return times


def data_ms(data: torch.Tensor, steps: int) -> list[float]:
    """The harness's data path for one batch alone: index a resident tensor, augment (step 4's ranges)."""
    from tinymnist.data import augment

    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data), generator=gen)
    t = time.perf_counter()
    for i in range(steps):
        augment(data[perm[i * 128 : (i + 1) * 128]], gen, 7.0, 0.08)
    return [(time.perf_counter() - t) / steps * 1e3]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_variants", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="step4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    results = {name: [] for name in VARIANTS}
    images = torch.randn(60_000, 1, 28, 28)  # a stand-in for the resident training set, made once
    for _ in range(args.rounds):  # alternate variants so machine noise hits all of them
        for name, v in VARIANTS.items():
            results[name] += step_ms(args.model, v, args.steps, 1)
        results.setdefault("data path only", []).extend(data_ms(images, args.steps))
    base = median(results["fp32"])
    print(
        f"{args.model}, batch 128, {torch.get_num_threads()} threads, {args.rounds} alternating rounds "
        f"of {args.steps} steps (median ms per training step)"
    )
    for name, t in results.items():
        if t:
            print(f"  {name:20s} {median(t):6.1f} ms  ({median(t) / base:.2f}x fp32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
