"""``tinymnist train``: train recipes (built-in steps, recipe files, plugins) under fixed seeds; judge each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tinymnist.commands import _args, _dispatch
from tinymnist.errors import (
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    GateFailed,
    UsageError,
    UserError,
)
from tinymnist.shell import console

if TYPE_CHECKING:
    from tinymnist.recipes import Recipe

# --population's default on a GPU (seeds stacked into one model): not measured yet (no GPU in these sessions), so
# one at a time. On the CPU, seeds are jobs of the executor (tinymnist.executors): by default one process per
# core, one thread each (`python -m benchmarks.population`, reports/population/bench_cpu.json, 2 AMD EPYC cores:
# 1.29x for 2 single-thread processes against one seed at a time; stacking seeds in one process measured no
# faster, 2,709 seed-images/s for one stacked seed, 2,779 for 4).
DEFAULT_POPULATION = {"cpu": 1, "cuda": 1}


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
        help="train up to P seeds at the same time: on the CPU P jobs at once (default: one per core), on a GPU "
        "one stacked model of P seeds (default 1)",
    )
    t.add_argument(
        "--name",
        type=_args.folder_name,
        metavar="KEY",
        help="the results folder (recipe key) for this run, e.g. to keep a --set experiment apart: one recipe only",
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
        type=_args.appendable_file,
        metavar="FILE",
        help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)",
    )
    _args.add_rule(t)
    _dispatch.add_executor(t)


def recipes_of(args) -> list:
    """Every recipe asked for, with the command line's overrides, validated before any data is read."""
    return [r for r, _ in sources_of(args)]


def sources_of(args) -> list[tuple[Recipe, list[str]]]:
    """Every recipe asked for, validated, each with the ``train`` arguments that make it again (for its jobs)."""
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
    if args.name and len(base) != 1:
        raise UsageError(f"--name {args.name}: names one recipe's folder; give one --step or --recipe with it")
    recipes: list[tuple[Recipe, list[str]]] = []
    seen: dict[str, str] = {}
    for r, where in base:
        if args.name:
            from dataclasses import replace as _replace

            r = _replace(r, key=args.name)
        if r.key in seen:
            raise UsageError(f"{seen[r.key]} and {r.label} have one name, {r.key!r}: results would overwrite")
        seen[r.key] = r.label if r.key.startswith("step") else f"recipe {r.key!r}"
        r = with_overrides(r, sets, flags)
        if args.dry_run:
            from dataclasses import replace

            r = replace(r, epochs=1)
        try:
            recipes.append((validate(r), _job_args(args, where)))
        except UserError as e:  # name the recipe the bad value came from
            raise UsageError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    return recipes


def _job_args(args, where: str) -> list[str]:
    """The arguments of ``train`` that make this recipe with this command's settings, for one seed's job. A
    recipe file and the data folder are made absolute, so a job reads them from any folder or node."""
    if where.startswith("--step "):
        out = where.split(" ", 1)
    else:
        out = ["--recipe", _dispatch.absolute(where) if Path(where).exists() else where]
    for option, given in (
        ("--name", args.name),
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--train-subset", args.train_subset),
        ("--test-subset", args.test_subset),
        ("--val-split", args.val_split or None),
        ("--device", None if args.device == "auto" else args.device),
        ("--data-root", _dispatch.absolute(args.data_root) if args.data_root else None),
    ):
        if given is not None:
            out += [option, str(given)]
    for item in args.set:
        out += ["--set", item]
    if args.dry_run:
        out.append("--dry-run")
    return out


def jobs_of(args, recipes: list) -> list:
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
    from tinymnist.results import git_sha

    _args.distinct_outputs(args)
    sources = sources_of(args)  # every bad value fails here, before the data
    git_sha()  # and the commit the runs will record ($TINYMNIST_COMMIT checked)
    recipes = [r for r, _ in sources]
    for r in recipes:
        why = budget_failure(r)
        if why:
            raise GateFailed(why)
    jobs = jobs_of(args, recipes)
    _outputs_outside_recipe_folders(args, [r for r, _ in jobs])
    _population_large_enough(args, jobs)
    settings = _dispatch.settings(args, workers=args.population)
    if args.list_jobs:
        print(_jobs_json(args, sources, jobs, settings))
        return EXIT_OK
    if not jobs:
        k, n = args.shard
        print(f"shard {k}/{n}: no (recipe, seed) falls to this shard; nothing to train")
        _write_ci_files(args, [])  # the files CI was told to collect exist, and say the shard was empty
        return EXIT_OK

    if settings.name == "slurm":
        # The device is the nodes' to resolve: a login node without a GPU submits GPU jobs all the same.
        outcomes, code = _train_as_jobs(args, sources, jobs, settings)
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, EXIT_INTERNAL):
            return code
        return _finish(args, outcomes, code)
    from tinymnist.engine import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    population = args.population or DEFAULT_POPULATION[device.type]
    # options the stacked population (tinymnist.population) does not implement
    alone = [f for f in ("compile", "swa_epochs", "bn_recalibrate") for r in recipes if getattr(r, f)]
    if population > 1 and device.type == "cuda" and alone:
        raise UsageError(f"a recipe with {alone[0]} trains one seed at a time on a GPU; add --population 1")
    if _dispatched(settings, device, sum(len(s) for _, s in jobs)):
        outcomes, code = _train_as_jobs(args, sources, jobs, settings)
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, EXIT_INTERNAL):
            return code
    else:
        outcomes, code = _train_here(args, jobs, device, population)
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            return code
    return _finish(args, outcomes, code)


def _population_large_enough(args, jobs) -> None:
    """``--rule population --seeds 0-1`` trained both seeds, then failed the gate because the rule needs 8 (the
    eighth independent sweep of issue 30), where ``compare`` refuses the same up front: a usage error before any
    training. A shard judges its share, and the gathered population is judged later."""
    from tinymnist.verdict import POPULATION_MIN_SEEDS

    if judge_rule(args) != "population":
        return
    few = [f"{r.label} ({len(seeds)})" for r, seeds in jobs if len(seeds) < POPULATION_MIN_SEEDS]
    if few:
        raise UsageError(
            f"--rule population judges at least {POPULATION_MIN_SEEDS} seeds a recipe, and this run trains fewer "
            f"for {', '.join(few)}; give --seeds with at least {POPULATION_MIN_SEEDS}, or leave out --rule"
        )


def _outputs_outside_recipe_folders(args, recipes) -> None:
    """``--markdown OUT/step2`` on a fresh OUT passed parsing (nothing stood there yet), trained, and was refused
    at writing, when the run had made OUT/step2 its folder (the seventh independent sweep of issue 30): an output
    named as a folder this run files its seeds in is refused before any training. A file inside one is the
    user's choice (readers take only seedN.json there)."""
    import os

    folders = {os.path.realpath(Path(args.out) / r.key): r.key for r in recipes}
    for flag in ("junit_xml", "markdown"):
        path = getattr(args, flag, None)
        key = folders.get(os.path.realpath(path)) if path else None
        if key:
            raise UsageError(
                f"--{flag.replace('_', '-')} {path}: this run files {key}'s seeds in a folder of this name; give a "
                "file path beside it"
            )


def _finish(args, outcomes, code: int) -> int:
    """The summary line over several recipes, the CI files, and the exit code."""
    codes = [EXIT_OK if v.passed else EXIT_GATE for _, _, v in outcomes]
    if len(outcomes) > 1:
        failed = [r.label for (r, _, _), c in zip(outcomes, codes, strict=True) if c != EXIT_OK]
        smoke = all(v.smoke for _, _, v in outcomes)
        ok = "smoke runs completed; accuracy NOT JUDGED" if smoke else "all gates PASS"
        print(f"{', '.join(r.label for r, _, _ in outcomes)}: " + (f"FAIL ({', '.join(failed)})" if failed else ok))
    _write_ci_files(args, outcomes)
    # A job that failed or died outranks a verdict: a partly failed array is never a pass, nor a mere gate.
    return code or max(codes, default=EXIT_OK)


def _dispatched(settings, device, runs: int) -> bool:
    """Whether the seeds go out as jobs (processes, a cluster) rather than train in this process: always on
    SLURM; locally on the CPU when more than one job can run at once (one job gains nothing from a process of
    its own). On a GPU, seeds stack into one model in this process."""
    if settings.name == "slurm":
        return True
    if settings.name == "inline" or device.type == "cuda":
        return False
    from tinymnist.executors.local import LocalExecutor

    return LocalExecutor(settings.workers).slots(runs) > 1


def _job_list(args, sources, jobs, settings, listing: bool) -> list:
    args_of = {r.key: a for r, a in sources}
    n = sum(len(s) for _, s in jobs)
    threads = _dispatch.threads_for(settings, n, listing)
    return [
        _dispatch.train_job(r.label, r.key, args_of[r.key], s, args.out, threads=threads, resume=listing or args.resume)
        for r, seeds in jobs
        for s in seeds
    ]


def _jobs_json(args, sources, jobs, settings) -> str:
    from tinymnist.executors import jobs_json

    return jobs_json(_job_list(args, sources, jobs, settings, True))


def _train_as_jobs(args, sources, jobs, settings):
    """Every (recipe, seed) as a job on the executor; then each recipe judged from the files its jobs wrote."""
    import torch

    from tinymnist.data import load_for_training
    from tinymnist.results import ResultsError, load_result
    from tinymnist.runner import sigterm_as_interrupt

    # Every data file is validated here, once, before any job starts: bad data is one line, not one per job.
    load_for_training(args.data_root, torch.device("cpu"), args.val_split, args.train_subset, args.test_subset)
    job_list = _job_list(args, sources, jobs, settings, False)
    by_key = {r.key: r for r, _ in jobs}
    where = {"local": "local processes", "slurm": "a SLURM job array"}[settings.name]
    for r, seeds in jobs:
        print(
            f"{r.label}: {r.name} | model {r.model} | seeds {seed_text(seeds)} | {len(seeds)} jobs on {where}, "
            f"{job_list[0].threads or 'default'} thread(s) each" + _shard_text(args),
            flush=True,
        )
    on_run = _printer(args)
    runs_of: dict[str, list] = {r.key: [] for r, _ in jobs}

    def on_end(ended) -> None:
        if not ended.finished:
            return
        try:
            run = load_result(ended.job.result)
        except (ResultsError, FileNotFoundError):
            return
        runs_of[run.key].append(run)
        on_run(run)

    with sigterm_as_interrupt():
        code, interrupted = _dispatch.run_jobs(job_list, settings, Path(args.out) / ".slurm", on_end, "tinymnist train")
    if code in (EXIT_USAGE, EXIT_INTERNAL):  # the jobs' own errors, said; no verdict over seeds that never ran
        return [], code
    if interrupted:
        print(
            f"\ninterrupted ({interrupted}): the running jobs were stopped; what finished is kept in {args.out}. "
            f"Resume with: {_args.resume_command(args._argv)}",
            file=sys.stderr,
        )
        return [], code
    outcomes = []
    for key, runs in runs_of.items():
        recipe = by_key[key]
        seeds = next(s for r, s in jobs if r.key == key)
        runs = sorted(runs, key=lambda r: seeds.index(r.seed))
        outcomes.append((recipe, runs, _report(args, recipe, runs, seeds)))
    return outcomes, code


def _shard_text(args) -> str:
    return f" | shard {args.shard[0]}/{args.shard[1]}" if args.shard else ""


def _train_here(args, jobs, device, population):
    """Every seed in this process: one after another, or stacked on a GPU."""
    import torch

    from tinymnist.data import load_for_training
    from tinymnist.runner import TrainOptions, sigterm_as_interrupt
    from tinymnist.threads import default_threads

    torch.set_num_threads(args.threads or default_threads())
    options = TrainOptions(
        out=args.out,
        resume=args.resume,
        max_batches=3 if args.dry_run else None,
        eval_limit=500 if args.dry_run else None,
        progress=not args.quiet,
        requested_population=args.population,
        on_epoch=None if args.quiet else _epoch_line,
    )
    # Validated once, before any training starts.
    data = load_for_training(args.data_root, device, args.val_split, args.train_subset, args.test_subset)
    outcomes = []
    with sigterm_as_interrupt():
        for recipe, seeds in jobs:
            code, runs, verdict = _train_one(args, recipe, seeds, data, device, options, population)
            if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
                return [], code  # an interrupt stops the whole command, not just this recipe
            outcomes.append((recipe, runs, verdict))
    return outcomes, EXIT_OK


def _write_ci_files(args, outcomes) -> None:
    from tinymnist import ci

    if args.junit_xml:
        ci.write_junit(args.junit_xml, "tinymnist train", ci.train_cases(outcomes))
        print(f"wrote {console(args.junit_xml)}")
    if args.markdown:
        ci.write_markdown(args.markdown, ci.train_markdown(outcomes, args.shard))
        print(f"wrote {console(args.markdown)}")


def _epoch_line(seed: int, e: dict) -> None:
    """An epoch's line, printed when its checkpoint is written (not when the seed ends)."""
    val = "" if e.get("val_acc") is None else f"val {e['val_loss']:.4f} {e['val_acc']:6.2f}%  "
    print(
        f"  seed {seed} epoch {e['epoch']:2d}  train {e['train_loss']:.4f} {e['train_acc']:6.2f}%  {val}"
        f"test {e['test_loss']:.4f} {e['test_acc']:6.2f}%  lr {e['lr']:.5f}  {e['seconds']:5.1f}s "
        f"({e['images_per_second']:,.0f} img/s)",
        flush=True,
    )


def _printer(args):
    from tinymnist.results import diverged_where
    from tinymnist.verdict import seed_verdict

    def on_run(r) -> None:
        last = r.epochs[-1].test_acc if r.epochs else float("nan")
        # as the recipe's verdict judges it: under --rule population a seed below its own gate is a note there,
        # and printed "FAIL" here it had two verdicts (the eighth independent sweep of issue 30)
        v = seed_verdict(r, population=args.rule == "population")
        mark = ("not judged (smoke run)" if v.smoke else "PASS") if v.passed else "FAIL"
        if v.passed and v.notes:
            mark = f"below its own gate (the {args.rule} rule decides)"
        diverged = f" at {diverged_where(r.diverged_at)}" if r.diverged_at else ""
        print(
            f"seed {r.seed}: {r.status}{diverged}, {r.params:,} params, final test {last:.2f}%, "
            f"{r.wall_seconds:.0f}s ({r.threads} thread{'s' if r.threads != 1 else ''}) -> {mark}",
            flush=True,
        )

    return on_run


def _train_one(args, recipe, seeds, data, device, options, population):
    import torch

    from tinymnist.runner import RunInterrupted, how_trained, train_recipe

    how = how_trained(device, population)
    extra = f" | population {population}: one stacked model" if how == "stacked" else ""
    print(
        f"{recipe.label}: {recipe.name} | model {recipe.model} | seeds {seed_text(seeds)} | "
        f"device {device.type} | threads {torch.get_num_threads()}{extra}{_shard_text(args)}",
        flush=True,
    )
    try:
        runs, _ = train_recipe(recipe, seeds, data, device, options, population, _printer(args))
    except RunInterrupted as e:
        which = ", ".join(f"seed {r.seed} after {len(r.epochs)} complete epoch(s)" for r in e.results) or "seeds"
        where = (
            f"the completed result already in {console(args.out)} is kept; this rerun's checkpoint is in "
            f"{console(e.path)}"
            if e.kept_completed
            else f"partial results in {console(e.path)}"
        )
        print(
            f"\ninterrupted ({e.signal_name}): {recipe.label} {which}; {where}. "
            f"Resume with: {_args.resume_command(args._argv)}",
            file=sys.stderr,
        )
        return (EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED), [], None
    verdict = _report(args, recipe, runs, seeds)
    return (EXIT_OK if verdict.passed else EXIT_GATE), runs, verdict


def judge_rule(args) -> str:
    """--rule population on one shard judges that shard's share; the gathered population is judged later. A
    shard 1/1 is the whole population, judged here (it said "SHARE OK" over a failing one: the ninth sweep)."""
    return "share" if args.rule == "population" and args.shard and args.shard[1] > 1 else args.rule


def _report(args, recipe, runs, seeds):
    """The recipe's verdict over ``seeds`` (a seed without a result fails it), printed; returned."""
    from tinymnist.stats import SeedStats
    from tinymnist.verdict import judge

    verdict = judge(runs, required_seeds=seeds, rule=judge_rule(args))
    finals = [r.epochs[-1].test_acc for r in runs if r.epochs]
    if finals:
        print(
            f"{recipe.label}: final test accuracy over seeds {seed_text([r.seed for r in runs if r.epochs])}: "
            f"{SeedStats.of(finals).fmt()}"
        )
    for reason in verdict.reasons:
        print(f"GATE FAILED: {reason}", file=sys.stderr)
    for note in verdict.notes:
        print(f"below its own gate (the {args.rule} rule decides): {note}")
    print(
        f"{recipe.label}: {verdict.word}"
        + ("" if verdict.smoke else f" ({verdict.pass_rate.fmt()} pass their own checks; {verdict.rule_text})"),
        flush=True,
    )
    return verdict


def seed_text(seeds: list[int]) -> str:
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return str(seeds)


def again(argv: list[str]) -> str:
    """What an interrupt before training's own handlers prints (the data loading): the resume command."""
    return f". Resume with: {_args.resume_command(argv)}"


__all__ = ["add_parser", "again", "run", "DEFAULT_POPULATION"]
