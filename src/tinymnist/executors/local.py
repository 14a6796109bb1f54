"""The local executor: the jobs as child processes on this machine's cores, a fixed number at a time.

Each job is its own process (``tinymnist train ... --executor inline``) with its thread count set in its
argv and environment, and its output in its log file. A child starts in a session of its own, so a Ctrl-C at
the terminal reaches only this driver, which then stops the children the way a cluster does: SIGTERM first
(each writes its checkpoint and partial result), SIGKILL only for one still running after ``GRACE`` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tinymnist.errors import Terminated, UsageError
from tinymnist.executors import Ended, Job, JobsInterrupted, fresh, last_line, stamp
from tinymnist.threads import cores

# A run stops at its next batch on SIGTERM and then writes one checkpoint and one result: seconds, measured
# (tests/test_executors.py interrupts real runs). A minute leaves room for a slow disk.
GRACE = 60.0
POLL = 0.1  # seconds between looks at the children: a job lasts minutes, and an idle look costs microseconds


def _died(code: int) -> str:
    name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
    return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def slots(self, jobs: int) -> int:
        return max(1, min(jobs, self.workers or cores()))

    def run(self, jobs: Sequence[Job], on_end: Callable[[Ended], None]) -> list[Ended]:
        """Run every job, ``slots`` at a time, calling ``on_end`` as each ends; raises JobsInterrupted."""
        from tinymnist.results import refuse_links_below, refuse_non_files

        for job in jobs:  # before any job starts: a log at OUT/<recipe>/seedS.log, through a link at OUT/<recipe>,
            # would replace a file outside OUT (the sixth independent sweep of issue 30); OUT itself is the user's
            refuse_links_below(Path(job.log).parent.parent, job.log)
            # a FIFO at the log hung the driver on its open, with no job started (the eighth sweep); a link there
            # is refused where the log is opened (O_NOFOLLOW)
            if not os.path.islink(job.log):
                refuse_non_files([Path(job.log)])
        waiting = list(jobs)
        running: dict[subprocess.Popen, tuple[Job, object, tuple | None]] = {}
        ended: list[Ended] = []
        slots = self.slots(len(jobs))
        try:
            while waiting or running:
                while waiting and len(running) < slots:
                    self._start(waiting.pop(0), running)
                for proc in [p for p in running if p.poll() is not None]:
                    job, log, before = running.pop(proc)
                    log.close()  # type: ignore[attr-defined]
                    e = self._ended(job, proc.returncode, before)
                    ended.append(e)
                    on_end(e)
                if running:
                    time.sleep(POLL)
        except KeyboardInterrupt as interrupt:
            name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
            ended += self._stop(running)
            raise JobsInterrupted(name, ended) from None
        finally:
            self._stop(running)  # whatever else ends this driver (an error), no job goes on without it
        return ended

    def _start(self, job: Job, running: dict) -> None:
        log_path = Path(job.log)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink at the log would have the job's output replace the file it names, outside
            # OUT (the fourth independent sweep of issue 30)
            # O_NONBLOCK: a FIFO made there since the check above fails at once instead of waiting for a reader
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
            log = os.fdopen(os.open(log_path, flags, 0o666), "wb")  # closed when the job ends
        except OSError as e:
            why = "a symlink stands there; remove it" if log_path.is_symlink() else e.strerror
            raise UsageError(f"{log_path}: cannot write the job's log ({why}); choose another --out") from None
        before = stamp(job.result)
        try:
            proc = subprocess.Popen(
                list(job.argv),
                cwd=job.cwd,
                env={**os.environ, **job.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as e:
            log.close()
            raise UsageError(f"{job.name}: cannot start {job.argv[0]} ({e.strerror})") from None
        running[proc] = (job, log, before)

    def _ended(self, job: Job, code: int, before) -> Ended:
        if code in (130, 143):  # stopped by a signal from outside this driver: it wrote its partial result
            return Ended(job, None, f"stopped by {'SIGINT' if code == 130 else 'SIGTERM'}", job.log)
        if code < 0:
            return Ended(job, None, _died(code), job.log)
        return Ended(job, code, last_line(job.log), job.log, fresh(job.result, before))

    def _stop(self, running: dict) -> list[Ended]:
        """SIGTERM to every running job's process group, a wait, then SIGKILL for what is left."""
        if not running:
            return []
        print(
            f"stopping {len(running)} job(s): SIGTERM sent, waiting up to {GRACE:.0f} s for each to write its "
            "checkpoint",
            file=sys.stderr,
            flush=True,
        )
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        ended = []
        for proc, (job, log, before) in list(running.items()):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            log.close()
            ended.append(self._ended(job, proc.returncode, before))
        running.clear()
        return ended


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the driver dies, however it dies (even SIGKILL), so that no
    job trains on without anyone to read its result (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["LocalExecutor", "GRACE"]
