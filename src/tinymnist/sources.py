"""Which Python source files this process ran or read: what a run's recorded commit must hold.

``sys.modules`` lists what was imported, but a model can also run a file without importing it
(``importlib.util.spec_from_file_location`` then ``exec_module``, ``runpy.run_path``, ``exec(open(...))``): a
gitignored ``scratch.py`` loaded so passed as committed code, and ``history add`` filed the run under the clean
commit (the ninth independent sweep of issue 30). Python's audit hooks (PEP 578) see every module body executed
(``exec``, with its code object's file) and every file opened (``open``), whatever the route. The hook keeps the
file of every module body run and the name of every ``.py`` opened; ``tinymnist.results`` decides which of them
the checkout must hold.
"""

from __future__ import annotations

import os
import sys

SEEN: set[str] = set()  # absolute paths of the files whose code this process ran, and of the .py files it opened
_watching = False


def _hook(event: str, args: tuple) -> None:
    # Called for every audited event in the process: the cheap tests come first. Measured: about 65,000 events
    # to start a run (imports), then about 22 a training batch (builtins.id), so well under 1% of a run.
    if event == "exec":  # a module body, whatever its file is called (runpy or exec_module of "helper.txt")
        name = getattr(args[0], "co_filename", None) if args else None
        code = True
    elif event == "open":  # a .py file read, by a str or a bytes path (the tenth sweep: b"scratch.py")
        name, code = (args[0] if args else None), False
    else:
        return
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if isinstance(name, str) and not name.startswith("<") and (code or name.endswith(".py")):
        SEEN.add(os.path.abspath(name))


def container(path: str) -> str:
    """The file that holds ``path``: itself, or for a module inside a zip (``lib.zip/helper.py``) the zip; "" if
    none exists."""
    while path and not os.path.isfile(path):
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        path = parent
    return path


def watch() -> None:
    """From now on, note each .py file this process executes or opens. Once per process (a hook cannot be
    removed); the command line calls it before any user code runs."""
    global _watching
    if not _watching:
        sys.addaudithook(_hook)
        _watching = True
