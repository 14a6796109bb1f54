"""Which Python source files this process ran or read: what a run's recorded commit must hold.

``sys.modules`` lists what was imported, but a model can also run a file without importing it
(``importlib.util.spec_from_file_location`` then ``exec_module``, ``runpy.run_path``, ``exec(open(...))``): a
gitignored ``scratch.py`` loaded so passed as committed code, and ``history add`` filed the run under the clean
commit (the ninth independent sweep of issue 30). Python's audit hooks (PEP 578) see every module body executed
(``exec``, with its code object's file) and every file opened (``open``), whatever the route. The hook keeps
the names of ``.py`` files only; ``tinymnist.results`` decides which of them the checkout must hold.
"""

from __future__ import annotations

import os
import sys

SEEN: set[str] = set()  # absolute paths of .py files executed or opened by this process
_watching = False


def _hook(event: str, args: tuple) -> None:
    # Called for every audited event in the process: the cheap tests come first.
    if event == "exec":
        name = getattr(args[0], "co_filename", None) if args else None
    elif event == "open":
        name = args[0] if args else None
    else:
        return
    if isinstance(name, str) and name.endswith(".py"):
        SEEN.add(os.path.abspath(name))


def watch() -> None:
    """From now on, note each .py file this process executes or opens. Once per process (a hook cannot be
    removed); the command line calls it before any user code runs."""
    global _watching
    if not _watching:
        sys.addaudithook(_hook)
        _watching = True
