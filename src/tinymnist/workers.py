"""A CPU population: the seeds dealt to one single-thread worker process per core, each training its share one
seed at a time through the runner (its locks, files and checks); then one verdict, from their results.

Workers are forked, so they share the data already loaded instead of each importing torch and reading the
files again. A worker's one-line error travels to the parent, which prints it where the user's stderr is; a
worker interrupted, failing or killed ends the step with its exit code.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tinymnist.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    UserError,
    WorkerFailed,
)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(population: int, seeds: Sequence[int]) -> int:
    return max(1, min(population, len(seeds), cores()))


def run_workers(recipe, seeds: list[int], data, options, population: int, on_run: Callable, prog: str):
    """Train ``seeds`` of ``recipe`` in ``worker_count`` forked processes; returns (runs, verdict)."""
    import multiprocessing as mp
    from queue import Empty

    from tinymnist.engine import progress_bar
    from tinymnist.results import ResultsError, git_sha, load_result, result_path
    from tinymnist.runner import RunInterrupted
    from tinymnist.verdict import judge

    def _results() -> list:
        runs = []
        for s in seeds:
            try:
                runs.append(load_result(result_path(options.out, recipe.key, s)))
            except (ResultsError, FileNotFoundError):
                pass  # judged as a missing seed
        return runs

    n = worker_count(population, seeds)
    git_sha()  # read once here, so every worker records the commit that started the population
    ctx = mp.get_context("fork")
    queue = ctx.Queue()  # finished results, so that each seed's line prints as it ends
    procs = [
        ctx.Process(target=_worker, args=(recipe, seeds[w::n], data, options, population, queue, prog))
        for w in range(n)
    ]
    for p in procs:
        p.start()
    # The population's bar: seeds finished of all (the workers train without bars of their own).
    bar = progress_bar(options.progress, len(seeds), f"{recipe.label} population {population}: seeds finished")
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
            _results(), Path(options.out) / recipe.key, False, "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        ) from None
    codes = [p.exitcode for p in procs]
    known = (EXIT_OK, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED)
    for w, code in enumerate(codes):
        if code not in known:
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"ended with code {code}"
            print(
                f"{prog} train: error: the worker process for seeds {seeds[w::n]} {how} (out of memory?); "
                "finished seeds are kept, and --resume continues the others from their checkpoints",
                file=sys.stderr,
            )
            raise WorkerFailed(EXIT_INTERNAL)
    if EXIT_INTERNAL in codes or EXIT_USAGE in codes:
        raise WorkerFailed(EXIT_INTERNAL if EXIT_INTERNAL in codes else EXIT_USAGE)
    if EXIT_TERMINATED in codes or EXIT_INTERRUPTED in codes:
        signal_name = "SIGTERM" if EXIT_TERMINATED in codes else "SIGINT"
        raise RunInterrupted(_results(), Path(options.out) / recipe.key, False, signal_name)
    runs = _results()
    return runs, judge(runs, required_seeds=seeds)


def _worker(recipe, seeds: list[int], data, options, population: int, queue, prog: str) -> None:
    """One worker of a CPU population (a forked process): its seeds, one thread, then its exit code."""
    import torch

    from tinymnist.errors import internal_error
    from tinymnist.runner import RunInterrupted, run_step, sigterm_as_interrupt

    torch.set_num_threads(1)
    code = EXIT_OK
    try:
        with sigterm_as_interrupt():
            run_step(recipe, seeds, data, torch.device("cpu"), options, on_run=queue.put, population=population)
    except RunInterrupted as e:
        code = EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except UserError as e:
        queue.put(f"{prog} train: error: {e}")
        code = EXIT_USAGE
    except Exception as e:
        code = internal_error(prog, "train", e, queue.put)
    finally:
        queue.put(None)
        queue.close()
        queue.join_thread()  # the queue's feeder thread must deliver before os._exit ends the process
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # a forked child: skip the parent's exit handlers
