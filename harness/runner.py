"""The runner around the engine: it turns training runs into files and a verdict.

It owns everything the engine does not: the results folder (one lock per step and seed, atomic writes, no
completed result ever lost), checkpoints (plain data, loaded with ``weights_only=True``), resume (the same run
or a refusal naming what differs), SIGTERM, and the step verdict (``harness.verdict.judge``).

Files of one seed, in ``OUT/stepN/``: ``seedS.json`` (the result), ``seedS.pt`` (final weights, beside a
completed result only), ``seedS.ckpt`` (the last finished epoch, while a run is unfinished), ``seedS.lock``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import engine
from harness.data import MNISTTensors
from harness.recipes import Recipe
from harness.results import (
    ResultsError,
    RunResult,
    atomic_torch_save,
    git_sha,
    load_result,
    load_torch_data,
    result_path,
    save_result,
)
from harness.verdict import Verdict, judge, seed_verdict


class RunnerError(Exception):
    """A run the runner refuses or cannot record (busy seed, resume mismatch, unsafe checkpoint, full disk).
    The message is one line naming the file and the fix; the CLI turns it into exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI timeouts and `kill` send): handled like Ctrl-C, so what was trained is written."""


class RunInterrupted(Exception):
    def __init__(self, result: RunResult, path: Path, kept_completed: bool, signal_name: str):
        super().__init__("interrupted")
        self.result, self.path, self.kept_completed, self.signal_name = result, path, kept_completed, signal_name


@dataclass(frozen=True)
class RunPlan:
    """One seed's run, and everything that decides what it computes."""

    recipe: Recipe
    seed: int
    device: torch.device
    max_batches: int | None = None
    eval_limit: int | None = None
    smoke: bool = False  # a subset or dry run: completion is judged, accuracy is not

    def identity(self, data: MNISTTensors) -> dict:
        """A resume continues a checkpoint only if every field here is equal (the recipe includes the epochs
        and the precision; the subsets are the first N images, so their sizes name them)."""
        test = len(data.test_x) if self.eval_limit is None else min(self.eval_limit, len(data.test_x))
        return {
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "train_images": len(data.train_x),
            "test_images": test,
            "max_batches": self.max_batches,
            "device": self.device.type,
            "population": 1,
        }


def _identity_of(result: RunResult) -> dict:
    # Schema-1 results recorded no identity: compare what they did record.
    return result.identity or {
        "recipe": result.recipe,
        "seed": result.seed,
        "test_images": result.test_images,
        "device": result.device,
    }


def identity_mismatch(old: dict, new: dict) -> str | None:
    """The first field where two identities differ, said in words; None when they agree."""
    for key, value in new.items():
        if key not in old or old[key] == value:
            continue
        if key == "recipe":
            try:
                changes = Recipe.from_dict(old[key]).diff(Recipe.from_dict(value))
            except (TypeError, ValueError):
                changes = ["the recipe"]
            return "recipe " + "; ".join(changes)
        return f"{key} {old[key]} -> {value}"
    return None


@contextmanager
def seed_lock(out: Path, step: int, seed: int) -> Iterator[None]:
    """One writer per (out, step, seed). The lock is the kernel's (flock), so a killed writer never leaves
    a stale one; the file only says who holds it."""
    path = result_path(out, step, seed, ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunnerError(f"{path.parent}: cannot write here ({e.strerror}); choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunnerError(
                f"{path}: step {step} seed {seed} is being written by {holder}; wait for it to "
                "finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(out: Path, step: int, seed: int) -> None:
    # atomic_write_bytes names its temporaries .seedS.<suffix>.<random>.tmp; under this seed's lock, any
    # left are from a writer that was killed between write and rename.
    for p in (Path(out) / f"step{step}").glob(f".seed{seed}.*.tmp"):
        p.unlink(missing_ok=True)


def _write(what: str, path: Path, kept: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as e:
        raise RunnerError(f"{path}: cannot write the {what} ({e.strerror}); kept: {kept}") from None


def run_seed(
    plan: RunPlan, data: MNISTTensors, out: Path, *, resume: bool = False, progress: bool = False
) -> RunResult:
    """Train one seed into ``out`` (or return its completed result under ``--resume``)."""
    recipe, seed = plan.recipe, plan.seed
    out = Path(out)
    done, ckpt, weights = (result_path(out, recipe.step, seed, s) for s in (".json", ".ckpt", ".pt"))
    with seed_lock(out, recipe.step, seed):
        _remove_stale_temporaries(out, recipe.step, seed)
        ident = plan.identity(data)
        prev = None
        if done.exists():
            try:
                prev = load_result(done)
            except ResultsError:
                if resume:
                    raise
        completed = prev is not None and prev.status == "completed" and weights.exists()
        start = None
        if resume and ckpt.exists():
            start = load_torch_data(ckpt, plan.device, fix="delete it and rerun without --resume")
            why = identity_mismatch(start.get("identity", {}), ident)
            if why:
                raise RunnerError(
                    f"{ckpt}: --resume of another run ({why}); resume with the settings it was "
                    "started with (its command is printed when it stops), or rerun without --resume"
                )
        elif resume and prev is not None and prev.status == "completed":
            why = identity_mismatch(_identity_of(prev), ident)
            if why:
                raise RunnerError(
                    f"{done}: --resume over a completed result with other settings ({why}); "
                    "nothing was changed. Rerun without --resume to replace it, or use another --out"
                )
            return prev
        commit = git_sha()  # the code that started the run, even if the checkout moves on while it trains
        state = {"epoch": 0}

        def on_epoch(snapshot: dict) -> None:
            kept = (f"the checkpoint of epoch {state['epoch']}" if state["epoch"] else "nothing of this run") + (
                f", and the completed result {done}" if completed else ""
            )
            _write("checkpoint", ckpt, kept, lambda: atomic_torch_save(ckpt, {"identity": ident, **snapshot}))
            state["epoch"] = snapshot["epoch"]

        try:
            trained = engine.train(
                recipe,
                seed,
                data,
                plan.device,
                max_batches=plan.max_batches,
                eval_limit=plan.eval_limit,
                progress=progress,
                start=start,
                on_epoch=on_epoch,
            )
        except engine.Interrupted as e:
            result = to_result(e.trained, plan, ident, commit)
            if not completed:  # an interrupted rerun never replaces a completed result-and-weights pair
                _write("partial result", done, f"the checkpoint {ckpt}", lambda: save_result(out, result))
            name = "SIGTERM" if isinstance(e.cause, Terminated) else "SIGINT"
            raise RunInterrupted(result, ckpt if completed else done, completed, name) from None
        result = to_result(trained, plan, ident, commit)
        if trained.status == "completed":
            kept = f"the checkpoint {ckpt}; free space and rerun with --resume to write the results"
            _write(
                "final weights",
                weights,
                kept,
                lambda: atomic_torch_save(
                    weights, {"model": trained.state_dict, "recipe": recipe.to_dict(), "seed": seed}
                ),
            )
            _write("result", done, kept, lambda: save_result(out, result))
            ckpt.unlink(missing_ok=True)
        else:  # diverged: a result without weights; old weights would not belong to it
            _write("result", done, "nothing of this run", lambda: save_result(out, result))
            weights.unlink(missing_ok=True)
        return result


def to_result(t: engine.Trained, plan: RunPlan, identity: dict, commit: str) -> RunResult:
    device = plan.device
    result = RunResult(
        step=t.recipe.step,
        seed=t.seed,
        params=t.params,
        recipe=t.recipe.to_dict(),
        epochs=t.epochs,
        gate={},
        status=t.status,
        device=device.type,
        device_name=engine.device_name(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        git_sha=commit,
        planned_epochs=t.recipe.epochs,
        train_images=t.train_images,
        test_images=t.test_images,
        wall_seconds=t.wall_seconds,
        diverged_at=t.diverged_at,
        identity=identity,
    )
    result.gate = seed_verdict(result, plan.smoke).to_dict()
    return result


def run_step(
    recipe: Recipe,
    seeds: Sequence[int],
    data: MNISTTensors,
    device: torch.device,
    out: Path,
    *,
    resume: bool = False,
    smoke: bool = False,
    max_batches: int | None = None,
    eval_limit: int | None = None,
    progress: bool = False,
    on_run: Callable[[RunResult], None] | None = None,
) -> tuple[list[RunResult], Verdict]:
    """Every seed of one step, one after another, then the step's verdict."""
    runs = []
    for seed in seeds:
        plan = RunPlan(recipe, seed, device, max_batches, eval_limit, smoke)
        r = run_seed(plan, data, out, resume=resume, progress=progress)
        runs.append(r)
        if on_run is not None:
            on_run(r)
    return runs, judge(runs, required_seeds=seeds, smoke=smoke)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While training, SIGTERM raises Terminated, so the run stops the way Ctrl-C stops it."""

    def handler(signum, frame):
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


__all__ = [
    "RunPlan",
    "RunnerError",
    "RunInterrupted",
    "Terminated",
    "run_seed",
    "run_step",
    "seed_lock",
    "sigterm_as_interrupt",
    "identity_mismatch",
]
