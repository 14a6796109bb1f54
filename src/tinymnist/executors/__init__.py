"""Executors: run a list of jobs somewhere (this machine's cores, a SLURM cluster) and say how each ended.

A job is one seed's ``tinymnist train ... --executor inline`` call: an argv, the folder it runs in, the
environment it adds, and the result file it writes. Jobs are independent and resumable (``--resume`` continues
a checkpoint, and skips a seed already completed), so any engine can run them in any order, retry them, or
run the rest after an interrupt: an Actions matrix or a user's scheduler from ``--list-jobs``, or an executor.

The executors own dispatch and nothing else. They import neither the runner nor the engine: what a job
computes, and its files, locks and resume, are the runner's, inside the job's own process. The command that
made the jobs reads their result files back and judges them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinymnist.errors import EXIT_GATE, EXIT_INTERNAL, EXIT_JOB_DIED, EXIT_OK, EXIT_USAGE, UsageError

EXECUTORS = ("local", "slurm", "inline")


@dataclass(frozen=True)
class Job:
    """One seed's training, as a command any engine can run."""

    name: str  # "step2 seed 3": how every message names it
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)  # set on top of the inherited environment
    result: str = ""  # the file it writes when it completes
    log: str = ""  # where its output goes (the local executor; SLURM keeps its own log per job)
    threads: int | None = None  # None: the machine that runs it decides (its cores)

    def to_dict(self) -> dict:
        return asdict(self) | {"argv": list(self.argv)}


def jobs_json(jobs: Sequence[Job]) -> str:
    """``--list-jobs``: the jobs as JSON, one object each, in a fixed order. JSON carries Unicode text only: a
    path that is not UTF-8 (held as surrogate escapes) would reach a scheduler as another name (U+FFFD), so it
    is refused, named (issue 30, cause 13)."""
    for job in jobs:
        for text in (job.cwd, job.result, job.log, *job.argv, *job.env.values()):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                from tinymnist.shell import shown

                raise UsageError(
                    f"--list-jobs: '{shown(text)}' is not UTF-8, and a JSON job list carries only UTF-8 text; give "
                    "the paths this command names (--out, --recipe, the data folder) UTF-8 names"
                ) from None
    return json.dumps([j.to_dict() for j in jobs], indent=2)


@dataclass(frozen=True)
class Ended:
    """How one job ended: its exit code when it ran to an end of its own, else None and why it died."""

    job: Job
    code: int | None
    why: str = ""  # "killed by signal 9 (out of memory?)", "CANCELLED", "TIMEOUT", or the job's last error line
    log: str = ""
    fresh: bool = True  # its result file was written (or first appeared) while it ran
    hint: str = ""  # what the executor knows of a missing result (SLURM: a folder the nodes do not share)

    @property
    def finished(self) -> bool:
        """It ran to its end (pass or fail) and its result is its own: written while it ran, or, under
        --resume, the completed result it found and kept. A result left by an earlier run beside a job that
        crashed is not this job's."""
        own = self.fresh or "--resume" in self.job.argv
        return self.code in (EXIT_OK, EXIT_GATE) and Path(self.job.result).is_file() and own


def stamp(path: str) -> tuple[int, int] | None:
    """A result file's (modification time, size) before a job runs, to tell afterwards whether it wrote it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def fresh(path: str, before: tuple[int, int] | None) -> bool:
    now = stamp(path)
    return now is not None and now != before


class JobsInterrupted(Exception):
    """The driver was interrupted: running jobs were sent SIGTERM (then killed if they would not stop) and
    waited for; ``ended`` is every job that ended, whatever way."""

    def __init__(self, signal_name: str, ended: list[Ended]):
        super().__init__(signal_name)
        self.signal_name, self.ended = signal_name, ended


def last_line(path: str | os.PathLike, limit: int = 65536) -> str:
    """The last non-empty line of a job's log: a tinymnist command's last line is its one-line error."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else ""


def failure_code(ended: Sequence[Ended], say: Callable[[str], None], prog: str) -> int:
    """One line for each job that did not finish, naming it; the exit code they add up to (0 if none).

    A job that died (killed, out of memory, time limit, node lost, cancelled) or ended without writing its result
    is EXIT_JOB_DIED: not tinymnist's own error; rerunning the same command finishes it when the cause was the
    infrastructure. A job that ended with tinymnist's own error keeps that error's code: 3 (a bug) before 2 (bad
    input)."""
    codes = []
    errors: dict[str, list[Ended]] = {}  # one job's error, said once however many jobs said it
    for e in ended:
        if e.finished:
            continue
        where = f" (log: {e.log})" if e.log else ""
        if e.code in (EXIT_USAGE, EXIT_INTERNAL):
            # the job's own line says "tinymnist train: error: ..."; here it is said of the job it came from
            why = re.sub(r"^tinymnist \w+: ", "", e.why) or f"exit code {e.code}"
            errors.setdefault(why, []).append(e)
            if len(errors[why]) == 1:
                say(f"{prog}: {e.job.name}: {why}{where}")
            codes.append(e.code)
        elif e.code is not None:
            # It ended by itself, yet without a result of its own: a crash before tinymnist could say so (a
            # broken environment, a user's model calling os._exit), or, on a cluster, a result written where this
            # machine cannot see it. A job that ended without its result, as a killed one: not a bug of
            # tinymnist's, which exit 3 would say (the fourth independent sweep of issue 30).
            last = f": {e.why}" if e.why else ""
            say(f"{prog}: {e.job.name}: ended with code {e.code} without writing {e.job.result}{last}{where}{e.hint}")
            codes.append(EXIT_JOB_DIED)
        else:
            say(
                f"{prog}: {e.job.name}: the job died ({e.why or 'no reason given'}){where}; finished seeds are "
                "kept, and the same command with --resume finishes the rest"
            )
            codes.append(EXIT_JOB_DIED)
    for same in errors.values():
        if len(same) > 1:
            say(f"{prog}: the same error in {len(same) - 1} more job(s): {', '.join(e.job.name for e in same[1:])}")
    for code in (EXIT_INTERNAL, EXIT_JOB_DIED, EXIT_USAGE):
        if code in codes:
            return code
    return EXIT_OK


@dataclass(frozen=True)
class Settings:
    """What a command line asked of the executor."""

    name: str = "local"
    workers: int | None = None  # local: jobs at once (default: one per core)
    threads: int | None = None  # threads per job (default: the cores divided among the jobs at once)
    slurm_partition: str | None = None
    slurm_time: int = 60  # minutes per job
    slurm_cpus: int = 1
    slurm_parallelism: int | None = None  # array jobs at once (SLURM's %N)
    slurm_folder: str | None = None


def job_threads(settings: Settings, jobs: int) -> int:
    """Threads for each job: asked for, else the job's CPUs on SLURM, else this machine's cores shared out."""
    from tinymnist.threads import default_threads

    if settings.threads:
        return settings.threads
    if settings.name == "slurm":
        return settings.slurm_cpus
    return default_threads(min(jobs, settings.workers or jobs) or 1)


def get(settings: Settings, folder: Path):
    """The executor ``settings`` name; ``folder`` holds what it keeps (SLURM's scripts and logs)."""
    if settings.name == "local":
        from tinymnist.executors.local import LocalExecutor

        return LocalExecutor(settings.workers)
    if settings.name == "slurm":
        from tinymnist.executors.slurm import SlurmExecutor

        return SlurmExecutor(settings, Path(settings.slurm_folder) if settings.slurm_folder else folder)
    raise UsageError(f"--executor {settings.name}: choose one of {', '.join(EXECUTORS)}")


__all__ = ["Job", "Ended", "JobsInterrupted", "Settings", "get", "jobs_json", "failure_code", "job_threads"]
