"""How many threads a training process uses, and how its OpenMP threads wait: importable without torch.

Measured on this project's 2-core machines (`python -m benchmarks.threads`, reports/threads/threads.json, which
the README's threads block is generated from): torch's out-of-the-box setting, every core with OpenMP's
spin-waiting threads, ran 3.4x slower than one thread beside two busy processes (median of 3 rounds; 6-27x in
earlier, unrecorded runs on a more loaded machine), where passive waiting ran at 0.85x: a spinning thread holds
a core the busy processes want, and each barrier waits for the one that lost it. Passive waiting threads sleep
at a barrier instead, which keeps most of the multi-thread speed on a quiet machine and none of the collapse on
a busy one. So the default is every core this process may use, divided among the runs that share them, with
passive waiting unless the user chose a wait policy.
"""

from __future__ import annotations

import os

# OpenMP's portable switch (libgomp and Intel's runtime both read it). It is read once, when the OpenMP runtime
# starts (when torch is imported), so it is set in the environment before that, and for every child process.
WAIT_POLICY = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"


def cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, a SLURM allocation, a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(concurrent: int = 1) -> int:
    """Threads for each of ``concurrent`` runs sharing this machine's cores, at least one each; or the
    ``OMP_NUM_THREADS`` the user exported, which torch itself would honour."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, cores() // max(1, concurrent))


def thread_env(threads: int) -> dict[str, str]:
    """The environment a training process with ``threads`` threads starts with (on top of the inherited one)."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env[WAIT_POLICY] = os.environ.get(WAIT_POLICY, PASSIVE)  # a wait policy the user set is theirs
    return env


def prepare_process() -> None:
    """Passive OpenMP waiting for this process, unless the user chose a policy. Call before torch is imported."""
    os.environ.setdefault(WAIT_POLICY, PASSIVE)


__all__ = ["cores", "default_threads", "thread_env", "prepare_process", "WAIT_POLICY", "PASSIVE"]
