"""The SLURM executor: the jobs as one SLURM job array, submitted through submitit (``tinymnist[slurm]``).

submitit writes the batch script, submits the array (``slurm_array_parallelism`` caps how many run at once),
keeps each job's log, and cancels with ``scancel``, which sends SIGTERM and, ``KillWait`` seconds later,
SIGKILL: each run writes its checkpoint and partial result on the first. Two things are done here instead:

- A job runs ``RunArgv``, not ``submitit.helpers.CommandFunction``. CommandFunction raises on any non-zero exit,
  and here 1 is a verdict (a gate failed), not a failure; it also buffers the whole output in memory instead of
  streaming it to the job's log, and replaces the environment when it is given one.
- A job's end is also read from ``squeue``. submitit reads job states from ``sacct``, which a cluster without
  accounting storage does not have: there a job killed before it could write its result (SIGKILL, out of
  memory, a node lost) would never look done. A job that has left the queue without a result has died, and
  the reason SLURM wrote into its log (``*** JOB 12 CANCELLED ***``, ``DUE TO TIME LIMIT``) names how.

Every path (the results folder, the data, the checkout a bisect trains) must be on a filesystem that the
compute nodes see at the same path: the jobs write their results there, and this driver reads them back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tinymnist.errors import Terminated, UsageError
from tinymnist.executors import Ended, Job, JobsInterrupted, Settings, stamp

POLL = 2.0  # seconds between looks at the queue: a look runs squeue once for the whole array
# Looks a job must be missing from squeue without a result before it counts as dead: a shared filesystem (NFS)
# may show the result file that a node wrote some seconds late, and a finished job must not read as dead.
GONE_AFTER = 15
CANCEL_WAIT = 300.0  # the longest a cancel waits for the queue to empty (KillWait, then the epilogue)


class RunArgv:
    """A job's callable: run ``argv`` in ``cwd`` with ``env`` added, output streamed to the job's log, and
    return its exit code (a gate failing is a result, not an exception). SIGTERM from ``scancel`` is passed to
    the child, which writes its checkpoint and exits 143."""

    def __init__(self, argv: Sequence[str], cwd: str, env: dict[str, str]):
        self.argv, self.cwd, self.env = list(argv), cwd, dict(env)

    def __call__(self) -> int:
        proc = subprocess.Popen(self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL)

        def forward(signum, frame):
            proc.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)


_SLURM_REASON = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ (CANCELLED AT \S+(?: DUE TO \w+(?: \w+)*)?|[A-Z ]+) \*\*\*")


def _reason(text: str) -> str:
    found = _SLURM_REASON.findall(text)
    if found:
        return found[-1].strip()
    if "oom" in text.lower() or "out of memory" in text.lower():
        return "out of memory"
    return ""


class SlurmExecutor:
    name = "slurm"

    def __init__(self, settings: Settings, folder: Path):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UsageError(
                "--executor slurm needs submitit, which is not installed: pip install 'tinymnist[slurm]'"
            ) from None
        if shutil.which("sbatch") is None:
            raise UsageError("--executor slurm: sbatch is not on PATH; run on a SLURM login node, or --executor local")
        self.settings, self.folder = settings, Path(folder).absolute()

    def _executor(self):
        import submitit

        ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
        s = self.settings
        params: dict = {
            "timeout_min": s.slurm_time,
            "cpus_per_task": s.slurm_cpus,
            "nodes": 1,
            "tasks_per_node": 1,
            "name": "tinymnist",
        }
        if s.slurm_partition:
            params["slurm_partition"] = s.slurm_partition
        if s.slurm_parallelism:
            params["slurm_array_parallelism"] = s.slurm_parallelism
        ex.update_parameters(**params)
        return ex

    def run(self, jobs: Sequence[Job], on_end: Callable[[Ended], None]) -> list[Ended]:
        """Submit ``jobs`` as one array and wait, calling ``on_end`` as each ends; raises JobsInterrupted."""
        import submitit

        if not jobs:
            return []
        ex = self._executor()
        self.stamps = {j.result: stamp(j.result) for j in jobs}  # before any job can start
        try:
            with ex.batch():
                handles = [ex.submit(RunArgv(j.argv, j.cwd, j.env)) for j in jobs]
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise UsageError(f"--executor slurm: sbatch refused the array ({first[:200]})") from None
        array = handles[0].job_id.split("_")[0]
        print(f"slurm: submitted array {array} ({len(jobs)} jobs), logs in {self.folder}", flush=True)
        pending = dict(zip(handles, jobs, strict=True))
        ended: list[Ended] = []
        missing: dict[str, int] = {}
        try:
            while pending:
                queued = _queued(array)
                for h, job in list(pending.items()):
                    end = self._look(h, job, queued, missing)
                    if end is not None:
                        del pending[h]
                        ended.append(end)
                        on_end(end)
                if pending:
                    time.sleep(POLL)
        except KeyboardInterrupt as interrupt:
            name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
            ended += self._cancel(array, pending)
            raise JobsInterrupted(name, ended) from None
        return ended

    def _look(self, h, job: Job, queued: set[str] | None, missing: dict[str, int]) -> Ended | None:
        """How ``h`` ended, or None while it is still queued or running."""
        if h.paths.result_pickle.exists():
            return self._outcome(h, job)
        if queued is None or h.job_id in queued:
            missing.pop(h.job_id, None)
            return None
        missing[h.job_id] = missing.get(h.job_id, 0) + 1
        if missing[h.job_id] < GONE_AFTER:
            return None  # a job between states, or a result still being written
        if h.paths.result_pickle.exists():
            return self._outcome(h, job)
        return Ended(job, None, _reason(_read(h.paths.stderr)) or "it left the queue without a result", _log(h))

    def _outcome(self, h, job: Job) -> Ended:
        try:
            code = h.result()
        except Exception as e:  # the job's own wrapper failed (the callable could not start, a bad python)
            text = str(e).strip().splitlines()
            return Ended(job, None, _reason(_read(h.paths.stderr)) or (text[-1][:200] if text else "failed"), _log(h))
        if code < 0 or code in (130, 143):  # killed or stopped by a signal: SLURM's doing, not the run's
            why = _reason(_read(h.paths.stderr)) or f"stopped by signal (exit {code})"
            return Ended(job, None, why, _log(h))
        hint = "; if it wrote it elsewhere, --out must be on a filesystem shared by the nodes and this machine"
        why = _last_error(h.paths.stderr) if code else ""
        return Ended(job, code, why, _log(h), self.stamps.get(job.result) != stamp(job.result), hint)

    def _cancel(self, array: str, pending: dict) -> list[Ended]:
        """scancel the array's unfinished jobs (SIGTERM, then SIGKILL after KillWait) and wait for the queue."""
        print(
            f"cancelling array {array}: scancel sends SIGTERM, then SIGKILL after the cluster's KillWait; waiting "
            "until no job of it is queued",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(["scancel", array], capture_output=True)
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            queued = _queued(array)
            if queued is not None and not queued:
                break
            time.sleep(1.0)
        ended = []
        for h, job in pending.items():
            e = self._outcome(h, job) if h.paths.result_pickle.exists() else None
            ended.append(e if e is not None and e.finished else Ended(job, None, "stopped by scancel", _log(h)))
        return ended


def _queued(array: str) -> set[str] | None:
    """The array's job ids still in the queue (pending, running, completing), or None if squeue cannot say."""
    done = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i"], capture_output=True, text=True)
    if done.returncode != 0:
        # squeue refuses an id that has left the controller's memory: then nothing of it is queued
        return set() if "Invalid job id" in done.stderr else None
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")[-65536:]
    except OSError:
        return ""


def _last_error(path: Path) -> str:
    """The job's own last line in its stderr log, past the lines submitit adds after it."""
    lines = [x.strip() for x in _read(path).splitlines() if x.strip() and not x.startswith("submitit ")]
    return lines[-1] if lines else ""


def _log(h) -> str:
    return str(h.paths.stderr)


__all__ = ["SlurmExecutor", "RunArgv"]
