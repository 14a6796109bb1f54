"""Seed populations: P seeds of one recipe trained at once, as one stacked model. Like ``engine.train``, it
only trains; the runner turns what it returns into files and verdicts.

The members are stacked with ``torch.func``: ``stack_module_state`` puts every member's parameters and
buffers on a new leading axis, and ``vmap`` of ``functional_call`` runs them as one batched forward (for a
convolution, functorch's batching rule makes one grouped convolution of all members). One optimizer steps the
stacked tensors: SGD's momentum and weight decay and AdamW's moments are elementwise, so that is exactly P
optimizers. The loss is the sum of the members' own mean losses, so each member's gradient is its own.

Each member keeps its own random streams, none of which depends on who else is in the population:
- its initial weights come from its seed (``engine.build_model``);
- its data order and augmentation from the generator of (seed, epoch), as in ``engine.train``;
- its dropout masks from its own generator seeded by (seed, epoch), drawn outside ``vmap`` in the order and
  shape ``nn.Dropout`` draws them from the global generator in ``engine.train``;
- BatchNorm statistics and optimizer state are slices of the stacked buffers.
So a member trains as that seed trains alone, to the rounding of a grouped convolution
(tests/test_population.py: equal weights after 3 steps to 1e-5 for populations of 2 and 4).

A member whose loss stops being finite is stopped alone: its loss is masked out of the sum (so its gradients
are zero from then on) and it is reported as diverged; the others go on.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from tinymnist.data import MNISTTensors
from tinymnist.engine import (
    Interrupted,
    TensorEMA,
    Trained,
    _batch_sizes,
    build_model,
    build_optimizer,
    epoch_permutation,
    epoch_seed,
    get_batch,
    lr_for,
    progress_bar,
    set_deterministic,
    sync,
)
from tinymnist.recipes import Recipe
from tinymnist.results import EpochStats, evaluation_diverged


class _GivenDropout(nn.Module):
    """``nn.Dropout`` whose mask (already scaled by 1 / (1 - p)) is given for each forward."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask if self.training and self.mask is not None else x


class StackedModel:
    """P models of one architecture as stacked tensors, with a vmapped forward."""

    def __init__(self, models: Sequence[nn.Module]):
        self.size = len(models)
        self.keys = list(models[0].state_dict())  # the registered model's own order, for its state dict
        self.params, self.buffers = stack_module_state(list(models))
        self.base = copy.deepcopy(models[0]).to("meta")
        self.sites: list[_GivenDropout] = []
        for name, module in list(self.base.named_modules()):
            if isinstance(module, nn.Dropout) and module.p > 0:
                site = _GivenDropout(module.p)
                self.base.set_submodule(name, site)
                self.sites.append(site)
        self.site_shapes = _dropout_input_shapes(models[0])  # per site, the input shape after the batch axis

        def member(params, buffers, x, masks):
            for site, mask in zip(self.sites, masks, strict=True):
                site.mask = mask
            return functional_call(self.base, (params, buffers), (x,))

        self._train = vmap(member, in_dims=(0, 0, 0, 0))
        self._eval = vmap(lambda p, b, x: functional_call(self.base, (p, b), (x,)), in_dims=(0, 0, None))

    def forward_train(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(P, B, 1, 28, 28) images and per-site (P, B, ...) masks -> (P, B, classes) logits."""
        self.base.train()
        return self._train(self.params, self.buffers, x, masks)

    @torch.no_grad()
    def forward_eval(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """One batch of images for every member -> (P, B, classes) logits, in eval form."""
        self.base.eval()
        return self._eval(params, buffers, x)

    def member_state(self, m: int, params: dict | None = None, buffers: dict | None = None) -> dict:
        """Member ``m`` as the registered model's own state dict (what ``export`` loads)."""
        tensors = {**(params or self.params), **(buffers or self.buffers)}
        return {k: tensors[k][m].detach().clone() for k in self.keys}

    def load_member(self, m: int, state: dict, params: dict | None = None, buffers: dict | None = None) -> None:
        with torch.no_grad():
            for k, v in {**(params or self.params), **(buffers or self.buffers)}.items():
                v[m].copy_(state[k])


def _dropout_input_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [
        mod.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[1:])))
        for mod in model.modules()
        if isinstance(mod, nn.Dropout) and mod.p > 0
    ]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device))
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def draw_masks(
    stack: StackedModel, generators: Sequence[torch.Generator], batch: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Every site's mask for every member, each member from its own generator, site after site, as
    ``nn.Dropout`` draws: ``empty_like(input).bernoulli_(1 - p)`` then ``/ (1 - p)``."""
    per_member = []
    for g in generators:
        per_member.append(
            [
                torch.empty((batch, *shape), device=device).bernoulli_(1 - site.p, generator=g).div_(1 - site.p)
                for site, shape in zip(stack.sites, stack.site_shapes, strict=True)
            ]
        )
    return tuple(torch.stack([masks[i] for masks in per_member]) for i in range(len(stack.sites)))


def _slice_optimizer(state: dict, params: list[torch.Tensor], m: int) -> dict:
    """Member ``m``'s optimizer state, in the layout of a one-model optimizer's state_dict."""
    out = {"param_groups": state["param_groups"], "state": {}}
    for i, s in state["state"].items():
        shape = params[int(i)].shape
        out["state"][i] = {k: (v[m].clone() if torch.is_tensor(v) and v.shape == shape else v) for k, v in s.items()}
    return out


def _stack_optimizer(states: Sequence[dict], params: list[torch.Tensor]) -> dict:
    first = states[0]
    out = {"param_groups": first["param_groups"], "state": {}}
    for i, s in first["state"].items():
        shape = params[int(i)].shape
        out["state"][i] = {
            k: (torch.stack([st["state"][i][k] for st in states]) if torch.is_tensor(v) and v.shape == shape[1:] else v)
            for k, v in s.items()
        }
    return out


def train_population(
    recipe: Recipe,
    seeds: Sequence[int],
    data: MNISTTensors,
    device: str | torch.device = "cpu",
    *,
    max_batches: int | None = None,
    eval_limit: int | None = None,
    progress: bool = False,
    starts: Sequence[dict] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[Trained]:
    """Train ``recipe`` (validated) for every seed of ``seeds`` at once; one ``Trained`` per seed, in order.

    ``starts`` (all at one epoch) and ``on_epoch(member_index, snapshot)`` use the same snapshot layout as
    ``engine.train``, per member.
    """
    device = torch.device(device)
    set_deterministic(device)
    seeds = list(seeds)
    P, n_epochs = len(seeds), recipe.epochs
    test_x, test_y = data.test_x[:eval_limit], data.test_y[:eval_limit]
    n_train, bs = len(data.train_x), recipe.batch_size
    batches = math.ceil(n_train / bs)
    if max_batches is not None:
        batches = min(batches, max_batches)

    stack = StackedModel([build_model(recipe, s, device) for s in seeds])
    plist = list(stack.params.values())
    opt = build_optimizer(recipe, plist)
    ema_params = ema_buffers = None
    ema = None
    if recipe.ema > 0:
        ema_params = {k: v.detach().clone() for k, v in stack.params.items()}
        ema_buffers = {k: v.detach().clone() for k, v in stack.buffers.items()}
        ema = TensorEMA(
            [*ema_params.values(), *ema_buffers.values()],
            [*stack.params.values(), *stack.buffers.values()],
            recipe.ema,
        )
    histories: list[list[EpochStats]] = [[] for _ in seeds]
    start_epoch, wall_before = 1, 0.0
    if starts is not None:
        for m, st in enumerate(starts):
            stack.load_member(m, st["model"])
            if ema is not None:
                stack.load_member(m, st["ema"]["model"], ema_params, ema_buffers)
            histories[m] = [EpochStats(**e) for e in st["history"]]
        opt.load_state_dict(_stack_optimizer([st["optimizer"] for st in starts], plist))
        if ema is not None:
            ema.updates = starts[0]["ema"]["updates"]
        start_epoch, wall_before = starts[0]["epoch"] + 1, starts[0]["wall_seconds"]

    params_count = sum(p[0].numel() for p in plist)
    alive = torch.ones(P, dtype=torch.bool, device=device)
    diverged_at: list[dict | None] = [None] * P
    t_run = time.perf_counter()

    def outcome(m: int, status: str) -> Trained:
        if diverged_at[m] is not None:  # a member that diverged has its outcome, whatever stopped the others:
            status = "diverged"  # an "interrupted" file with diverged_at is no run's (every reader refuses it)
        return Trained(
            recipe=recipe,
            seed=seeds[m],
            status=status,
            epochs=list(histories[m]),
            params=params_count,
            wall_seconds=wall_before + time.perf_counter() - t_run,
            train_images=min(n_train, batches * bs),
            test_images=len(test_x),
            val_images=data.val_images,
            diverged_at=diverged_at[m],
            state_dict=(stack.member_state(m, ema_params, ema_buffers) if status == "completed" else None),
        )

    label = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else str(seeds)
    try:
        for epoch in range(start_epoch, n_epochs + 1):
            orders = [epoch_permutation(s, epoch, n_train, device) for s in seeds]
            drop_gens = [torch.Generator(device=device).manual_seed(epoch_seed(s, epoch)) for s in seeds]
            losses = torch.zeros(P, batches, device=device)
            correct = torch.zeros(P, device=device, dtype=torch.int64)
            seen = 0
            check_every = 1 if device.type == "cpu" else 32
            checked = 0
            sync(device)
            t0 = time.perf_counter()
            bar = progress_bar(
                progress, batches, f"step {recipe.step} seeds {label} (population {P}) epoch {epoch}/{n_epochs}"
            )
            lr = recipe.lr
            for b in range(batches):
                xs, ys = zip(
                    *(get_batch(data, perm[b * bs : (b + 1) * bs], recipe, gen) for perm, gen in orders), strict=True
                )
                x, y = torch.stack(xs), torch.stack(ys)
                masks = draw_masks(stack, drop_gens, len(y[0]), device)
                lr = lr_for(recipe, epoch, b, batches, n_epochs)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                    out = stack.forward_train(x, masks)
                loss = (
                    F.cross_entropy(
                        out.float().flatten(0, 1), y.flatten(), reduction="none", label_smoothing=recipe.label_smoothing
                    )
                    .view(P, -1)
                    .mean(1)
                )
                losses[:, b] = loss.detach()
                if (b + 1) % check_every == 0 or b == batches - 1:
                    bad = ~torch.isfinite(losses[:, checked : b + 1]) & alive[:, None]
                    for m in bad.any(1).nonzero().flatten().tolist():
                        first = checked + int(bad[m].nonzero()[0])
                        diverged_at[m] = {"epoch": epoch, "batch": first + 1, "loss": str(losses[m, first].item())}
                        alive[m] = False
                    checked = b + 1
                    if not alive.any():
                        bar.close()
                        return [outcome(m, "diverged") for m in range(P)]
                opt.zero_grad(set_to_none=True)
                torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
                opt.step()
                if ema is not None:
                    ema.update()
                correct += (out.argmax(2) == y).sum(1)
                seen += len(y[0])
                bar.update(1)
            sync(device)
            train_seconds = time.perf_counter() - t0
            bar.close()
            sizes = _batch_sizes(n_train, bs, batches, device)
            train_loss = ((losses * sizes).sum(1) / seen).tolist()
            train_acc = (100.0 * correct / seen).tolist()
            t1 = time.perf_counter()
            test_loss, test_acc = evaluate_population(
                stack, ema_params or stack.params, ema_buffers or stack.buffers, test_x, test_y
            )
            eval_seconds = time.perf_counter() - t1
            val_loss: list | None = None
            val_acc: list | None = None
            if data.val_x is not None and data.val_y is not None:
                val_loss, val_acc = evaluate_population(
                    stack, ema_params or stack.params, ema_buffers or stack.buffers, data.val_x, data.val_y
                )
            for m in range(P):
                if not alive[m]:
                    continue
                if evaluation_diverged(train_loss[m], test_loss[m], val_loss[m] if val_loss is not None else None):
                    diverged_at[m] = {"epoch": epoch, "batch": "evaluation", "loss": str(test_loss[m])}
                    alive[m] = False
                    continue
                histories[m].append(
                    EpochStats(
                        epoch=epoch,
                        train_loss=train_loss[m],
                        train_acc=train_acc[m],
                        test_loss=test_loss[m],
                        test_acc=test_acc[m],
                        lr=lr,
                        seconds=train_seconds,
                        eval_seconds=eval_seconds,
                        images_per_second=seen / train_seconds,
                        val_loss=None if val_loss is None else val_loss[m],
                        val_acc=None if val_acc is None else val_acc[m],
                    )
                )
            if not alive.any():
                return [outcome(m, "diverged") for m in range(P)]
            if on_epoch is not None:
                full = opt.state_dict()
                for m in range(P):
                    if not alive[m]:
                        continue
                    on_epoch(
                        m,
                        {
                            "epoch": epoch,
                            "model": stack.member_state(m),
                            "optimizer": _slice_optimizer(full, plist, m),
                            **(
                                {
                                    "ema": {
                                        "model": stack.member_state(m, ema_params, ema_buffers),
                                        "updates": ema.updates,
                                    }
                                }
                                if ema is not None
                                else {}
                            ),
                            "optimizer_step": epoch * batches,
                            "history": [asdict(e) for e in histories[m]],
                            "wall_seconds": wall_before + time.perf_counter() - t_run,
                        },
                    )
    except KeyboardInterrupt as e:
        raise Interrupted([outcome(m, "interrupted") for m in range(P)], e) from None
    return [outcome(m, "completed") for m in range(P)]


@torch.no_grad()
def evaluate_population(
    stack: StackedModel, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> tuple[list[float], list[float]]:
    """Per member: mean cross-entropy and accuracy (percent) over every image of (x, y)."""
    P = stack.size
    loss = torch.zeros(P, device=x.device, dtype=torch.float64)
    correct = torch.zeros(P, device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        out = stack.forward_eval(params, buffers, x[i : i + batch_size])  # (P, b, classes)
        yb = y[i : i + batch_size]
        loss += F.cross_entropy(out.flatten(0, 1), yb.repeat(P), reduction="none").view(P, -1).sum(1).double()
        correct += (out.argmax(2) == yb).sum(1)
    return (loss / len(x)).tolist(), (100.0 * correct / len(x)).tolist()
