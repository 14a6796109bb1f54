"""Do two commits train the registered recipes bit for bit alike? ``python -m tools.bitcheck OLD [NEW]``

Issue 33 asks that every new recipe option be off by default, so that each registered recipe trains exactly as
before. This checks it: each commit is checked out with ``git worktree`` into a temporary folder, and a fresh
interpreter that imports only that worktree's ``src`` trains every registered step for 2 epochs of 10 batches
on 2,000 training images (seed 0, one thread). The weights' SHA-256 and each epoch's losses and learning rate
must be equal. NEW defaults to the working tree as it is (uncommitted changes included).

Exit 0: identical; 1: a step differs (named); 2: bad input (a commit that does not exist, no MNIST).
About a minute of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in the child interpreter, against one worktree's package. Kept to the API every commit since the
# package layout has (tinymnist.engine.train, tinymnist.recipes.RECIPES, tinymnist.data.load_for_training).
CHILD = """
import hashlib, json, sys
from dataclasses import replace
import torch
import tinymnist
from tinymnist.data import load_for_training
from tinymnist.engine import train
from tinymnist.recipes import RECIPES
torch.set_num_threads(1)
data = load_for_training(sys.argv[1], "cpu", val_split=0, train_subset=2000, test_subset=500)
out = {}
for step in sorted(RECIPES):
    t = train(replace(RECIPES[step], epochs=2), 0, data, max_batches=10)
    h = hashlib.sha256()
    for k, v in t.state_dict.items():
        h.update(k.encode())
        h.update(v.cpu().numpy().tobytes())
    out[step] = {"weights": h.hexdigest(), "epochs": [[e.train_loss, e.test_loss, e.lr] for e in t.epochs]}
print(json.dumps({"package": tinymnist.__file__, "steps": out}))
"""


def _digests(src: Path, mnist_root: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mnist_root], env=env, capture_output=True, text=True, cwd=src.parent
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise _Refused(f"bitcheck: training at {src.parent} failed: {tail[0]}")
    got = json.loads(done.stdout)
    if not Path(got["package"]).resolve().is_relative_to(src.resolve()):  # the worktree's code, not an install
        raise _Refused(f"bitcheck: {src.parent} imported tinymnist from {got['package']}, not its own src/")
    return got["steps"]


class _Refused(Exception):
    """Bad input (no MNIST, a commit whose code cannot train): exit 2, never 1, which says a step differs."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bitcheck", description=__doc__.splitlines()[0])
    p.add_argument("old", help="a commit (e.g. the one before the options were added)")
    p.add_argument("new", nargs="?", help="a commit; default: the working tree as it is")
    p.add_argument("--data-root", default=os.environ.get("MNIST_ROOT"), help="MNIST's folder (default $MNIST_ROOT)")
    args = p.parse_args(argv)
    if not args.data_root:
        print("bitcheck: no MNIST: give --data-root DIR or set MNIST_ROOT", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bitcheck-") as tmp:
        trees: dict[str, tuple[str, Path]] = {}
        try:  # every worktree made is removed, whatever fails after it (a bad NEW after a good OLD)
            for name, rev in (("old", args.old), ("new", args.new)):
                if rev is None:
                    trees[name] = ("working tree", REPO / "src")
                    continue
                where = Path(tmp) / name
                done = subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(where), rev],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise _Refused(f"bitcheck: {rev!r} is not a commit here ({done.stderr.strip()}); give a commit")
                trees[name] = (rev, where / "src")
            got = {name: _digests(src, args.data_root) for name, (_, src) in trees.items()}
        except _Refused as e:
            print(e, file=sys.stderr)
            return 2
        finally:
            for rev, src in trees.values():
                if rev != "working tree":
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(src.parent)])
    differ = []
    for step in sorted(set(got["old"]) | set(got["new"]), key=int):
        a, b = got["old"].get(step), got["new"].get(step)
        same = a == b
        differ += [] if same else [step]
        digest = (a or b or {}).get("weights", "")[:16]
        print(f"step {step}: {'identical' if same else 'DIFFERENT'}  weights sha256 {digest}")
    print(
        f"{trees['old'][0]} vs {trees['new'][0]}: "
        + ("every step identical" if not differ else f"steps {differ} differ")
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
