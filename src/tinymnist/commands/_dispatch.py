"""What the training commands (train, sweep, bisect) share about jobs: the executor options, one seed's job
as a ``tinymnist train`` command line, and running a job list through the chosen executor."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tinymnist.commands import _args
from tinymnist.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, UsageError
from tinymnist.executors import EXECUTORS, Ended, Job, JobsInterrupted, Settings, failure_code, get, job_threads


def add_executor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the seeds train (each seed is one job: a resumable tinymnist train)")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default): a process per core, each seed a job; slurm: the jobs as one SLURM job array "
        "(pip install 'tinymnist[slurm]'); inline: every seed in this process, one after another",
    )
    g.add_argument(
        "--threads",
        type=_args.threads,
        help="threads per job (default: the cores this process may use, shared out among the jobs that run at "
        "once; OpenMP threads wait passively unless OMP_WAIT_POLICY is set)",
    )
    g.add_argument(
        "--list-jobs",
        action="store_true",
        help="train nothing: print the jobs as JSON (argv, cwd, env, result file), for any engine",
    )
    g.add_argument("--slurm-partition", metavar="NAME", help="slurm: the partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=_args.positive_int, metavar="MIN", help="slurm: minutes per job (60)")
    g.add_argument("--slurm-cpus", type=_args.cpus, metavar="N", help="slurm: CPUs per job, also its threads (1)")
    g.add_argument(
        "--slurm-parallelism", type=_args.positive_int, metavar="N", help="slurm: array jobs at once (default: all)"
    )
    g.add_argument(
        "--slurm-folder",
        metavar="DIR",
        help="slurm: where submitit keeps scripts and logs, on a shared filesystem (default: OUT/.slurm)",
    )


SLURM_OPTIONS = ("slurm_partition", "slurm_time", "slurm_cpus", "slurm_parallelism", "slurm_folder")


def settings(args, workers: int | None = None) -> Settings:
    """The executor settings, refusing what cannot apply: SLURM's options without --executor slurm, and more
    threads than a SLURM job has CPUs (they would fight over them: the collapse --threads exists to avoid)."""
    given = [f"--{k.replace('_', '-')}" for k in SLURM_OPTIONS if getattr(args, k) is not None]
    if given and args.executor != "slurm":
        raise UsageError(f"{given[0]} is an option of --executor slurm; add --executor slurm or leave it out")
    if args.executor == "slurm" and args.threads and args.threads > (args.slurm_cpus or 1):
        raise UsageError(
            f"--threads {args.threads} is more than the {args.slurm_cpus or 1} CPU(s) a SLURM job gets; "
            f"add --slurm-cpus {args.threads}"
        )
    if args.list_jobs and (getattr(args, "junit_xml", None) or getattr(args, "markdown", None)):
        raise UsageError("--list-jobs trains nothing, so it writes no --junit-xml or --markdown; leave them out")
    if args.slurm_folder:
        _args.writable_dir_for("--slurm-folder", args.slurm_folder)
    return Settings(
        name=args.executor,
        workers=workers,
        threads=args.threads,
        slurm_partition=args.slurm_partition,
        slurm_time=args.slurm_time or 60,
        slurm_cpus=args.slurm_cpus or 1,
        slurm_parallelism=args.slurm_parallelism,
        slurm_folder=args.slurm_folder,
    )


def absolute(path) -> str:
    """A path every job reads the same wherever it runs (another cwd, a compute node on a shared disk)."""
    return str(Path(path).absolute())


def train_job(
    name: str,
    key: str,
    train_args: Sequence[str],
    seed: int,
    out: str | os.PathLike,
    *,
    threads: int | None,
    resume: bool = True,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    inline: bool = True,
) -> Job:
    """One seed of one recipe as ``tinymnist train``: ``train_args`` name the recipe and its settings. With
    ``inline`` the job trains in its own process (a job never dispatches again); ``threads`` None leaves
    the count to the machine that runs it (its cores)."""
    from tinymnist.results import result_path
    from tinymnist.threads import thread_env

    out = absolute(out)
    # Not --quiet: the job's log gets each epoch's line as it happens (its stderr is no terminal: no bar).
    argv = [sys.executable, "-m", "tinymnist", "train", *train_args, "--seeds", str(seed), "--out", out]
    if inline:
        argv += ["--executor", "inline"]
    if threads:
        argv += ["--threads", str(threads)]
    if resume:
        argv.append("--resume")
    return Job(
        name=f"{name} seed {seed}",
        argv=tuple(argv),
        cwd=cwd or os.getcwd(),
        env={**(thread_env(threads) if threads else {}), **(env or {})},
        result=str(result_path(out, key, seed)),
        log=str(result_path(out, key, seed, ".log")),
        threads=threads,
    )


def threads_for(s: Settings, jobs: int, listing: bool) -> int | None:
    """A listed job runs wherever its engine puts it: its threads are the user's, or that machine's cores."""
    if listing:
        return s.threads
    return job_threads(s, jobs)


def run_jobs(
    jobs: Sequence[Job], s: Settings, folder: Path, on_end: Callable[[Ended], None], prog: str
) -> tuple[int, str | None]:
    """Run ``jobs`` on the executor ``s`` names: (the failures' exit code or 0, the signal that interrupted it or
    None). Each job that did not finish is named on stderr."""
    from tqdm import tqdm

    executor = get(s, folder)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # In a terminal, a bar over the jobs with an ETA; in a log, the line each job's end prints is the progress.
    bar = tqdm(total=len(jobs), unit="job", desc=prog, disable=not sys.stderr.isatty(), leave=False)

    def ended_one(e: Ended) -> None:
        with bar.external_write_mode():
            on_end(e)
        bar.update(1)

    try:
        ended = executor.run(jobs, ended_one)
    except JobsInterrupted as e:
        # the jobs the interrupt stopped are no news; one that had died or failed before it is
        failure_code([x for x in e.ended if not x.why.startswith("stopped by")], say, prog)
        return (EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED), e.signal_name
    finally:
        bar.close()
    return failure_code(ended, say, prog), None


__all__ = ["add_executor", "settings", "train_job", "run_jobs", "threads_for", "absolute"]
