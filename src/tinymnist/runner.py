"""The runner around the engine: it turns training runs into files and a verdict.

It owns everything the engine does not: the results folder (one lock per step and seed, atomic writes, no
completed result ever lost), checkpoints (plain data, loaded with ``weights_only=True``), resume (the same run
or a refusal naming what differs), SIGTERM, and the step verdict (``tinymnist.verdict.judge``).

Files of one seed, in ``OUT/stepN/``: ``seedS.json`` (the result), ``seedS.pt`` (final weights, beside a
completed result only), ``seedS.ckpt`` (the last finished epoch, while a run is unfinished), ``seedS.lock``.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from tinymnist import engine, results
from tinymnist.data import MNISTTensors
from tinymnist.errors import Terminated, UserError
from tinymnist.recipes import Recipe, label_of
from tinymnist.results import (
    ResultsError,
    RunResult,
    atomic_torch_save,
    git_sha,
    json_bytes,
    load_result,
    load_torch_data,
    result_path,
    save_result,
    torch_bytes,
)
from tinymnist.verdict import Verdict, is_smoke, judge, seed_verdict, smoke_configuration


class RunnerError(UserError):
    """A run the runner refuses or cannot record (busy seed, resume mismatch, unsafe checkpoint, full disk).
    The message is one line naming the file and the fix; the CLI turns it into exit code 2."""


class RunInterrupted(Exception):
    """Training stopped by a signal; ``results`` are what was written (or kept) for the seeds in training, and
    ``path`` the folder that holds their files (a checkpoint, or a partial result)."""

    def __init__(self, results: list[RunResult], path: Path, kept_completed: bool, signal_name: str):
        super().__init__()  # no message: every command that catches it says its own line from these fields
        self.results, self.path, self.kept_completed, self.signal_name = results, path, kept_completed, signal_name


@dataclass(frozen=True)
class TrainOptions:
    """How a command asked seeds to be trained, whatever trains them (one process, workers, a stacked model)."""

    out: Path
    resume: bool = False
    max_batches: int | None = None  # a dry run: this many batches per epoch
    eval_limit: int | None = None  # a dry run: evaluate on this many test images
    progress: bool = False
    # --population as the user gave it; None when the harness chose it. Only what the user asked for is part
    # of a run's identity: a default that follows the machine's cores (taskset, another runner) must not
    # refuse the printed resume command (issue 18, B2).
    requested_population: int | None = None
    # told (seed, the epoch's figures as a dict of EpochStats' fields) as each epoch's checkpoint is written, so a
    # log shows a long run's epochs as they happen (issue 32: 19 minutes of silence in CI)
    on_epoch: Callable[[int, dict], None] | None = None


@dataclass(frozen=True)
class RunPlan:
    """One seed's run, and everything that decides what it computes."""

    recipe: Recipe
    seed: int
    device: torch.device
    max_batches: int | None = None
    eval_limit: int | None = None
    population: int = 1  # how many seeds trained together with this one (recorded)
    requested_population: int | None = None  # what the user asked for (a resume must match it)

    def identity(self, data: MNISTTensors, stacked: int = 1) -> dict:
        """A resume continues a checkpoint only if every field here is equal (the recipe includes the epochs
        and the precision; the subsets are the first N images, so their sizes name them)."""
        test = len(data.test_x) if self.eval_limit is None else min(self.eval_limit, len(data.test_x))
        return {
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "train_images": len(data.train_x),
            "test_images": test,
            # The split is one fixed set of its size (data.validation_indices), so its size names it.
            "val_images": data.val_images,
            "max_batches": self.max_batches,
            "device": self.device.type,
            "population": self.requested_population,
            # Seeds stacked into one model (torch.func) compute with other kernels than one seed alone: the
            # stack's size is part of what a run computes. It follows --population and the device type only.
            "stacked": stacked,
        }


def _identity_of(result: RunResult) -> dict:
    # Schema-1 results recorded no identity: compare what they did record.
    return result.identity or {
        "recipe": result.recipe,
        "seed": result.seed,
        "test_images": result.test_images,
        "device": result.device,
    }


def _checkpoint_defects(state: dict) -> list[str]:
    """The fields of a checkpoint that are missing, or in a form on_epoch never writes: every checkpoint this
    runner writes holds them all, so anything else was not written here (and would fail inside the engine)."""
    bad = [k for k in ("identity", *engine.SNAPSHOT_KEYS) if k not in state]
    ident = state.get("identity")
    if "identity" not in bad and not (isinstance(ident, dict) and {"recipe", "seed"} <= ident.keys()):
        bad.append("identity")  # every identity since the first has named its recipe and seed
    epoch, history = state.get("epoch"), state.get("history")
    whole = type(epoch) is int and isinstance(history, list) and 1 <= epoch == len(history)
    if not {"epoch", "history"} & set(bad) and not whole:
        bad.append("epoch")  # one history entry per epoch trained, and a checkpoint follows at least one
    # figures the result will carry: what a results file may not hold, a checkpoint may not either (the fourth
    # independent sweep: test_acc 200 and a NaN wall time were resumed into results that compare then refused)
    wall = state.get("wall_seconds")
    if "wall_seconds" not in bad and not (isinstance(wall, (int, float)) and math.isfinite(wall) and wall >= 0):
        bad.append("wall_seconds")
    for e in history if "history" not in bad and isinstance(history, list) else ():
        # every figure of an epoch: a number, finite, not negative (an accuracy at most 100); val_* may be None
        ok = isinstance(e, dict) and all(
            v is None
            if k.startswith("val_") and v is None
            else isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v >= 0
            and (not k.endswith("_acc") or v <= 100)
            for k, v in e.items()
        )
        if not ok:
            bad.append("history")
            break
    return bad


def identity_mismatch(old: dict, new: dict) -> str | None:
    """The first field where two identities differ, said in words; None when they agree."""
    for key, value in new.items():
        if key not in old or old[key] == value:
            continue
        if key == "population" and (value is None or old[key] is None):
            continue  # a default the harness chose, on either side, is not the user's setting
        if key == "recipe":
            try:
                changes = Recipe.from_dict(old[key]).diff(Recipe.from_dict(value))
            except (TypeError, ValueError):
                changes = ["the recipe"]
            if not changes:  # the same recipe, recorded by another version (fields added since): equal
                continue
            return "recipe " + "; ".join(changes)
        return f"{key} {old[key]} -> {value}"
    return None


@contextmanager
def seed_lock(out: Path, key: str, seed: int) -> Iterator[None]:
    """One writer per (out, recipe, seed). The lock is the kernel's (flock), so a killed writer never leaves
    a stale one; the file only says who holds it."""
    path = result_path(out, key, seed, ".lock")
    results.refuse_links_below(out, path)  # before the lock is made: nothing goes through a linked OUT/<key>
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():  # a link is refused at the open (O_NOFOLLOW), below
            results.refuse_non_files([path])  # a folder or a FIFO there: named, not exit 3 (the eighth sweep)
        # O_NOFOLLOW: a symlink at the lock would have the holder's line written into the file it names, outside
        # OUT (the fourth independent sweep of issue 30)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except results.OutputError:
        raise
    except OSError as e:
        if os.path.islink(path):
            raise results.OutputError(path, "a symlink stands where tinymnist keeps its lock; remove it") from None
        raise RunnerError(f"{path.parent}: cannot write here ({e.strerror}); choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunnerError(
                f"{path}: {label_of(key)} seed {seed} is being written by {holder}; wait for it to "
                "finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(out: Path, key: str, seed: int) -> None:
    # atomic_write_bytes names its temporaries .seedS.<suffix>.<random>.tmp; under this seed's lock, any
    # left are from a writer that was killed between write and rename.
    for p in (Path(out) / key).glob(f".seed{seed}.*.tmp"):
        p.unlink(missing_ok=True)


def _write(what: str, path: Path, kept: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as e:  # the file that failed, when the error names it (a pair has two: the weights may be it)
        where = getattr(e, "path", None) or e.filename or path
        raise RunnerError(f"{where}: cannot write the {what} ({e.strerror}); kept: {kept}") from None


class _Member:
    """One seed's files under its lock: what is there before the run, and how its outcome is written."""

    def __init__(
        self,
        plan: RunPlan,
        data: MNISTTensors,
        out: Path,
        resume: bool,
        stacked: int = 1,
        report: Callable[[int, dict], None] | None = None,
    ):
        recipe, seed = plan.recipe, plan.seed
        self.plan, self.out, self.report = plan, Path(out), report
        self.done, self.ckpt, self.weights = (result_path(out, recipe.key, seed, s) for s in (".json", ".ckpt", ".pt"))
        _remove_stale_temporaries(self.out, recipe.key, seed)
        # a folder or a symlink at one of this seed's files is refused now, not after minutes of training
        results.refuse_non_files([self.done, self.ckpt, self.weights])
        self.ident = plan.identity(data, stacked)
        prev = None
        if self.done.exists():
            try:
                prev = load_result(self.done)
            except ResultsError:
                if resume:
                    raise
        self.completed = prev is not None and prev.status == "completed" and self.weights.exists()
        i = self.ident
        smoke_now = smoke_configuration(i["train_images"], i["val_images"], i["test_images"], i["max_batches"])
        self._refuse_another_population(smoke_now)
        # a completed result with or without its weights (a committed reference keeps only the JSON)
        if not resume and smoke_now and prev is not None and prev.status == "completed" and not is_smoke(prev):
            # a dry run or a subset replacing a completed full run: its minutes (hours) lost to a smoke test
            # that proves nothing about accuracy (the fourth independent sweep of issue 30)
            raise RunnerError(
                f"{self.done}: holds a completed full run of {recipe.label} seed {seed}, which this smoke run (a "
                "subset or a dry run) would replace; give it another --out, or remove the file to retrain"
            )
        self.start: dict | None = None
        self.result: RunResult | None = None  # set when --resume finds this seed already completed
        if resume and self.ckpt.exists():
            self.start = load_torch_data(self.ckpt, plan.device, fix="delete it and rerun without --resume")
            self._refuse_defects(_checkpoint_defects(self.start))
            why = identity_mismatch(self.start["identity"], self.ident)
            if why:
                raise RunnerError(
                    f"{self.ckpt}: --resume of another run ({why}); resume with the settings it was "
                    "started with (its command is printed when it stops), or rerun without --resume"
                )
            # checked after the identity: with the same recipe, its writer kept an EMA (an SWA mean)
            kept = {"ema": recipe.ema > 0, "swa": recipe.swa_epochs > 0}
            self._refuse_defects([k for k, on in kept.items() if on and k not in self.start])
        elif resume and prev is not None and prev.status == "completed":
            why = identity_mismatch(_identity_of(prev), self.ident)
            if why:
                raise RunnerError(
                    f"{self.done}: --resume over a completed result with other settings ({why}); "
                    "nothing was changed. Rerun without --resume to replace it, or use another --out"
                )
            self.result = prev
        self.commit = git_sha()  # the code that started the run, even if the checkout moves on while it trains
        self.epoch = 0

    def _refuse_another_population(self, smoke_now: bool) -> None:
        """Before training: a seed of another recipe or configuration beside this one's files would make the
        folder one that every reader refuses (``results.load_results``), after minutes of training (the seventh
        independent sweep of issue 30: ``--set lr=0.1 --seeds 0``, then ``--seeds 1``, into one --out)."""
        for other in sorted(self.done.parent.glob("seed*.json")):
            if other == self.done or not results.RECORD_FILE.fullmatch(other.name):
                continue
            run = load_result(other)
            changed = results.recipe_changes(run.recipe, self.plan.recipe)
            if changed or is_smoke(run) != smoke_now:
                why = "; ".join(changed) or (
                    "a smoke run, this one full" if smoke_now is False else "a full run, this one smoke"
                )
                raise RunnerError(
                    f"{other}: seed {run.seed} here was trained with another recipe or configuration ({why}); one "
                    "folder is one population: train into another --out, or give this recipe its own --name"
                )
            return  # one sibling is enough: the folder's others agree with it, or a reader refuses them by name

    def _refuse_defects(self, defects: list[str]) -> None:
        if defects:
            raise RunnerError(
                f"{self.ckpt}: not a tinymnist checkpoint ({', '.join(defects)} missing or malformed); delete it "
                "and rerun without --resume"
            )

    def on_epoch(self, snapshot: dict) -> None:
        kept = (f"the checkpoint of epoch {self.epoch}" if self.epoch > 0 else "nothing of this run") + (
            f", and the completed result {self.done}" if self.completed else ""
        )
        state = {"identity": self.ident, **snapshot}
        _write("checkpoint", self.ckpt, kept, lambda: atomic_torch_save(self.ckpt, state))
        self.epoch = snapshot["epoch"]
        if self.report is not None:
            self.report(self.plan.seed, snapshot["history"][-1])

    def interrupted(self, trained: engine.Trained) -> RunResult:
        result = to_result(trained, self.plan, self.ident, results.still_committed(self.commit))
        if not self.completed:  # an interrupted rerun never replaces a completed result-and-weights pair
            _write("partial result", self.done, f"the checkpoint {self.ckpt}", lambda: save_result(self.out, result))
        return result

    def finish(self, trained: engine.Trained) -> RunResult:
        result = to_result(trained, self.plan, self.ident, results.still_committed(self.commit))
        recipe, seed = self.plan.recipe, self.plan.seed
        if trained.status == "completed":
            kept = f"the checkpoint {self.ckpt}; fix that and rerun with --resume to write the results"
            state = {"model": trained.state_dict, "recipe": recipe.to_dict(), "seed": seed}
            pair = [(self.weights, torch_bytes(state)), (self.done, json_bytes(result.to_dict()))]
            _write("result and final weights", self.done, kept, lambda: results.atomic_write_pair(pair))
            self.ckpt.unlink(missing_ok=True)
        else:  # diverged: a result without weights; old weights would not belong to it
            _write("result", self.done, "nothing of this run", lambda: save_result(self.out, result))
            self.weights.unlink(missing_ok=True)
        return result


def _signal_name(e: engine.Interrupted) -> str:
    return "SIGTERM" if isinstance(e.cause, Terminated) else "SIGINT"


def run_seed(
    plan: RunPlan,
    data: MNISTTensors,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = False,
    report: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Train one seed into ``out`` (or return its completed result under ``--resume``); ``report`` is
    TrainOptions.on_epoch."""
    with seed_lock(Path(out), plan.recipe.key, plan.seed):
        m = _Member(plan, data, out, resume, report=report)
        if m.result is not None:
            return m.result
        try:
            trained = engine.train(
                plan.recipe,
                plan.seed,
                data,
                plan.device,
                max_batches=plan.max_batches,
                eval_limit=plan.eval_limit,
                progress=progress,
                start=m.start,
                on_epoch=m.on_epoch,
            )
        except engine.CheckpointMismatch as e:
            raise RunnerError(f"{m.ckpt}: does not fit this run ({e}); delete it and rerun without --resume") from None
        except engine.Interrupted as e:
            assert isinstance(e.trained, engine.Trained)
            result = m.interrupted(e.trained)
            raise RunInterrupted([result], m.done.parent, m.completed, _signal_name(e)) from None
        return m.finish(trained)


def run_population(
    plans: Sequence[RunPlan],
    data: MNISTTensors,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = False,
    report: Callable[[int, dict], None] | None = None,
) -> list[RunResult]:
    """Train the seeds of ``plans`` (one recipe) at once as one stacked model (``tinymnist.population``); each
    seed gets its own lock, files and result, exactly as ``run_seed`` gives it. Seeds resumed from different
    epochs train as separate populations."""
    from tinymnist.population import train_population

    plans = list(plans)
    with ExitStack() as stack:
        for plan in plans:
            stack.enter_context(seed_lock(Path(out), plan.recipe.key, plan.seed))
        members = [_Member(plan, data, out, resume, len(plans), report) for plan in plans]
        results: dict[int, RunResult] = {m.plan.seed: m.result for m in members if m.result is not None}
        groups: dict[int, list[_Member]] = {}
        for m in members:
            if m.result is None:
                groups.setdefault(m.start["epoch"] if m.start else 0, []).append(m)
        for group in groups.values():
            first = group[0].plan
            starts = [m.start for m in group if m.start is not None] or None

            def on_epoch(i: int, snapshot: dict, group: list[_Member] = group) -> None:
                group[i].on_epoch(snapshot)

            try:
                trained = train_population(
                    first.recipe,
                    [m.plan.seed for m in group],
                    data,
                    first.device,
                    max_batches=first.max_batches,
                    eval_limit=first.eval_limit,
                    progress=progress,
                    starts=starts,
                    on_epoch=on_epoch,
                )
            except engine.Interrupted as e:
                assert isinstance(e.trained, list)
                partial = [m.interrupted(t) for m, t in zip(group, e.trained, strict=True)]
                folder = group[0].done.parent  # every member's files are in the recipe's one folder
                raise RunInterrupted(partial, folder, any(m.completed for m in group), _signal_name(e)) from None
            for m, t in zip(group, trained, strict=True):
                results[m.plan.seed] = m.finish(t)
        return [results[p.seed] for p in plans]


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
        population=plan.population,
        val_images=t.val_images,
        # the code that ran, as well as its commit: a bisect checks that each commit ran its own (issue 30)
        extra={"tinymnist": str(Path(__file__).resolve().parent)},
    )
    result.gate = seed_verdict(result).to_dict()
    return result


def run_step(
    recipe: Recipe,
    seeds: Sequence[int],
    data: MNISTTensors,
    device: torch.device,
    options: TrainOptions,
    *,
    on_run: Callable[[RunResult], None] | None = None,
    population: int = 1,
    stacked: bool = False,
) -> tuple[list[RunResult], Verdict]:
    """Every seed of one recipe in this process, then the verdict. With ``stacked``, seeds train ``population``
    at a time as one stacked model; otherwise one after another (a worker of a CPU population records its
    size)."""
    plans = [
        RunPlan(recipe, s, device, options.max_batches, options.eval_limit, population, options.requested_population)
        for s in seeds
    ]
    size = population if stacked else 1
    resume, progress, report = options.resume, options.progress, options.on_epoch
    runs = []
    for i in range(0, len(plans), size):
        chunk = plans[i : i + size]
        done = (
            run_population(chunk, data, options.out, resume=resume, progress=progress, report=report)
            if len(chunk) > 1
            else [run_seed(chunk[0], data, options.out, resume=resume, progress=progress, report=report)]
        )
        for r in done:
            runs.append(r)
            if on_run is not None:
                on_run(r)
    return runs, judge(runs, required_seeds=seeds)


def how_trained(device: torch.device, population: int) -> str:
    """How ``population`` seeds at a time train on ``device`` in this process: "stacked" (one model of many
    seeds, on a GPU) or "serial" (one after another). Seeds on several CPU cores are jobs of an executor
    (tinymnist.executors), each its own process: dispatch is not the runner's."""
    return "stacked" if device.type == "cuda" and population > 1 else "serial"


def train_recipe(
    recipe: Recipe,
    seeds: list[int],
    data: MNISTTensors,
    device: torch.device,
    options: TrainOptions,
    population: int,
    on_run: Callable[[RunResult], None],
) -> tuple[list[RunResult], Verdict]:
    """Train every seed of ``recipe`` in this process, stacked where ``device`` allows it, then the verdict."""
    how = how_trained(device, population)
    if how == "serial":
        population = 1  # what the results record is how the seeds really trained: one at a time
    return run_step(
        recipe, seeds, data, device, options, on_run=on_run, population=population, stacked=how == "stacked"
    )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While training, SIGTERM raises Terminated, so the run stops the way Ctrl-C stops it.

    One-shot: the first SIGINT or SIGTERM interrupts, and later ones are ignored until the context ends, so a
    second signal (a CI runner signals the whole process group, then the parent forwards it; an impatient
    second Ctrl-C) cannot abandon the partial result being written.
    """

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


__all__ = [
    "RunPlan",
    "RunnerError",
    "RunInterrupted",
    "Terminated",
    "run_seed",
    "run_step",
    "train_recipe",
    "TrainOptions",
    "seed_lock",
    "sigterm_as_interrupt",
    "identity_mismatch",
]
