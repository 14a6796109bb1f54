"""``python -m benchmarks.threads [--rounds 3]``: the thread default on a quiet and on a busy machine, and what
the executors make of a list of seeds, side by side in one run. Writes ``reports/threads/threads.json``, from
which the README's ``threads`` block is generated.

Threads. One seed, ``tinymnist train --step 4 --seeds 0 --epochs 1 --train-subset 12800 --executor inline``
(100 batches of 128, with augmentation), as three settings, alternating within each round so the machine's
drift falls on all of them: the default (every core, OpenMP threads waiting passively), ``--threads 1``, and
every core with OpenMP's spin-waiting threads (``OMP_WAIT_POLICY=ACTIVE``: torch's out-of-the-box setting).
Each is measured quiet, then beside ``BUSY`` processes that spin on a core each (a shared CI runner). The figure
is the epoch's training seconds as the run recorded them (start-up and evaluation excluded); medians of rounds.

Jobs. ``tinymnist train --step 4 --seeds 0-3 --epochs 1`` on the whole training set, one seed at a time (in
this process), one job per core (local executor), and as a SLURM array where a cluster is up, one thread per
job: the command's wall time (start-up and data included) against the seeds' own training time, summed and
slowest. ``--part threads`` or ``--part jobs`` measures one part again and keeps the other from the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "threads" / "threads.json"
WORKLOAD = ["--step", "4", "--epochs", "1", "--train-subset", "12800", "--test-subset", "1000", "--quiet"]
JOBS_WORKLOAD = ["--step", "4", "--epochs", "1", "--test-subset", "1000", "--quiet"]
BUSY = 2


def _cores() -> int:
    from tinymnist.threads import cores

    return cores()


SETTINGS = {
    "default": ([], {}),
    "1 thread": (["--threads", "1"], {}),
    "all cores, spin-waiting": (["--threads", str(_cores())], {"OMP_WAIT_POLICY": "ACTIVE"}),
}


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    return {**env, **extra}


def one_seed(args: list[str], env: dict) -> dict:
    """Train the workload once; its epoch's training seconds and the threads it recorded."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tinymnist", "train", *WORKLOAD, "--seeds", "0", "--executor", "inline"]
        subprocess.run([*cmd, *args, "--out", out], env=_env(env), check=True, capture_output=True)
        r = json.loads((Path(out) / "step4" / "seed0.json").read_text())
    return {"seconds": r["epochs"][0]["seconds"], "threads": r["threads"]}


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def threads_table(rounds: int) -> dict:
    table: dict = {}
    for condition in ("quiet", f"{BUSY} busy processes"):
        spinners = busy(BUSY) if condition != "quiet" else []
        try:
            time.sleep(1.0 if spinners else 0.0)
            seen: dict[str, list] = {name: [] for name in SETTINGS}
            for _ in range(rounds):
                for name, (args, env) in SETTINGS.items():
                    seen[name].append(one_seed(args, env))
        finally:
            for p in spinners:
                p.kill()
                p.wait()
        one = median(x["seconds"] for x in seen["1 thread"])
        table[condition] = {
            name: {
                "seconds": [x["seconds"] for x in xs],
                "median": median(x["seconds"] for x in xs),
                "threads": xs[0]["threads"],
                "vs_1_thread": median(x["seconds"] for x in xs) / one,
            }
            for name, xs in seen.items()
        }
        print(condition, {k: f"{v['median']:.2f}s ({v['vs_1_thread']:.2f}x)" for k, v in table[condition].items()})
    return table


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return done.returncode == 0 and bool({"idle", "mixed"} & set(done.stdout.split()))


def jobs_table() -> dict:
    """Four seeds by the executors: the command's wall time, the sum and the slowest of the seeds' own times."""
    runs = {
        "one seed at a time, in one process": ["--population", "1", "--threads", "1"],
        f"local executor, {_cores()} jobs at a time": ["--threads", "1", "--executor", "local"],
    }
    if _slurm_up():
        runs["SLURM array, one-node cluster"] = ["--threads", "1", "--executor", "slurm"]
    table = {}
    for name, args in runs.items():
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "tinymnist", "train", *JOBS_WORKLOAD, "--seeds", "0-3", *args, "--out", out]
            t = time.perf_counter()
            subprocess.run(cmd, env=_env({}), check=True, capture_output=True)
            wall = time.perf_counter() - t
            seeds = [json.loads(p.read_text())["wall_seconds"] for p in Path(out).glob("step4/seed*.json")]
        table[name] = {"wall": wall, "seeds_sum": sum(seeds), "slowest_seed": max(seeds)}
        print(name, f"{wall:.1f}s wall, seeds {sum(seeds):.1f}s in all, slowest {max(seeds):.1f}s")
    first = next(iter(table.values()))["wall"]
    for row in table.values():
        row["speedup"] = first / row["wall"]
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--part", choices=["all", "threads", "jobs"], default="all")
    args = p.parse_args(argv)
    import torch

    from tinymnist.engine import device_name

    result = {
        "command": f"python -m benchmarks.threads --rounds {args.rounds}",
        "device_name": device_name(torch.device("cpu")),
        "cores": _cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "workload": " ".join(WORKLOAD),
        "busy_processes": BUSY,
        "jobs_workload": " ".join(JOBS_WORKLOAD),
    }
    old = json.loads(args.out.read_text()) if args.part != "all" and args.out.exists() else {}
    result["threads"] = threads_table(args.rounds) if args.part in ("all", "threads") else old["threads"]
    result["jobs"] = jobs_table() if args.part in ("all", "jobs") else old["jobs"]
    if args.part == "jobs":  # the threads part keeps the command, date and rounds it was measured with
        result |= {k: old[k] for k in ("command", "date")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
