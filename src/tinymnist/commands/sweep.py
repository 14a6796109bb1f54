"""``tinymnist sweep``: candidate recipes x a seed population, trained resumably, ranked on validation only."""

from __future__ import annotations

import sys
from pathlib import Path

from tinymnist.commands import _args, _dispatch
from tinymnist.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, UsageError, UserError
from tinymnist.shell import console


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sweep",
        help="train candidate recipes on a seed population and rank them on a validation split (never on test)",
    )
    base = s.add_mutually_exclusive_group(required=True)
    base.add_argument("--step", type=_args.step, help="the base recipe: a built-in step")
    base.add_argument("--recipe", metavar="FILE|NAME", help="the base recipe: a recipe file, plugin or pkg:obj")
    s.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'[NAME: ]KEY=VALUE ...'",
        help="a candidate: the base with these --set changes (space-separated), in folder <base>.NAME when named; "
        "repeatable",
    )
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="candidates: every combination of the grid's values; repeat for more axes",
    )
    s.add_argument(
        "--candidate", action="append", default=[], metavar="FILE|NAME", help="a candidate recipe file; repeatable"
    )
    s.add_argument("--seeds", type=_args.seeds, nargs="+", required=True, help="the seed population, e.g. 0-7")
    _args.add_val_split(s)
    s.add_argument("--epochs", type=_args.positive_int, help="override every candidate's epochs")
    s.add_argument("--train-subset", type=_args.positive_int, metavar="N", help="train on N images (a smoke sweep)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _args.add_data_root(s)
    s.add_argument("--out", type=_args.writable_dir, required=True, help="sweep folder: a folder per candidate")
    s.add_argument("--population", type=_args.positive_int, metavar="P", help="seeds trained at once (see train)")
    s.add_argument(
        "--rank-only",
        action="store_true",
        help="train nothing: rank what OUT holds for these candidates and write SWEEP.md (e.g. while a sweep runs)",
    )
    s.add_argument(
        "--shard",
        type=_args.shard,
        metavar="K/N",
        help="train only the K-th of N shards of the (candidate, seed) list (a CI matrix); rank with --rank-only",
    )
    _dispatch.add_executor(s)


def run(args) -> int:
    from tinymnist.recipes import get_recipe, resolve_recipe, with_overrides
    from tinymnist.results import git_sha
    from tinymnist.sweep import candidates

    if not args.val_split:
        raise UsageError("--val-split N is required: a sweep ranks on validation only (e.g. --val-split 10000)")
    base = get_recipe(args.step) if args.step else resolve_recipe(args.recipe)
    git_sha()  # the commit every candidate's runs will record ($TINYMNIST_COMMIT checked), before any job
    if args.epochs:
        base = with_overrides(base, [f"epochs={args.epochs}"])
    variants = list(args.variant)
    files = [resolve_recipe(f) for f in args.candidate]
    if args.epochs:
        files = [with_overrides(f, [f"epochs={args.epochs}"]) for f in files]
    try:
        cands = candidates(base, variants, args.grid, files)
    except UserError as e:
        raise UsageError(str(e)) from None
    seeds = _args.seed_list(args.seeds)
    # Where each candidate comes from, for its jobs: a recipe file's path (made absolute), and the base's ("").
    origin = {
        f.key: _dispatch.absolute(spec) if Path(spec).exists() else spec
        for f, spec in zip(files, args.candidate, strict=True)
    }
    if args.recipe:
        origin[""] = _dispatch.absolute(args.recipe) if Path(args.recipe).exists() else args.recipe
    return _train_and_rank(args, cands, seeds, origin)


def _train_and_rank(args, cands, seeds, origin: dict[str, str]) -> int:
    from tinymnist.recipes import budget_failure

    over = {c.key: why for c in cands if (why := budget_failure(c.recipe))}  # each model built once
    for key, why in over.items():
        print(f"{key}: skipped, {why}", file=sys.stderr)
    cands = [c for c in cands if c.key not in over]
    if not cands:
        raise UsageError("every candidate is over its parameter budget; nothing to sweep")
    command = _args.command_line([a for a in args._argv if a not in ("--rank-only", "--list-jobs")])
    if args.rank_only and args.list_jobs:
        raise UsageError("--rank-only trains nothing and --list-jobs lists what it would train; give one of them")
    if args.rank_only:
        return _rank(args, cands, seeds, command)
    work = _shard([(c, s) for c in cands for s in seeds], args.shard)
    settings = _dispatch.settings(args, workers=args.population)
    if args.list_jobs:
        from tinymnist.executors import jobs_json

        print(jobs_json(_jobs(args, work, origin, _dispatch.threads_for(settings, len(work), True))))
        return EXIT_OK
    print(
        f"sweep: {len(cands)} candidates x {len(seeds)} seeds, validation split {args.val_split:,}"
        + (f", shard {args.shard[0]}/{args.shard[1]}: {len(work)} runs" if args.shard else ""),
        flush=True,
    )
    if settings.name == "slurm":  # the device is the nodes' to resolve
        code = _train_as_jobs(args, work, origin, settings)
    else:
        from tinymnist.engine import resolve_device

        try:
            device = resolve_device(args.device)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if settings.name == "local" and device.type == "cpu":
            code = _train_as_jobs(args, work, origin, settings)
        else:
            code = _train_here(args, work, device)
    if code:
        return code
    if args.shard:
        print(f"shard {args.shard[0]}/{args.shard[1]} done; rank every shard's results with --rank-only")
        return EXIT_OK
    return _rank(args, cands, seeds, command)


def _shard(work: list, shard) -> list:
    """The K-th of N shards of the (candidate, seed) list, dealt round-robin as ``train --shard`` deals."""
    if shard is None:
        return work
    k, n = shard
    return work[k - 1 :: n]


def _candidate_args(args, c, origin: dict[str, str]) -> list[str]:
    """``train`` arguments that make candidate ``c`` again: its base and changes, or its recipe file."""
    if c.key in origin:
        out = ["--recipe", origin[c.key]]
    else:
        out = ["--step", str(args.step)] if args.step else ["--recipe", origin.get("", args.recipe)]
        if c.changes:
            out += ["--name", c.key]
    sets = list(c.changes) if c.key not in origin else []
    if args.epochs and not any(x.startswith("epochs=") for x in sets):
        out += ["--epochs", str(args.epochs)]
    for item in sets:
        out += ["--set", item]
    out += ["--val-split", str(args.val_split)]
    if args.train_subset:
        out += ["--train-subset", str(args.train_subset)]
    if args.device != "auto":
        out += ["--device", args.device]
    if args.data_root:
        out += ["--data-root", _dispatch.absolute(args.data_root)]
    return out


def _jobs(args, work, origin, threads):
    return [
        _dispatch.train_job(c.key, c.key, _candidate_args(args, c, origin), s, args.out, threads=threads)
        for c, s in work
    ]


def _on_run(r) -> None:  # validation only: the test figures are not shown while sweeping
    from tinymnist.recipes import Recipe

    val = [e.val_acc for e in r.epochs if e.val_acc is not None]
    k = min(Recipe.from_dict(r.recipe).expect.last_k, len(val))  # the k the ranking and SWEEP.md use
    last = f"val last-{k} {sum(val[-k:]) / k:.2f}" if k else "no epoch"
    print(f"  {r.key} seed {r.seed}: {r.status}, {last}, {r.wall_seconds:.0f}s", flush=True)


def _train_as_jobs(args, work, origin, settings) -> int:
    """Every (candidate, seed) as one job of the executor: always resumable, so a rerun finishes the rest."""
    import torch

    from tinymnist.data import load_for_training
    from tinymnist.results import ResultsError, load_result
    from tinymnist.runner import sigterm_as_interrupt

    # Every data file is validated here, once, before any job starts: bad data is one line, not one per job.
    load_for_training(args.data_root, torch.device("cpu"), args.val_split, args.train_subset)
    jobs = _jobs(args, work, origin, _dispatch.threads_for(settings, len(work), False))

    def on_end(ended) -> None:
        if ended.finished:
            try:
                _on_run(load_result(ended.job.result))
            except (ResultsError, FileNotFoundError):
                pass

    with sigterm_as_interrupt():
        code, interrupted = _dispatch.run_jobs(jobs, settings, Path(args.out) / ".slurm", on_end, "tinymnist sweep")
    if interrupted:
        print(
            f"\ninterrupted ({interrupted}): the running jobs were stopped; what finished is kept in {args.out}. "
            f"Continue with the same command: {_args.same_command(args._argv)}",
            file=sys.stderr,
        )
    return code


def _train_here(args, work, device) -> int:
    """Every (candidate, seed) in this process (--executor inline, or a GPU's stacked populations)."""
    import torch

    from tinymnist.commands.train import DEFAULT_POPULATION
    from tinymnist.data import load_for_training
    from tinymnist.runner import RunInterrupted, TrainOptions, sigterm_as_interrupt, train_recipe
    from tinymnist.threads import default_threads

    torch.set_num_threads(args.threads or default_threads())
    population = args.population or DEFAULT_POPULATION[device.type]
    # Always resumable: a rerun of the same sweep keeps completed seeds and continues checkpoints.
    options = TrainOptions(out=args.out, resume=True, progress=False, requested_population=args.population)
    data = load_for_training(args.data_root, device, args.val_split, args.train_subset)
    order: dict = {}
    for c, s in work:
        order.setdefault(c.key, (c, []))[1].append(s)
    with sigterm_as_interrupt():
        for i, (c, seeds) in enumerate(order.values(), start=1):
            print(f"[{i}/{len(order)}] {c.key}: {c.said}", flush=True)
            try:
                train_recipe(c.recipe, seeds, data, device, options, population, _on_run)
            except RunInterrupted as e:
                print(
                    f"\ninterrupted ({e.signal_name}) in {c.key}; what finished is kept in {args.out}. "
                    f"Continue with the same command: {_args.same_command(args._argv)}",
                    file=sys.stderr,
                )
                return EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    return EXIT_OK


def _rank(args, cands, seeds, command: str) -> int:
    from tinymnist.recipes import Recipe
    from tinymnist.results import atomic_write_bytes, load_results, text_bytes
    from tinymnist.sweep import rank, sweep_markdown

    runs = load_results(args.out, "val")
    for c in cands:
        for run in runs.get(c.key, []):
            # a seed trained with another recipe is not this candidate's: ranked under its name, it passed for
            # it (the fourth independent sweep of issue 30: ema=0 and lr=0.2 ranked as "ema=0.999")
            changed = [x for x in c.recipe.diff(Recipe.from_dict(run.recipe)) if not x.startswith("seeds ")]
            if changed:
                raise UsageError(
                    f"{args.out}/{c.key}/seed{run.seed}.json: trained with another recipe than candidate {c.key}'s "
                    f"({'; '.join(changed)}); retrain it (remove the file), or rank it as a candidate of its own"
                )
            if run.val_images != args.val_split:
                raise UsageError(
                    f"{args.out}/{c.key}/seed{run.seed}.json: trained with a validation split of {run.val_images:,}, "
                    f"not --val-split {args.val_split:,}; rank each split in its own --out"
                )
    ranked = rank(cands, runs, seeds)
    path = Path(args.out) / "SWEEP.md"
    atomic_write_bytes(path, text_bytes(sweep_markdown(ranked, command, args.val_split, seeds)))
    for i, r in enumerate(ranked, start=1):
        figure = r.last_k.fmt(3) if r.last_k else "not trained"
        rate = "smoke run: not judged" if r.smoke else f"{r.pass_rate.fmt()} pass on validation"  # as SWEEP.md says
        print(f"{i}. {r.candidate.key}: val last-{r.k} {figure}; {rate}")
    print(f"wrote {console(path)}")
    return EXIT_OK


def again(argv: list[str]) -> str:
    """What an interrupt before the sweep's own handlers prints: its own command, which keeps what finished
    (every candidate's jobs run with --resume)."""
    return f". Continue with: {_args.same_command(argv)}"
