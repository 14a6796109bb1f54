"""Training throughput of the harness pipeline against the conventional DataLoader pipeline, side by side.

    python -m benchmarks.pipelines [--data-root DIR] [--batches 100] [--rounds 3] [--step 4]

Both feed the same model (the step's), the same optimizer and batch size; only the data path differs:
- harness: the whole dataset as one normalized tensor, a seeded permutation, batched affine augmentation;
- conventional: torchvision.datasets.MNIST with per-image RandomRotation + ToTensor + Normalize, a
  DataLoader with shuffle and 2 worker processes.
Rounds alternate (harness, conventional, harness, ...) after an untimed warm-up of each, so machine noise
hits both; the claim is the median ratio.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F


def _step_fn(model, opt, prepare, bf16: bool):
    def step(x, y):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(prepare(x))
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def make_trainer(step: int | str, device: torch.device, overrides: list[str] = ()):
    """A training step of a built-in step (``4``) or of any recipe ``train --recipe`` takes (a file, a plugin's
    name, ``package.module:object``)."""
    from tinymnist.engine import _prepare, build_model, build_optimizer, training_forward
    from tinymnist.recipes import get_recipe, resolve_recipe, validate, with_overrides

    base = get_recipe(int(step)) if str(step).isdigit() else resolve_recipe(str(step))
    recipe = validate(with_overrides(base, list(overrides)))
    model = build_model(recipe, 0, device).train()
    return recipe, _step_fn(
        training_forward(model, recipe),
        build_optimizer(recipe, model),
        lambda x: _prepare(model, x),
        recipe.precision == "bf16",
    )


def harness_batches(data, recipe, device, seed: int = 0):
    """Endless batches exactly as the engine makes them."""
    from tinymnist.engine import epoch_permutation, get_batch

    n, bs = len(data.train_x), recipe.batch_size
    for epoch in itertools.count(1):
        perm, gen = epoch_permutation(seed, epoch, n, device)
        for b in range(0, n, bs):
            yield get_batch(data, perm[b : b + bs], recipe, gen)


def conventional_batches(root, recipe, workers: int = 2):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from tinymnist.data import MEAN, STD, DataError

    tf = transforms.Compose(
        [
            transforms.RandomRotation(recipe.max_degrees or 7.0),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,), (STD,)),
        ]
    )
    try:
        ds = datasets.MNIST(root=str(root), train=True, download=False, transform=tf)
    except RuntimeError as e:  # torchvision reads only the uncompressed files; the harness reads .gz too
        raise DataError(
            f"{root}/MNIST/raw: the conventional pipeline (torchvision) needs the uncompressed IDX "
            f"files there ({e}); gunzip -k the .gz files in that folder"
        ) from None
    loader = DataLoader(
        ds,
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    while True:
        yield from loader


def timed(batches, train_step, n: int, device: torch.device) -> float:
    """Images per second over ``n`` training steps, data preparation included."""
    from tinymnist.engine import sync

    sync(device)
    t0, seen = time.perf_counter(), 0
    for _ in range(n):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train_step(x, y)
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - t0)


def compare(
    root, step: int = 4, batches: int = 100, rounds: int = 3, device: str = "cpu", overrides: list[str] = ()
) -> dict:
    from tinymnist.data import load_mnist

    dev = torch.device(device)
    data = load_mnist(root, dev, download=False)
    recipe, fast_step = make_trainer(step, dev, overrides)
    _, slow_step = make_trainer(step, dev, overrides)
    fast, slow = harness_batches(data, recipe, dev), conventional_batches(root, recipe)
    timed(fast, fast_step, 20, dev)  # warm-up, untimed: allocator, oneDNN kernels, worker start-up
    timed(slow, slow_step, 20, dev)
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(timed(fast, fast_step, batches, dev))
        theirs.append(timed(slow, slow_step, batches, dev))
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "step": step,
        "device": device,
        "precision": recipe.precision,
        "compile": recipe.compile,
        "threads": torch.get_num_threads(),
        "batch_size": recipe.batch_size,
        "batches_per_round": batches,
        "rounds": rounds,
        "harness_img_s": ours,
        "conventional_img_s": theirs,
        "ratio_median": median(ratios),
        "ratio_min": min(ratios),
    }


def main(argv: list[str] | None = None) -> int:
    from tinymnist.data import DataError, resolve_root

    p = argparse.ArgumentParser(prog="python -m benchmarks.pipelines", description=__doc__.splitlines()[0])
    p.add_argument("--data-root")
    p.add_argument("--step", type=int, default=4)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the step's recipe for both pipelines, as in `train --set` (precision=bf16, compile=true)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write the figures here (e.g. reports/pipelines_cpu.json, the source of the README's pipeline line)",
    )
    args = p.parse_args(argv)
    from tinymnist.recipes import get_recipe, with_overrides

    try:  # a bad --step or --set is reported before any data is read
        with_overrides(get_recipe(args.step), args.set)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    try:
        r = compare(resolve_root(args.data_root), args.step, args.batches, args.rounds, args.device, args.set)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    compiled = " compiled" if r["compile"] else ""
    print(
        f"step {r['step']} model, batch {r['batch_size']}, {r['device']} {r['precision']}{compiled}, "
        f"{r['threads']} threads, "
        f"{r['rounds']} alternating rounds of {r['batches_per_round']} batches"
    )
    print(
        f"harness pipeline      : {median(r['harness_img_s']):8,.0f} img/s (median; rounds "
        f"{', '.join(f'{v:,.0f}' for v in r['harness_img_s'])})"
    )
    print(
        f"conventional pipeline : {median(r['conventional_img_s']):8,.0f} img/s (median; rounds "
        f"{', '.join(f'{v:,.0f}' for v in r['conventional_img_s'])})"
    )
    print(f"speed-up              : {r['ratio_median']:.2f}x median, {r['ratio_min']:.2f}x worst round")
    if args.json:
        import json

        from tinymnist.engine import device_name

        r["command"] = "python -m benchmarks.pipelines " + " ".join(argv if argv is not None else sys.argv[1:])
        r["device_name"] = device_name(torch.device(args.device))
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
