"""``tinymnist bisect GOOD BAD``: the first commit whose seed population regresses against GOOD's.

Exit codes: 0 the first bad commit is named on the last line; 4 BAD is not shown to be a regression of GOOD;
5 skipped commits leave the first bad commit undecided (the last line lists the candidates); 6 a job died
(killed, out of memory, a time limit, cancelled: what finished is filed); 2 bad usage, a store conflict or a
repository git cannot read; 130/143 interrupted (the store keeps every finished run, and
no worktree is left).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tinymnist.commands import _args, _dispatch
from tinymnist.errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_DIED,
    EXIT_NO_REGRESSION,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_UNDECIDED,
    Terminated,
    UsageError,
)
from tinymnist.shell import console


def add_parser(sub) -> None:
    b = sub.add_parser(
        "bisect", help="find the first commit between GOOD and BAD whose seed population regresses against GOOD's"
    )
    b.add_argument("good", help="a commit where the recipe is fine")
    b.add_argument("bad", help="a later commit (first-parent descendant of GOOD) where it regressed")
    which = b.add_mutually_exclusive_group(required=True)
    which.add_argument("--step", type=_args.step, help="a built-in step")
    which.add_argument(
        "--recipe",
        metavar="FILE.toml",
        help="a recipe file, read by each commit's code: each commit's own copy when git tracks the file in the "
        "repository, else this file for every commit",
    )
    b.add_argument("--seeds", type=_args.seeds, nargs="+", default=[range(5)], help="the first population (0-4)")
    b.add_argument(
        "--max-seeds",
        type=_args.positive_int,
        default=16,
        help="grow an inconclusive commit's population up to this many seeds, then skip it (16)",
    )
    _args.add_welch(
        b,
        "points of mean last-3 accuracy: a smaller drop is no regression, and a commit shown to lose less is good "
        "(0.05, for full runs; raise it for short noisy ones)",
    )
    b.add_argument("--store", type=_args.writable_dir, required=True, help="results store (tinymnist history)")
    b.add_argument("--repo", default=".", help="the git checkout to bisect (default: the current folder)")
    b.add_argument("--epochs", type=_args.positive_int, help="train options, passed to every commit's train")
    b.add_argument("--train-subset", type=_args.positive_int, metavar="N")
    b.add_argument("--test-subset", type=_args.positive_int, metavar="N")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    _args.add_data_root(b)
    _dispatch.add_executor(b)


def run(args) -> int:
    from tinymnist.bisection import Bisector, Interrupted, JobsDied
    from tinymnist.compare import MIN_SEEDS_FOR_TEST
    from tinymnist.engine import device_name, resolve_device
    from tinymnist.results import COMMIT_VARIABLE

    if os.environ.get(COMMIT_VARIABLE) is not None:  # every job would inherit it, and each worktree is its own commit
        raise UsageError(
            f"{COMMIT_VARIABLE} is set, but a bisect records each commit's own hash from its worktree; unset it"
        )
    seeds = _args.seed_list(args.seeds)
    if len(seeds) < MIN_SEEDS_FOR_TEST:
        raise UsageError(f"--seeds: {len(seeds)} seeds; compare's test needs at least {MIN_SEEDS_FOR_TEST}")
    if args.max_seeds < len(seeds):
        raise UsageError(f"--max-seeds {args.max_seeds} is below the {len(seeds)} seeds given")
    if not (Path(args.repo) / ".git").exists():
        raise UsageError(f"--repo {args.repo}: not a git checkout")
    spec = _spec(args)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    # The machine the runs will file under: what each commit's serial train records (history.machine_key).
    from tinymnist.history import machine_folder
    from tinymnist.runner import sigterm_as_interrupt

    if args.list_jobs:
        raise UsageError("--list-jobs: a bisect's jobs depend on the verdicts before them; use train --list-jobs")
    if args.executor == "inline":
        raise UsageError("--executor inline: each commit trains with its own code, in its own process; use local")
    settings = _dispatch.settings(args)
    # One thread count for every job of the bisect: the machine folder its runs file under names it.
    threads = settings.threads or _dispatch.threads_for(settings, len(seeds), False) or 1
    machine = machine_folder(device.type, device_name(device), threads)
    store = Path(args.store)
    # On a cluster the worktrees must be where the nodes read them: beside the store, which they write.
    work_dir = store / ".work" if settings.name == "slurm" else None
    from tinymnist.executors import get

    executor = get(settings, store / ".slurm")
    t = _args.thresholds(args)
    # From here a Ctrl-C or SIGTERM is an exception that unwinds through the cleanup below (the command
    # line's own handler would end the process at once, leaving the worktrees).
    with sigterm_as_interrupt():
        b = Bisector(
            args.repo, args.store, spec, seeds, args.max_seeds, machine, executor, threads, t, work_dir=work_dir
        )
        try:
            print(
                f"bisect {console(args.good)}..{console(args.bad)}: {spec.key}, seeds {seeds[0]}-{seeds[-1]} "
                f"(up to {args.max_seeds}), store {console(args.store)}, machine {b.machine}",
                flush=True,
            )
            outcome = b.run(args.good, args.bad)
        except JobsDied as e:
            b.close()
            for ended in e.ended:
                print(
                    f"tinymnist bisect: {ended.job.name}: the job died ({ended.why}); finished seeds are filed in "
                    f"{args.store}, and the same command continues",
                    file=sys.stderr,
                )
            return EXIT_JOB_DIED
        except (Interrupted, KeyboardInterrupt) as e:
            b.close()  # before the message: what it says is done
            again = _args.same_command(args._argv)
            print(
                "\ninterrupted; the store keeps every finished run, and no worktree is left. The same command "
                f"continues from the store: {again}",
                file=sys.stderr,
            )
            if isinstance(e, Interrupted):
                return e.code
            return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
        finally:
            b.close()
    if outcome.no_regression:
        print(
            f"no regression: {console(args.bad)} is not shown to be a regression of {console(args.good)}; "
            "nothing to bisect"
        )
        return EXIT_NO_REGRESSION
    if outcome.undecided:
        cands = ", ".join(f"{c.short} {console(c.subject)}" for c in outcome.undecided)
        print(f"undecided: skipped commits leave the first bad commit among: {cands}")
        return EXIT_UNDECIDED
    assert outcome.first_bad is not None
    print(f"first bad commit: {outcome.first_bad.sha} {console(outcome.first_bad.subject)}")
    return EXIT_OK


def _spec(args):
    from tinymnist.bisection import Spec
    from tinymnist.recipes import get_recipe, resolve_recipe

    if args.step:
        recipe_args: tuple[str, ...] = ("--step", str(args.step))
        recipe = get_recipe(args.step)
    else:
        path = Path(args.recipe).resolve()
        recipe = resolve_recipe(str(path))
        recipe_args = ("--recipe", _recipe_at_each_commit(path, Path(args.repo)))
    key = recipe.key
    from tinymnist.results import TEST_IMAGES, TRAIN_IMAGES

    options: list[str] = []
    # What a stored run must have recorded to be reused: every commit's runs computed alike, serially and in
    # full (a nightly's stacked population or a smoke bisect's 1-epoch runs of the same commit are not these).
    settings: dict = {"identity.max_batches": None, "identity.population": 1, "identity.stacked": 1}
    for flag, value, setting, default in (
        ("--epochs", args.epochs, "recipe.epochs", None),
        ("--train-subset", args.train_subset, "train_images", TRAIN_IMAGES),
        ("--test-subset", args.test_subset, "test_images", TEST_IMAGES),
    ):
        if value:
            options += [flag, str(value)]
        if value or default:
            settings[setting] = value or default
    for item in args.set:
        k, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item}: expected KEY=VALUE")
        options += ["--set", item]
        try:
            settings[f"recipe.{k}"] = json.loads(text)
        except ValueError:
            settings[f"recipe.{k}"] = text
    options += ["--device", args.device]
    from tinymnist.data import resolve_root

    # Always absolute: each commit trains in its own worktree, where a relative ./data is another folder.
    options += ["--data-root", str(resolve_root(args.data_root).resolve())]
    from tinymnist.results import config_folder

    epochs = settings.get("recipe.epochs", recipe.epochs)
    config = config_folder(epochs, settings.get("train_images", TRAIN_IMAGES), settings.get("test_images", TEST_IMAGES))
    return Spec(recipe_args, key, tuple(options), settings, config)


def again(argv: list[str]) -> str:
    """What an interrupt before the bisect's own handlers prints: its own command, which continues from the
    store."""
    return f". Continue with: {_args.same_command(argv)}"


def _recipe_at_each_commit(path: Path, repo: Path) -> str:
    """How each commit's job names the recipe file: a file that git tracks in the repository by its path in the
    tree, so that each commit trains its own copy (jobs run in the commit's worktree), and a regression committed
    in the recipe file itself is found (the fourth independent sweep of issue 30: every commit trained the
    checkout's copy); any other file by its absolute path, the same for every commit."""
    import subprocess

    top = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    ).stdout.strip()
    if not top or not path.is_relative_to(Path(top).resolve()):
        return str(path)
    rel = path.relative_to(Path(top).resolve())
    tracked = subprocess.run(["git", "-C", top, "ls-files", "--error-unmatch", "--", str(rel)], capture_output=True)
    return str(rel) if tracked.returncode == 0 else str(path)
