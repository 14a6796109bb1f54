"""``tinymnist train``: train recipes (built-in steps, recipe files, plugins) under fixed seeds; judge each."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tinymnist.commands import _args
from tinymnist.errors import EXIT_GATE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, GateFailed, UsageError, UserError

if TYPE_CHECKING:
    from tinymnist.recipes import Recipe

# --population's default, per device, from `python -m benchmarks.population` (reports/population/bench_cpu.json,
# 2 AMD EPYC cores): end to end, 1.29x for 2, 1.32x for 4 and 1.37x for 8 against one seed at a time. On the CPU
# every P >= 2 runs one single-thread worker per core (so 2, 4 and 8 differ by noise only), and 2 is the
# smallest that reaches that speed. Stacking seeds in one process measured no faster (2,709 seed-images/s for
# one stacked seed, 2,779 for 4, fp32). CUDA: not measured yet (no GPU in these sessions): one at a time.
DEFAULT_POPULATION = {"cpu": 2, "cuda": 1}


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train recipes under fixed seeds and check their gates")
    t.add_argument(
        "--step", type=_args.step, nargs="+", default=[], help="built-in steps, run in order (--step 1 2 3 4)"
    )
    t.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FILE|NAME",
        help="a recipe file (.toml), an installed plugin's recipe, or package.module:object; repeatable, and "
        "mixable with --step",
    )
    t.add_argument(
        "--seeds",
        type=_args.seeds,
        nargs="+",
        help="seeds to run, in [0, 2**32): numbers or ranges, e.g. 0-31 40 (default: each recipe's)",
    )
    t.add_argument("--epochs", type=_args.positive_int, help="override the recipe's epochs (gates assume its own)")
    t.add_argument("--batch-size", type=_args.positive_int, help="override the recipe's batch size")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _args.add_data_root(t)
    t.add_argument("--out", type=_args.writable_dir, default=Path("results"), help="results folder (default results/)")
    t.add_argument("--resume", action="store_true", help="continue each seed from its last epoch checkpoint")
    t.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch of 3 batches, accuracy not judged")
    t.add_argument(
        "--train-subset", type=_args.positive_int, metavar="N", help="train on the first N training images only"
    )
    t.add_argument("--test-subset", type=_args.positive_int, metavar="N", help="evaluate on the first N test images")
    _args.add_val_split(t)
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment: override a recipe field (JSON value), e.g. --set lr=0.05; recorded in the results",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    t.add_argument(
        "--population",
        type=_args.positive_int,
        metavar="P",
        help="train up to P seeds at the same time: on the CPU one single-thread worker process per core, on a "
        "GPU one stacked model (default: the fastest size measured for the device; 1 = one at a time)",
    )
    t.add_argument(
        "--shard",
        type=_args.shard,
        metavar="K/N",
        help="train only the K-th of N shards of the (recipe, seed) list, e.g. for a CI matrix or a SLURM array",
    )
    t.add_argument(
        "--junit-xml",
        type=_args.writable_file,
        metavar="FILE",
        help="also write the verdicts as JUnit XML (one case per seed)",
    )
    t.add_argument(
        "--markdown",
        type=_args.writable_file,
        metavar="FILE",
        help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)",
    )


def recipes_of(args) -> list:
    """Every recipe asked for, with the command line's overrides, validated before any data is read."""
    from tinymnist.recipes import get_recipe, resolve_recipe, validate, with_overrides

    if not args.step and not args.recipe:
        raise UsageError("give --step N or --recipe FILE.toml (or both)")
    base = [(get_recipe(s), f"--step {s}") for s in args.step] + [(resolve_recipe(x), x) for x in args.recipe]
    flags: dict[str, tuple[str, str]] = {}
    sets: list[str] = []
    # The flags are shorthands for --set, so every value goes through the one validation below; one field set
    # twice (--epochs 1 --set epochs=3) is refused there, naming both.
    for field, flag, value in (("epochs", "--epochs", args.epochs), ("batch_size", "--batch-size", args.batch_size)):
        if value:
            sets.append(f"{field}={value}")
            flags[field] = (f"{flag} {value}", str(value))
    sets += args.set
    recipes: list[Recipe] = []
    seen: dict[str, str] = {}
    for r, where in base:
        if r.key in seen:
            raise UsageError(f"{seen[r.key]} and {r.label} have one name, {r.key!r}: results would overwrite")
        seen[r.key] = r.label if r.key.startswith("step") else f"recipe {r.key!r}"
        r = with_overrides(r, sets, flags)
        if args.dry_run:
            from dataclasses import replace

            r = replace(r, epochs=1)
        try:
            recipes.append(validate(r))
        except UserError as e:  # name the recipe the bad value came from
            raise UsageError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    return recipes


def jobs_of(args, recipes: list[Recipe]) -> list[tuple[Recipe, list[int]]]:
    """(recipe, seeds) to train here: every recipe's seeds, or this shard's share of the (recipe, seed) list.

    The list is laid out recipe by recipe, seed by seed, and dealt round-robin, so shards are disjoint, their
    union is the whole list, each gets a like share of every recipe, and the split is the same on any machine."""
    seeds_given = _args.seed_list(args.seeds) if args.seeds else None
    plan = [(r, seeds_given if seeds_given is not None else list(r.seeds)) for r in recipes]
    total = sum(len(s) for _, s in plan)
    if total > _args.MAX_SEEDS * max(1, len(recipes)):
        raise UsageError(f"--seeds: {total:,} runs; at most {_args.MAX_SEEDS:,} seeds per recipe")
    if args.shard is None:
        return plan
    k, n = args.shard
    flat = [(r, s) for r, seeds in plan for s in seeds]
    mine = flat[k - 1 :: n]
    out = []
    for r, _ in plan:
        seeds = [s for rr, s in mine if rr is r]
        if seeds:
            out.append((r, seeds))
    return out


def run(args) -> int:
    from tinymnist.recipes import budget_failure

    recipes = recipes_of(args)  # every bad value fails here, before the data
    for r in recipes:
        why = budget_failure(r)
        if why:
            raise GateFailed(why)
    jobs = jobs_of(args, recipes)
    if not jobs:
        k, n = args.shard
        print(f"shard {k}/{n}: no (recipe, seed) falls to this shard; nothing to train")
        return EXIT_OK

    from tinymnist.data import load_for_training
    from tinymnist.engine import resolve_device
    from tinymnist.runner import TrainOptions, sigterm_as_interrupt

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    population = args.population or DEFAULT_POPULATION[device.type]
    if population > 1 and device.type == "cuda" and any(r.compile for r in recipes):
        raise UsageError("--set compile=true trains one seed at a time on a GPU; add --population 1")
    options = TrainOptions(
        out=args.out,
        resume=args.resume,
        max_batches=3 if args.dry_run else None,
        eval_limit=500 if args.dry_run else None,
        progress=not args.quiet,
        requested_population=args.population,
    )
    # Validated once, before any training starts; a CPU population's forked workers share these tensors.
    data = load_for_training(args.data_root, device, args.val_split, args.train_subset, args.test_subset)
    outcomes = []
    with sigterm_as_interrupt():
        for recipe, seeds in jobs:
            code, runs, verdict = _train_one(args, recipe, seeds, data, device, options, population)
            if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
                return code  # an interrupt stops the whole command, not just this recipe
            outcomes.append((recipe, runs, verdict))
    codes = [EXIT_OK if v.passed else EXIT_GATE for _, _, v in outcomes]
    if len(outcomes) > 1:
        failed = [r.label for (r, _, _), c in zip(outcomes, codes, strict=True) if c != EXIT_OK]
        smoke = all(v.smoke for _, _, v in outcomes)
        ok = "all smoke runs OK (accuracy not judged)" if smoke else "all gates PASS"
        print(f"{', '.join(r.label for r, _, _ in outcomes)}: " + (f"FAIL ({', '.join(failed)})" if failed else ok))
    _write_ci_files(args, outcomes)
    return max(codes)


def _write_ci_files(args, outcomes) -> None:
    from tinymnist import ci

    if args.junit_xml:
        ci.write_junit(args.junit_xml, "tinymnist train", ci.train_cases(outcomes))
        print(f"wrote {args.junit_xml}")
    if args.markdown:
        ci.write_markdown(args.markdown, ci.train_markdown(outcomes, args.shard))
        print(f"wrote {args.markdown}")


def _train_one(args, recipe, seeds, data, device, options, population):
    import torch

    from tinymnist.runner import RunInterrupted, how_trained, train_recipe
    from tinymnist.stats import SeedStats
    from tinymnist.verdict import seed_verdict

    how, n = how_trained(device, population, seeds)
    extra = {
        "workers": f" | population {population}: {n} worker processes, 1 thread each",
        "stacked": f" | population {population}: one stacked model",
        "serial": "",
    }[how]
    shard = f" | shard {args.shard[0]}/{args.shard[1]}" if args.shard else ""
    print(
        f"{recipe.label}: {recipe.name} | model {recipe.model} | seeds {seed_text(seeds)} | "
        f"device {device.type} | threads {1 if how == 'workers' else torch.get_num_threads()}{extra}{shard}",
        flush=True,
    )

    def on_run(r) -> None:
        if not args.quiet:
            for e in r.epochs:
                val = "" if e.val_acc is None else f"val {e.val_loss:.4f} {e.val_acc:6.2f}%  "
                print(
                    f"  seed {r.seed} epoch {e.epoch:2d}  train {e.train_loss:.4f} {e.train_acc:6.2f}%  {val}"
                    f"test {e.test_loss:.4f} {e.test_acc:6.2f}%  lr {e.lr:.5f}  {e.seconds:5.1f}s "
                    f"({e.images_per_second:,.0f} img/s)"
                )
        last = r.epochs[-1].test_acc if r.epochs else float("nan")
        v = seed_verdict(r)
        mark = ("smoke" if v.smoke else "PASS") if v.passed else "FAIL"
        diverged = f" diverged at {r.diverged_at}" if r.diverged_at else ""
        print(
            f"seed {r.seed}: {r.status}{diverged}, {r.params:,} params, final test {last:.2f}%, "
            f"{r.wall_seconds:.0f}s -> {mark}",
            flush=True,
        )

    try:
        runs, verdict = train_recipe(recipe, seeds, data, device, options, population, on_run)
    except RunInterrupted as e:
        which = ", ".join(f"seed {r.seed} after {len(r.epochs)} complete epoch(s)" for r in e.results) or "seeds"
        where = (
            f"the completed result already in {args.out} is kept; this rerun's checkpoint is in {e.path}"
            if e.kept_completed
            else f"partial results in {e.path}"
        )
        print(
            f"\ninterrupted ({e.signal_name}): {recipe.label} {which}; {where}. "
            f"Resume with: {resume_command(args._argv)}",
            file=sys.stderr,
        )
        return (EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED), [], None
    finals = [r.epochs[-1].test_acc for r in runs if r.epochs]
    if finals:
        print(
            f"{recipe.label}: final test accuracy over seeds {seed_text([r.seed for r in runs if r.epochs])}: "
            f"{SeedStats.of(finals).fmt()}"
        )
    for reason in verdict.reasons:
        print(f"GATE FAILED: {reason}", file=sys.stderr)
    print(
        f"{recipe.label}: {verdict.word}"
        + ("" if verdict.smoke else f" ({verdict.pass_rate.fmt()} pass their own checks)"),
        flush=True,
    )
    return (EXIT_OK if verdict.passed else EXIT_GATE), runs, verdict


def seed_text(seeds: list[int]) -> str:
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return str(seeds)


def resume_command(argv: list[str]) -> str:
    """The command that was run, shell-quoted, plus --resume: the same run, continued, by the interpreter that
    ran it (a bare `python` may be another one, without tinymnist)."""
    return shlex.join([sys.executable, "-m", "tinymnist", *argv, *([] if "--resume" in argv else ["--resume"])])


__all__ = ["add_parser", "run", "DEFAULT_POPULATION", "resume_command"]
