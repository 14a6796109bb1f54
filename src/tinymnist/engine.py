"""One training engine: ``train(recipe, seed, data, device) -> Trained``. It only trains: no files, no
resume decisions, no verdicts (those are tinymnist.runner's). It prints nothing but a progress bar.

Every random draw of epoch e comes from generators seeded by (seed, e): the permutation, the augmentation
and dropout. A run is then a pure function of its seed, and a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tinymnist.data import MNISTTensors, augment
from tinymnist.models import count_params, create_model
from tinymnist.models.registry import check_logits
from tinymnist.recipes import Recipe
from tinymnist.results import EpochStats, evaluation_diverged


@dataclass
class Trained:
    """What one training run produced. Files, resume and verdicts are the runner's (tinymnist.runner)."""

    recipe: Recipe
    seed: int
    status: str  # completed | diverged | interrupted
    epochs: list[EpochStats]
    params: int
    wall_seconds: float
    train_images: int
    test_images: int
    val_images: int
    diverged_at: dict | None = None
    state_dict: dict | None = None  # the final (evaluated) model's weights, when completed


class CheckpointMismatch(ValueError):
    """A checkpoint's state does not fit the run it resumes (weights or optimizer state of another shape, a
    malformed history): the runner names the file (the fourth independent sweep of issue 30 had exit 3)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; carries what was trained so far (one run, or a population's)."""

    def __init__(self, trained: Trained | list[Trained], cause: BaseException):
        super().__init__("interrupted")
        self.trained, self.cause = trained, cause


def get_lr(recipe: Recipe, step: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` of ``total_steps``: a pure function, no scheduler state."""
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "onecycle":
        # Linear rise from lr/25 over warmup_frac of the steps, then cosine down to lr/1e4 (as OneCycleLR).
        warm = max(1, round(recipe.warmup_frac * total_steps))
        start, end = recipe.lr / 25, recipe.lr / 1e4
        if step < warm:
            return start + (recipe.lr - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - 1 - warm))
        return end + (recipe.lr - end) * 0.5 * (1 + math.cos(math.pi * t))
    if recipe.schedule == "piecewise":
        # Knots are in epochs; a step sits at its fraction of the run, so the knots scale with --epochs' steps.
        at = step / max(1, total_steps) * recipe.epochs
        knots = [(float(e), float(f)) for e, f in recipe.lr_points]
        for (e0, f0), (e1, f1) in zip(knots, knots[1:], strict=False):
            if at <= e1:
                return recipe.lr * (f0 + (f1 - f0) * (at - e0) / (e1 - e0))
        return recipe.lr * knots[-1][1]  # past the last knot: hold it
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def lr_for(recipe: Recipe, epoch: int, batch: int, batches: int, epochs: int) -> float:
    """The learning rate of batch ``batch`` (from 0) of epoch ``epoch`` (from 1) in a run of ``epochs`` epochs of
    ``batches`` batches: the schedule read per optimizer step, or at the epoch's start and held (``lr_per``)."""
    if recipe.lr_per == "epoch":
        return get_lr(recipe, epoch - 1, epochs)
    return get_lr(recipe, (epoch - 1) * batches + batch, epochs * batches)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: choose auto, cpu or cuda")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        # Full fp32 as on the CPU: TF32 convs and matmuls would make a GPU run a different experiment.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        # warn_only: an op without a deterministic CUDA kernel warns instead of stopping a nightly run.
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))


def epoch_permutation(seed: int, epoch: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's order over all n training images, and the generator that then draws its augmentation."""
    gen = epoch_generator(seed, epoch, device)
    return torch.randperm(n, generator=gen, device=device), gen


def get_batch(
    data: MNISTTensors, idx: torch.Tensor, recipe: Recipe, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.train_x[idx], data.train_y[idx]
    return augment(
        x,
        gen,
        recipe.max_degrees,
        recipe.max_shift,
        recipe.max_scale,
        recipe.aug_prob,
        max_shear=recipe.max_shear,
        elastic_alpha=recipe.elastic_alpha,
        elastic_sigma=recipe.elastic_sigma,
        max_brightness=recipe.max_brightness,
        max_contrast=recipe.max_contrast,
    ), y


def build_model(recipe: Recipe, seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(recipe.model, **recipe.model_kwargs)
    if recipe.init == "xavier":  # drawn after the builder's own init, from the same seeded generator
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
    model = model.to(device)
    if getattr(model, "channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    return model


class TensorEMA:
    """An exponential moving average of a list of float tensors, updated every step; integer tensors (BatchNorm's
    num_batches_tracked) are copied. The decay ramps up as min(decay, (1 + t) / (10 + t)) so the first steps'
    random weights do not linger. Elementwise, so it serves one model and a stacked population alike."""

    def __init__(self, avg: list[torch.Tensor], src: list[torch.Tensor], decay: float):
        self.decay, self.updates = decay, 0
        pairs = list(zip(avg, src, strict=True))
        self._avg = [a for a, b in pairs if a.is_floating_point()]
        self._src = [b for a, b in pairs if a.is_floating_point()]
        self._counters = [(a, b) for a, b in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._avg, self._src, 1 - d)
        for a, b in self._counters:
            a.copy_(b)


class WeightEMA(TensorEMA):
    """The weight EMA of one model: when a recipe turns it on, the average is the model that is evaluated,
    saved and exported."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().__init__(list(self.model.state_dict().values()), list(model.state_dict().values()), decay)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


class WeightSWA:
    """Stochastic weight averaging: the plain mean of a model's weights (and BatchNorm statistics) at the end of
    each of the last ``swa_epochs`` epochs. When a recipe turns it on, the mean is what is evaluated, saved and
    exported from the first averaged epoch on; ``bn_recalibrate`` then gives it statistics of its own."""

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.count = 0

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        self.count += 1
        for a, b in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if a.is_floating_point():
                a.lerp_(b, 1 / self.count)  # the running mean: avg + (new - avg) / count
            else:
                a.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.count = state["count"]


def recalibrated(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the exact averages over the images ``x``
    (torch.optim.swa_utils.update_bn: momentum off, one pass, no gradient); ``model`` itself is untouched."""
    copied = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn(
        (_prepare(copied, x[i : i + batch_size]) for i in range(0, len(x), batch_size)), copied
    )
    return copied.eval()


def training_forward(model: torch.nn.Module, recipe: Recipe):
    """The module the training loop calls: the model itself, or its torch.compile'd twin sharing its weights.
    Static shapes: the short last batch compiles once more instead of making every batch dynamic."""
    return torch.compile(model, dynamic=False) if recipe.compile else model


def build_optimizer(recipe: Recipe, params: torch.nn.Module | list[torch.Tensor]) -> torch.optim.Optimizer:
    """The recipe's optimizer over a model's parameters, or over a population's stacked ones."""
    params = list(params.parameters()) if isinstance(params, torch.nn.Module) else params
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _prepare(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if getattr(model, "channels_last", False) else x


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over every image of (x, y)."""
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        out = model(_prepare(model, x[i : i + batch_size]))
        loss += F.cross_entropy(out, y[i : i + batch_size], reduction="sum").double()
        correct += (out.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(x), 100.0 * correct.item() / len(x)


# Test-time augmentation (issue 33, lead 4): the image as it is and shifted by one pixel up, down, left and right.
# Fixed before any measurement; one-pixel shifts are within the training augmentation of every step from 3 on.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (N, C, H, W) moved ``dy`` pixels down and ``dx`` right, the uncovered rows and columns filled by
    replicating the border: MNIST's border is background, so this is the background value, normalized or not."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    p = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return p[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


@torch.no_grad()
def tta_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy (percent) of the softmax probabilities averaged over ``TTA_SHIFTS``: a different claim from the
    plain figure, always reported apart from it and labelled TTA."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        probs = torch.stack([F.softmax(model(_prepare(model, shifted(xb, dy, dx))), dim=1) for dy, dx in TTA_SHIFTS])
        correct += int((probs.sum(0).argmax(1) == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# What every on_epoch snapshot holds (train's and train_population's), so what a start must hold; "ema" too when
# the recipe keeps one. The runner refuses a checkpoint without them by name rather than fail here on a KeyError.
SNAPSHOT_KEYS = ("epoch", "model", "optimizer", "optimizer_step", "history", "wall_seconds")


def train(
    recipe: Recipe,
    seed: int,
    data: MNISTTensors,
    device: str | torch.device = "cpu",
    *,
    max_batches: int | None = None,
    eval_limit: int | None = None,
    progress: bool = False,
    start: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> Trained:
    """Train ``recipe`` (validated) with ``seed`` on ``data`` (already on ``device``).

    ``on_epoch`` receives a snapshot after every epoch (plain tensors and numbers: weights, optimizer, EMA,
    metrics so far); passing one back as ``start`` continues from it exactly. No random state needs saving:
    every draw of epoch e comes from generators seeded by (seed, e) when the epoch starts.
    ``max_batches``/``eval_limit`` cut epochs short for smoke runs.
    """
    device = torch.device(device)
    set_deterministic(device)
    n_epochs = recipe.epochs
    test_x, test_y = data.test_x[:eval_limit], data.test_y[:eval_limit]
    n_train = len(data.train_x)
    batches = math.ceil(n_train / recipe.batch_size)
    if max_batches is not None:
        batches = min(batches, max_batches)

    model = build_model(recipe, seed, device)
    opt = build_optimizer(recipe, model)
    forward = training_forward(model, recipe)
    ema = WeightEMA(model, recipe.ema) if recipe.ema > 0 else None
    swa = WeightSWA(model) if recipe.swa_epochs else None
    final = ema.model if ema is not None else model  # what is evaluated and saved
    history: list[EpochStats] = []
    start_epoch, wall_before = 1, 0.0
    if start is not None:
        try:
            model.load_state_dict(start["model"])
            opt.load_state_dict(start["optimizer"])
            for group in opt.param_groups:  # load_state_dict takes a momentum of another shape, and the first
                for p in group["params"]:  # step then fails deep in torch (the fifth independent sweep)
                    for name, value in opt.state.get(p, {}).items():
                        if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                            raise ValueError(
                                f"optimizer state {name} of shape {list(value.shape)}, not {list(p.shape)}"
                            )
            if ema is not None:
                ema.load_state_dict(start["ema"])
            if swa is not None:
                swa.load_state_dict(start["swa"])
            history = [EpochStats(**e) for e in start["history"]]
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatch(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
        start_epoch, wall_before = start["epoch"] + 1, start["wall_seconds"]

    diverged_at = None
    params = count_params(model)
    t_run = time.perf_counter()

    def outcome(status: str) -> Trained:
        return Trained(
            recipe=recipe,
            seed=seed,
            status=status,
            epochs=list(history),
            params=params,
            wall_seconds=wall_before + time.perf_counter() - t_run,
            train_images=min(n_train, batches * recipe.batch_size),
            test_images=len(test_x),
            val_images=data.val_images,
            diverged_at=diverged_at,
            state_dict=shown.state_dict() if status == "completed" else None,
        )

    shown = final  # the model the last evaluation saw

    try:
        for epoch in range(start_epoch, n_epochs + 1):
            perm, gen = epoch_permutation(seed, epoch, n_train, device)
            torch.manual_seed(epoch_seed(seed, epoch))  # dropout draws from the global generator
            losses = torch.zeros(batches, device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            # On CUDA a per-batch finiteness check would sync every step; checking every 32 batches still
            # names the exact batch, from the stored losses.
            check_every = 1 if device.type == "cpu" else 32
            checked = 0  # losses[:checked] are known finite
            model.train()
            sync(device)
            t0 = time.perf_counter()
            bar = progress_bar(progress, batches, f"step {recipe.step} seed {seed} epoch {epoch}/{n_epochs}")
            lr = recipe.lr
            for b in range(batches):
                x, y = get_batch(data, perm[b * recipe.batch_size : (b + 1) * recipe.batch_size], recipe, gen)
                lr = lr_for(recipe, epoch, b, batches, n_epochs)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                    out = forward(_prepare(model, x))
                check_logits(out, len(y), recipe.model)
                loss = F.cross_entropy(out.float(), y, label_smoothing=recipe.label_smoothing)
                losses[b] = loss.detach()
                if (b + 1) % check_every == 0 or b == batches - 1:
                    bad = ~torch.isfinite(losses[checked : b + 1])
                    if bad.any():
                        first = checked + int(bad.nonzero()[0])
                        diverged_at = {"epoch": epoch, "batch": first + 1, "loss": str(losses[first].item())}
                        bar.close()
                        return outcome("diverged")
                    checked = b + 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update()
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
                bar.update(1)
            sync(device)
            train_seconds = time.perf_counter() - t0
            bar.close()
            train_loss = (losses * _batch_sizes(n_train, recipe.batch_size, batches, device)).sum().item() / seen
            train_acc = 100.0 * correct.item() / seen
            t1 = time.perf_counter()
            shown = final
            if swa is not None and epoch > n_epochs - recipe.swa_epochs:
                swa.add(model)
                shown = swa.model
            if recipe.bn_recalibrate:
                shown = recalibrated(shown, data.train_x[: batches * recipe.batch_size])
            test_loss, test_acc = evaluate(shown, test_x, test_y)
            eval_seconds = time.perf_counter() - t1
            val_loss, val_acc = (None, None)
            if data.val_x is not None and data.val_y is not None:
                val_loss, val_acc = evaluate(shown, data.val_x, data.val_y)
            if evaluation_diverged(train_loss, test_loss, val_loss):
                # The last optimizer step can leave non-finite weights that no training loss saw yet.
                diverged_at = {"epoch": epoch, "batch": "evaluation", "loss": str(test_loss)}
                return outcome("diverged")
            history.append(
                EpochStats(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_acc=train_acc,
                    test_loss=test_loss,
                    test_acc=test_acc,
                    lr=lr,
                    seconds=train_seconds,
                    eval_seconds=eval_seconds,
                    images_per_second=seen / train_seconds,
                    val_loss=val_loss,
                    val_acc=val_acc,
                )
            )
            if on_epoch is not None:
                on_epoch(
                    {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        **({"ema": ema.state_dict()} if ema else {}),
                        **({"swa": swa.state_dict()} if swa else {}),
                        "optimizer_step": epoch * batches,
                        "history": [asdict(e) for e in history],
                        "wall_seconds": wall_before + time.perf_counter() - t_run,
                    }
                )
    except KeyboardInterrupt as e:
        raise Interrupted(outcome("interrupted"), e) from None
    return outcome("completed")


def _batch_sizes(n: int, bs: int, batches: int, device: torch.device) -> torch.Tensor:
    sizes = torch.full((batches,), float(bs), device=device)
    sizes[-1] = min(bs, n - (batches - 1) * bs)
    return sizes


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: bool, total: int, desc: str):
    if not (progress and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="batch")
