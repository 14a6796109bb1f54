"""``python -m tools.interrupts [--tries 24]``: how Ctrl-C in a command's first second ends.

It starts ``python -m tinymnist train --step 4`` (no data: it would stop at the data anyway) and sends SIGINT
after 0.30, 0.35, ... 0.85 s, twice over, then counts the exit codes. Every try should end with 130 and one
line. The code measured is whichever ``tinymnist`` the interpreter imports; for an older commit, put its
``src`` first: ``git worktree add /tmp/old COMMIT && PYTHONPATH=/tmp/old/src python -m tools.interrupts``
(on 4e51e40, before ``cli._exit_at_once``: 5 and 4 of 24 ended as -2 or 3, in two runs).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.interrupts")
    p.add_argument("--tries", type=int, default=24)
    args = p.parse_args(argv)
    codes: collections.Counter[int] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.tries):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tinymnist", "train", "--step", "4", "--out", os.path.join(tmp, "o")],
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "MNIST_ROOT": tmp},
            )
            time.sleep(0.3 + 0.05 * (i % 12))
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            one_line = "Traceback" not in err and err.strip().count("\n") == 0
            codes[proc.returncode if one_line else -999] += 1
    shown = ", ".join(f"{n} x {'traceback' if c == -999 else c}" for c, n in sorted(codes.items()))
    print(f"{args.tries} interrupts in the first second: {shown}")
    return 0 if set(codes) <= {130, 2} else 1


if __name__ == "__main__":
    sys.exit(main())
