"""Command line: ``python -m harness {train,models,export,evaluate,report,compare,log} ...``;
``main(argv)`` returns the exit code, and each code means one thing:

0 pass; 1 a gate failed, a run diverged, or ``compare`` found a regression; 2 bad usage or bad data (one line
naming the argument or file and the fix); 3 an internal error (one line, and the path of the saved
traceback); 130 interrupted by Ctrl-C, 143 by SIGTERM (what was trained is written, and the resume command
printed). A crash is never 1, so CI never reads a crash as a regression.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
MAX_SEEDS = 10_000  # a range is expanded into a list: keep it to what anyone trains
SEED_LIMIT = 2**32  # torch's CPU generator keeps 32 bits of a seed: 2**32 would replay seed 0


class UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"seed {value} is outside [0, 2**32): larger seeds would alias smaller ones; choose a seed in 0-4294967295"
        )
    return value


def _seeds(text: str) -> list[int]:
    """``7`` or a range ``0-31`` (both ends included)."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo:
        return [_seed(text)]
    if not hi:
        raise argparse.ArgumentTypeError(f"seed range {text!r}: write it as START-END, e.g. 0-31")
    a, b = _seed(lo), _seed(hi)
    if b < a:
        raise argparse.ArgumentTypeError(f"seed range {text}: the end is below the start")
    if b - a >= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"seed range {text}: {b - a + 1:,} seeds; at most {MAX_SEEDS:,} in one run")
    return list(range(a, b + 1))


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return value


def _step(text: str) -> int:
    from harness.recipes import RECIPES

    value = _int(text)
    if value not in RECIPES:
        raise argparse.ArgumentTypeError(f"unknown step {value}; known steps: {', '.join(map(str, sorted(RECIPES)))}")
    return value


def _writable_dir(text: str) -> Path:
    """Create the folder now and prove it writable, so a bad --out fails before minutes of training."""
    import tempfile

    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f"{text}: cannot create or write this folder ({e.strerror}); choose another --out"
        ) from None
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="tinymnist: tiny CNNs on MNIST, gated.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a step's recipe under fixed seeds and check its gate")
    t.add_argument(
        "--step", type=_step, nargs="+", required=True, help="which steps' recipes, run in order (e.g. --step 1 2 3 4)"
    )
    t.add_argument(
        "--seeds",
        type=_seeds,
        nargs="+",
        help="seeds to run, in [0, 2**32): numbers or ranges, e.g. 0-31 40 (default: the recipe's)",
    )
    t.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs (gates assume its own)")
    t.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")
    t.add_argument("--out", type=_writable_dir, default=Path("results"), help="results folder (default results/)")
    t.add_argument("--resume", action="store_true", help="continue each seed from its last epoch checkpoint")
    t.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch of 3 batches, gate not checked")
    t.add_argument(
        "--train-subset",
        type=_positive_int,
        metavar="N",
        help="train on the first N training images only (quick checks; gate not checked)",
    )
    t.add_argument(
        "--test-subset",
        type=_positive_int,
        metavar="N",
        help="evaluate on the first N test images only (quick checks; gate not checked)",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment: override a recipe field (JSON value), e.g. --set lr=0.05; recorded in "
        "the results, gate unchanged",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    t.add_argument(
        "--population",
        type=_positive_int,
        metavar="P",
        help="train up to P seeds at the same time: on the CPU one single-thread worker process per core, on a "
        "GPU one stacked model (default: the fastest size measured for the device; 1 = one at a time)",
    )

    sub.add_parser("models", help="list registered models with their parameter counts")

    e = sub.add_parser("export", help="export a trained checkpoint to ONNX (dynamo exporter, dynamic batch)")
    e.add_argument("--step", type=_step, required=True, help="the step the checkpoint was trained for")
    e.add_argument("--checkpoint", required=True, help="results/stepN/seedS.pt written by `train`")
    e.add_argument("--out", required=True, help="where to write the .onnx file")

    v = sub.add_parser("evaluate", help="test accuracy of an exported model through onnxruntime")
    v.add_argument("--onnx", required=True, help="the .onnx file written by `export`")
    v.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")
    v.add_argument("--threads", type=_positive_int, help="onnxruntime intra-op threads (default: its own)")

    r = sub.add_parser("report", help="write REPORT.md and plots from a results folder")
    r.add_argument("results", help="folder with step*/seed*.json (e.g. results/)")
    r.add_argument("--out", type=_writable_dir, required=True, help="folder for REPORT.md and its images")
    r.add_argument("--bench", nargs="*", default=[], help="pytest-benchmark JSON files to add as tables")

    g = sub.add_parser("log", help="experiment log (markdown) from a folder of experiment result folders")
    g.add_argument("experiments", help="folder whose sub-folders are --out folders of `train` runs")
    g.add_argument("--out", required=True, help="markdown file to write, e.g. reports/experiments.md")

    k = sub.add_parser("calibrate", help="measured false-alarm rate and power of compare on a population's seeds")
    k.add_argument("results", help="results folder holding one step's population (e.g. reports/population)")
    k.add_argument("--step", type=_step, default=4, help="the step to calibrate on (4)")
    k.add_argument("--splits", type=_positive_int, default=1000, help="random half-splits (1000)")
    k.add_argument("--seed", type=_int, default=0, help="seed of the splits (0)")
    k.add_argument("--alpha", type=_fraction, default=0.01, help="compare's significance level (0.01)")
    k.add_argument("--min-effect", type=_non_negative, default=0.05, help="compare's minimum effect (0.05)")
    k.add_argument("--out", required=True, help="JSON file to write, e.g. reports/population/calibration.json")

    c = sub.add_parser("compare", help="compare two results folders; exit 1 on a regression")
    c.add_argument("baseline", help="results folder of the reference run (e.g. reports/baseline)")
    c.add_argument("new", help="results folder of the run under test")
    c.add_argument(
        "--alpha",
        type=_fraction,
        default=0.01,
        help="significance of the one-sided Welch t-test, used with >= 5 seeds a side (0.01)",
    )
    c.add_argument(
        "--min-effect",
        type=_non_negative,
        default=0.05,
        help="smallest drop of the mean last-3 accuracy, in points, that counts as a regression (0.05)",
    )
    c.add_argument(
        "--max-acc-drop",
        type=_non_negative,
        default=0.10,
        help="fewer than 5 seeds a side: points of mean last-3 accuracy that may be lost (0.10)",
    )
    c.add_argument("--max-throughput-drop", type=_fraction, default=0.10, help="fraction of throughput (0.10)")
    c.add_argument("--steps", type=_step, nargs="+", help="compare only these steps (default: all found)")
    return p


def cmd_models(args) -> int:
    from models import count_params, create_model, list_models

    for name in list_models():
        print(f"{name:16s} {count_params(create_model(name)):>9,d}")
    return EXIT_OK


def cmd_train(args) -> int:
    from harness.data import load_mnist
    from harness.engine import resolve_device
    from harness.runner import sigterm_as_interrupt

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    recipes = [_recipe(args, step) for step in args.step]  # every bad value fails here, before the data
    population = args.population or DEFAULT_POPULATION[device.type]
    if population > 1 and device.type == "cuda" and any(r.compile for r in recipes):
        raise UsageError("--set compile=true trains one seed at a time on a GPU; add --population 1")
    workers = device.type == "cpu" and population > 1
    # Validated once, before any training starts; a CPU population's forked workers share these tensors.
    data = load_mnist(args.data_root, device)
    if args.train_subset or args.test_subset:
        data = data.subset(args.train_subset or len(data.train_x), args.test_subset or len(data.test_x))
    codes = []
    with sigterm_as_interrupt():
        for recipe in recipes:
            code = _train_step(args, recipe, data, device, population, workers)
            if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
                return code  # an interrupt stops the whole command, not just this step
            codes.append(code)
    if len(codes) > 1:
        failed = [s for s, c in zip(args.step, codes, strict=True) if c != EXIT_OK]
        ok = "all smoke runs OK (gates not checked)" if _smoke(args) else "all gates PASS"
        print(f"steps {args.step}: " + (f"FAIL (steps {failed})" if failed else ok))
    return max(codes)


def _smoke(args) -> bool:
    return bool(args.dry_run or args.train_subset or args.test_subset)


def _recipe(args, step: int):
    from harness.recipes import get_recipe, validate, with_overrides

    sets = list(args.set)
    # The flags are shorthands for --set, so every value goes through the one validation below.
    if args.epochs:
        sets.append(f"epochs={args.epochs}")
    if args.dry_run:
        sets.append("epochs=1")
    if args.batch_size:
        sets.append(f"batch_size={args.batch_size}")
    try:
        return validate(with_overrides(get_recipe(step), sets))
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def _train_step(args, recipe, data, device, population: int, workers: bool) -> int:
    import torch

    from harness.runner import RunInterrupted, run_step
    from harness.stats import SeedStats
    from harness.verdict import seed_verdict

    seeds = _seed_list(args.seeds) if args.seeds else list(recipe.seeds)
    smoke = _smoke(args)
    workers = workers and _workers(population, seeds) > 1  # one seed, or one core: no process to start
    stacked = device.type == "cuda" and population > 1
    if not (workers or stacked):
        population = 1  # what the results record is how the seeds really trained: one at a time
    how = ""
    if workers:
        how = f" | population {population}: {_workers(population, seeds)} worker processes, 1 thread each"
    elif stacked:
        how = f" | population {population}: one stacked model"
    print(
        f"step {recipe.step}: {recipe.name} | model {recipe.model} | seeds {_seed_text(seeds)} | "
        f"device {device.type} | threads {1 if workers else torch.get_num_threads()}{how}",
        flush=True,
    )

    def on_run(r) -> None:
        if not args.quiet:
            for e in r.epochs:
                print(
                    f"  seed {r.seed} epoch {e.epoch:2d}  train {e.train_loss:.4f} {e.train_acc:6.2f}%  "
                    f"test {e.test_loss:.4f} {e.test_acc:6.2f}%  lr {e.lr:.5f}  {e.seconds:5.1f}s "
                    f"({e.images_per_second:,.0f} img/s)"
                )
        last = r.epochs[-1].test_acc if r.epochs else float("nan")
        v = seed_verdict(r, smoke)
        mark = ("smoke" if v.smoke else "PASS") if v.passed else "FAIL"
        extra = f" diverged at {r.diverged_at}" if r.diverged_at else ""
        print(
            f"seed {r.seed}: {r.status}{extra}, {r.params:,} params, final test {last:.2f}%, "
            f"{r.wall_seconds:.0f}s -> {mark}",
            flush=True,
        )

    try:
        if workers:
            runs, verdict = _run_workers(args, recipe, seeds, population, smoke, data, on_run)
        else:
            runs, verdict = run_step(
                recipe,
                seeds,
                data,
                device,
                args.out,
                resume=args.resume,
                smoke=smoke,
                max_batches=3 if args.dry_run else None,
                eval_limit=500 if args.dry_run else None,
                progress=not args.quiet,
                on_run=on_run,
                population=population,
                stacked=stacked,
            )
    except RunInterrupted as e:
        which = ", ".join(f"seed {r.seed} after {len(r.epochs)} complete epoch(s)" for r in e.results) or "seeds"
        where = (
            f"the completed result already in {args.out} is kept; this rerun's checkpoint is {e.path}"
            if e.kept_completed
            else f"partial results in {e.path}"
        )
        print(
            f"\ninterrupted ({e.signal_name}): step {recipe.step} {which}; {where}. "
            f"Resume with: {resume_command(args._argv)}",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    finals = [r.epochs[-1].test_acc for r in runs if r.epochs]
    if finals:
        print(
            f"step {recipe.step}: final test accuracy over seeds {_seed_text([r.seed for r in runs if r.epochs])}: "
            f"{SeedStats.of(finals).fmt()}"
        )
    for reason in verdict.reasons:
        print(f"GATE FAILED: {reason}", file=sys.stderr)
    print(
        f"step {recipe.step}: {verdict.word}"
        + ("" if verdict.smoke else f" ({verdict.pass_rate.fmt()} pass their own checks)"),
        flush=True,
    )
    return EXIT_OK if verdict.passed else EXIT_GATE


# --population's default, per device, from `python -m benchmarks.population` (reports/population/bench_cpu.json,
# 2 AMD EPYC cores): end to end, 1.29x for 2, 1.32x for 4 and 1.37x for 8 against one seed at a time. On the CPU
# every P >= 2 runs one single-thread worker per core (so 2, 4 and 8 differ by noise only), and 2 is the
# smallest that reaches that speed. Stacking seeds in one process measured no faster (2,709 seed-images/s for
# one stacked seed, 2,779 for 4, fp32). CUDA: not measured yet (no GPU in these sessions): one at a time.
DEFAULT_POPULATION = {"cpu": 2, "cuda": 1}


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _workers(population: int, seeds: list[int]) -> int:
    return max(1, min(population, len(seeds), _cores()))


def _run_workers(args, recipe, seeds: list[int], population: int, smoke: bool, data, on_run):
    """A CPU population: the seeds dealt to one single-thread worker process per core, each training its share
    one seed at a time with the runner's locks, files and checks; then one verdict here, from their results.

    Workers are forked, so they share the data already loaded instead of each importing torch and reading the
    files again. A worker interrupted, or failing, ends the step with its exit code.
    """
    import multiprocessing as mp
    import signal
    from queue import Empty

    from harness.engine import progress_bar
    from harness.results import ResultsError, git_sha, load_result, result_path
    from harness.runner import RunInterrupted, Terminated
    from harness.verdict import judge

    def _results() -> list:
        runs = []
        for s in seeds:
            try:
                runs.append(load_result(result_path(args.out, recipe.step, s)))
            except (ResultsError, FileNotFoundError):
                pass  # judged as a missing seed
        return runs

    n = _workers(population, seeds)
    git_sha()  # read once here, so every worker records the commit that started the population
    ctx = mp.get_context("fork")
    queue = ctx.Queue()  # finished results, so that each seed's line prints as it ends
    procs = [
        ctx.Process(target=_worker, args=(args, recipe, seeds[w::n], population, smoke, data, queue)) for w in range(n)
    ]
    for p in procs:
        p.start()
    # The population's bar: seeds finished of all (the workers train without bars of their own).
    bar = progress_bar(not args.quiet, len(seeds), f"step {recipe.step} population {population}: seeds finished")
    try:
        finished = 0
        while finished < n:
            try:
                item = queue.get(timeout=1.0)
            except Empty:
                if not any(p.is_alive() for p in procs):  # a worker killed before it could say so
                    break
                continue
            if item is None:
                finished += 1
            elif isinstance(item, str):  # a worker's one-line error, printed here where stderr is the user's
                print(item, file=sys.stderr, flush=True)
            else:
                bar.update(1)
                on_run(item)
        bar.close()
        for p in procs:
            p.join()
    except KeyboardInterrupt as e:
        # Ctrl-C reached the workers too (one process group); SIGTERM (a CI timeout) reached only this one.
        sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        for p in procs:
            if sig == signal.SIGTERM and p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)
                p.join()
        raise RunInterrupted(
            _results(), Path(args.out) / f"step{recipe.step}", False, "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        ) from None
    codes = [p.exitcode for p in procs]
    for w, code in enumerate(codes):
        known = (EXIT_OK, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED)
        if code not in known:
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"ended with code {code}"
            print(
                f"python -m harness train: error: the worker process for seeds {seeds[w::n]} {how} (out of "
                "memory?); finished seeds are kept, and --resume continues the others from their checkpoints",
                file=sys.stderr,
            )
            raise _WorkerFailed(EXIT_INTERNAL)
    if EXIT_INTERNAL in codes or EXIT_USAGE in codes:
        raise _WorkerFailed(EXIT_INTERNAL if EXIT_INTERNAL in codes else EXIT_USAGE)
    if EXIT_TERMINATED in codes or EXIT_INTERRUPTED in codes:
        signal_name = "SIGTERM" if EXIT_TERMINATED in codes else "SIGINT"
        raise RunInterrupted(_results(), Path(args.out) / f"step{recipe.step}", False, signal_name)
    runs = _results()
    return runs, judge(runs, required_seeds=seeds, smoke=smoke)


def _worker(args, recipe, seeds: list[int], population: int, smoke: bool, data, queue) -> None:
    """One worker of a CPU population (a forked process): its seeds, one thread, then its exit code."""
    import torch

    from harness.runner import RunInterrupted, run_step, sigterm_as_interrupt

    torch.set_num_threads(1)
    code = EXIT_OK
    try:
        with sigterm_as_interrupt():
            run_step(
                recipe,
                seeds,
                data,
                torch.device("cpu"),
                args.out,
                resume=args.resume,
                smoke=smoke,
                max_batches=3 if args.dry_run else None,
                eval_limit=500 if args.dry_run else None,
                on_run=queue.put,
                population=population,
            )
    except RunInterrupted as e:
        code = EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except _user_errors() as e:
        queue.put(f"python -m harness train: error: {e}")
        code = EXIT_USAGE
    except Exception as e:
        code = _internal_error("python -m harness", "train", e, queue.put)
    finally:
        queue.put(None)
        queue.close()
        queue.join_thread()  # the queue's feeder thread must deliver before os._exit ends the process
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # a forked child: skip the parent's exit handlers


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the input's fault: one line, exit 2."""
    from harness.data import DataError
    from harness.export import ExportError
    from harness.results import ResultsError
    from harness.runner import RunnerError

    return UsageError, DataError, ExportError, RunnerError, ResultsError


class _WorkerFailed(Exception):
    def __init__(self, code: int):
        super().__init__(f"a worker process ended with exit code {code}")
        self.code = code


def _seed_list(groups: list[list[int]]) -> list[int]:
    seen: dict[int, None] = {}
    for g in groups:
        for s in g:
            seen.setdefault(s, None)
    return list(seen)


def _seed_text(seeds: list[int]) -> str:
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return str(seeds)


def resume_command(argv: list[str]) -> str:
    """The command that was run, shell-quoted, plus --resume: the same run, continued."""
    return shlex.join(["python", "-m", "harness", *argv, *([] if "--resume" in argv else ["--resume"])])


def cmd_export(args) -> int:
    from harness.export import export_onnx, load_checkpoint, opset_of

    if not args.out.endswith(".onnx"):
        raise UsageError(f"--out {args.out}: give a path ending in .onnx")
    model, recipe, seed = load_checkpoint(args.checkpoint, args.step)
    try:
        path = export_onnx(
            model, args.out, metadata={"step": str(recipe.step), "seed": str(seed), "model": recipe.model}
        )
    except OSError as e:
        raise UsageError(
            f"--out {args.out}: cannot write the ONNX file ({e.strerror}); nothing was written "
            "there; choose another --out"
        ) from None
    print(f"wrote {path} (step {recipe.step}, seed {seed}, opset {opset_of(path)}, dynamic batch); onnx.checker passed")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    import numpy as np

    from harness.data import load_mnist
    from harness.export import check_input, onnx_logits, onnx_session

    session = onnx_session(args.onnx, args.threads)
    check_input(session, args.onnx)
    data = load_mnist(args.data_root, "cpu")
    pred = onnx_logits(session, data.test_x).argmax(1)
    acc = 100.0 * float(np.mean(pred == data.test_y.numpy()))
    print(f"{args.onnx}: test accuracy {acc:.2f}% on {len(pred):,} images (onnxruntime {session.get_providers()[0]})")
    return EXIT_OK


def cmd_report(args) -> int:
    from harness.report import build_report

    for p in [args.results, *args.bench]:
        if not Path(p).exists():
            raise UsageError(f"{p}: no such file or folder")
    try:
        path = build_report(args.results, args.out, args.bench)
    except (FileNotFoundError, ValueError) as e:  # ResultsError is a ValueError naming the file
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_log(args) -> int:
    from harness.experiments import build_log

    if not Path(args.experiments).is_dir():
        raise UsageError(f"{args.experiments}: no such folder")
    try:
        path = build_log(args.experiments, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot write ({e.strerror}); choose another --out") from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from harness.compare import Thresholds, compare

    for p in (args.baseline, args.new):
        if not Path(p).is_dir():
            raise UsageError(f"{p}: no such results folder")
    try:
        lines, regressions = compare(
            args.baseline,
            args.new,
            Thresholds(
                alpha=args.alpha,
                min_effect=args.min_effect,
                max_acc_drop=args.max_acc_drop,
                max_throughput_drop=args.max_throughput_drop,
            ),
            args.steps,
        )
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    print("\n".join(lines))
    for reg in regressions:
        print(f"REGRESSION: {reg}", file=sys.stderr)
    print(f"{len(regressions)} regression(s)" if regressions else "no regression")
    return EXIT_GATE if regressions else EXIT_OK


def cmd_calibrate(args) -> int:
    from dataclasses import asdict

    from harness.compare import Thresholds, calibrate
    from harness.results import atomic_write_json, load_results
    from harness.summary import summarize

    if not Path(args.results).is_dir():
        raise UsageError(f"{args.results}: no such results folder")
    runs = load_results(args.results).get(args.step)
    if not runs:
        raise UsageError(f"{args.results}: no step {args.step} results; train them first (tox -e population)")
    s = summarize(runs)
    try:
        cal = calibrate(
            list(s.last_k_by_seed.values()),
            Thresholds(alpha=args.alpha, min_effect=args.min_effect),
            splits=args.splits,
            seed=args.seed,
        )
    except ValueError as e:
        raise UsageError(f"{args.results}: {e}") from None
    stats = {name: asdict(v) for name, v in (("last_k", s.last_k), ("final", s.final_test)) if v is not None}
    report = {
        "command": "python -m harness " + shlex.join(args._argv),
        "step": args.step,
        "seeds": list(s.seeds),
        "calibration": {**asdict(cal), "rates": {str(k): v for k, v in cal.rates.items()}},
        "pass_rate": asdict(s.pass_rate),
        "verdict": s.verdict.word,
        "stats": stats,
    }
    try:
        atomic_write_json(args.out, report)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot write ({e.strerror}); choose another --out") from None
    r = cal.rates
    print(
        f"step {args.step}, {cal.n_seeds} seeds, {cal.splits} random splits into halves of {cal.half} (seed "
        f"{cal.seed}), alpha {cal.alpha:g}, min effect {cal.min_effect:.2f}:"
    )
    print(f"  false-alarm rate {100 * r[0.0]:.1f}%; power {100 * r[0.05]:.1f}% at -0.05, {100 * r[0.1]:.1f}% at -0.10")
    print(f"  gate pass rate {s.pass_rate.fmt()}; each seed's last-3 mean: {s.last_k.fmt() if s.last_k else 'n/a'}")
    print(f"wrote {args.out}")
    return EXIT_OK


COMMANDS = {
    "train": cmd_train,
    "models": cmd_models,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "compare": cmd_compare,
    "log": cmd_log,
    "calibrate": cmd_calibrate,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error
        return int(e.code or 0)
    args._argv = argv
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except _WorkerFailed as e:  # the worker has printed its own one line
        return e.code
    except KeyboardInterrupt as e:  # before or between runs: nothing half-written
        from harness.runner import Terminated

        print("\ninterrupted; no result was being written", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    except Exception as e:  # a bug, not a verdict: exit 3, one line, the traceback kept in a file
        return _internal_error(parser.prog, args.command, e)


def _internal_error(prog: str, command: str, error: Exception, say=None) -> int:
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(error))
    try:
        fd, path = tempfile.mkstemp(prefix="tinymnist-crash-", suffix=".txt")
        with open(fd, "w") as f:
            f.write(text)
        where = f"traceback saved to {path}"
    except OSError:
        where = "the traceback could not be saved"
    first = str(error).splitlines()[0] if str(error) else ""
    line = f"{prog} {command}: internal error: {type(error).__name__}: {first} ({where}); please report it"
    if say is not None:  # a worker: the parent prints it
        say(line)
    else:
        print(line, file=sys.stderr)
    return EXIT_INTERNAL
