"""Exit codes and the errors behind them, importable without torch.

The command line catches these before anything heavy is imported, so a Ctrl-C while torch is still loading,
or a dependency that is missing, never reaches a handler that imports torch again (issue 18, B1).

Exit codes, one meaning each:
0 pass; 1 a gate failed, a run diverged, or a comparison found a regression; 2 bad usage, bad data or a
missing dependency (one line naming the argument, file or package, and the fix); 3 an internal error (one line
and the path of the saved traceback); 4 (bisect) BAD is not shown to be a regression of GOOD; 5 (bisect)
skipped commits leave the first bad commit undecided; 6 a job died outside tinymnist's control (killed, out of
memory, a time limit, a node lost, cancelled: each named by recipe and seed; rerun with --resume to finish);
130 interrupted by Ctrl-C; 143 by SIGTERM; 141 the reader of its output went away (``| head``), quietly, as
a command killed by SIGPIPE. A crash is never 1. A bisect that names the first bad commit ends
with 0: finding it is what it was asked to do.
"""

from __future__ import annotations

import functools

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_NO_REGRESSION = 4
EXIT_UNDECIDED = 5
EXIT_JOB_DIED = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
EXIT_TERMINATED = 143


class UserError(Exception):
    """The input's fault (an argument, a file, a plugin): one line naming it and the fix; exit code 2."""


class UsageError(UserError):
    """A bad argument or combination of arguments."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI timeouts and `kill` send): handled like Ctrl-C, so what was trained is written."""


class GateFailed(Exception):
    """A gate that fails before any training (a model over its parameter budget): exit code 1."""


def internal_error(prog: str, command: str, error: BaseException, say=None) -> int:
    """A bug, not a verdict: one line naming the error and the file its traceback is saved in; exit code 3."""
    import sys
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(error))
    try:
        fd, path = tempfile.mkstemp(prefix="tinymnist-crash-", suffix=".txt")
        with open(fd, "w") as f:
            f.write(text)
        where = f"traceback saved to {path}"
    except OSError:
        where = "the traceback could not be saved"
    first = str(error).splitlines()[0] if str(error) else ""
    line = f"{prog} {command}: internal error: {type(error).__name__}: {first} ({where}); please report it"
    if say is not None:  # a worker: the parent prints it
        say(line)
    else:
        print(line, file=sys.stderr)
    return EXIT_INTERNAL


EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "matplotlib": "report"}


def require(module: str, command: str) -> None:
    """A dependency a command needs (an extra), named with the pip line that installs it, before it runs."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module, "all")
        raise UsageError(f"{command} needs {module}, which is not installed: pip install 'tinymnist[{extra}]'")


MAX_SAID = 1000  # characters of a user exception's message that an error line shows


def said(e: BaseException, located: bool = False) -> str:
    """``SystemExit: 0``: a user exception in words, on one line (a message's first line: an error is one line),
    even one whose own ``__str__`` raises; ``located`` adds where in the user's code it was raised
    (``user_code_at``), as an error raised while training already says (the fourth independent sweep)."""
    try:
        text = str(e)
    except KeyboardInterrupt:
        raise
    except BaseException:  # a __str__ that raises SystemExit(0) must not end tinymnist with 0
        text = "(its message cannot be shown: its __str__ raised)"
    first = (text.splitlines() or [""])[0]
    if len(first) > MAX_SAID:  # an error is one readable line; a job's log is read back from its tail, and a
        # 100 kB message pushed the line's start (which says where) out of it (the sixth independent sweep)
        first = f"{first[:MAX_SAID]}... ({len(first):,} characters)"
    line = f"{type(e).__name__}: {first}"
    found = user_code_at(e) if located else None
    return f"{line} (at {found[0]})" if found else line


# One answer per process: the commit check asks it for every module file it reads (3,819 calls, 80% of the
# check's 1.2 s with torch imported, measured under cProfile before the cache).
@functools.cache
def library_folders() -> tuple[str, ...]:
    """The folders installed code lives in (the standard library, site-packages), real paths ending in a
    separator. Only these, not an environment's whole prefix: a module the user wrote in a folder that happens
    to lie inside a virtual environment's folder is still the user's. The one definition of "installed"."""
    import os
    import site
    import sysconfig

    kinds = ("stdlib", "platstdlib", "purelib", "platlib")
    found = {*site.getsitepackages(), *(v for k, v in sysconfig.get_paths().items() if k in kinds)}
    return tuple(sorted(os.path.realpath(p) + os.sep for p in found if p))


def is_installed(path: str, within: str = "") -> bool:
    """``path`` (a real path) is installed code: under a library folder, or any site- or dist-packages. Inside
    ``within`` (a checkout: its real path ending in a separator) only a virtual environment's files count (a
    .tox or .venv there, known by its pyvenv.cfg): an ignored ``vendor/site-packages`` of the user's own code
    passed as installed (the eleventh independent sweep of issue 30)."""
    import os

    if path.startswith(library_folders()):
        return True
    if within and path.startswith(within):
        folder = os.path.dirname(path)
        while folder.startswith(within):
            if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
                return True
            folder = os.path.dirname(folder)
        return False
    parts = path.split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


# The files of installed plugin distributions: the user's code though they sit among the libraries (the third
# sweep of issue 30 found an error raised in a pip-installed plugin reported as tinymnist's own). Only the
# plugin's own files, never a whole package: an import path like torch.hub:load must not make torch the user's.
_PLUGIN_FILES: set[str] = set()


def mark_plugin_files(dist) -> None:
    """Count the Python files of ``dist`` (an ``importlib.metadata.Distribution``, the plugin's) as user code
    for ``user_code_at``; tinymnist's own distribution never is."""
    import os

    if dist is None or dist.metadata["Name"] == "tinymnist":
        return
    for f in dist.files or ():
        if str(f).endswith(".py"):
            _PLUGIN_FILES.add(os.path.realpath(str(dist.locate_file(f))))


def user_code_at(error: BaseException) -> tuple[str, BaseException] | None:
    """``("mynet.py:12 (forward)", the error raised there)``: the innermost frame of the user's code (neither
    tinymnist, nor installed code other than a plugin's, nor the standard library) in ``error``'s traceback, or in
    that of an error it was raised from (torch.export wraps a forward's error in its own); None if there is none.
    An error raised there (a model's forward or state_dict, a module the user wrote) is the user's to fix: exit 2
    naming it, not an internal error of tinymnist's (the third independent sweep of issue 30)."""
    import traceback

    seen: set[int] = set()
    chained: BaseException | None = error
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        for frame in reversed(traceback.extract_tb(chained.__traceback__)):
            if _users(frame.filename):
                return _where(frame), chained
        chained = chained.__cause__ or chained.__context__
    return None


def _users(filename: str) -> bool:
    """A frame's file is the user's: a plugin's, or neither tinymnist (by real path: imported through a
    symlinked folder it is still tinymnist), nor installed code, nor the standard library, nor generated."""
    import os

    path = os.path.realpath(filename)
    ours = os.path.dirname(os.path.realpath(__file__)) + os.sep
    return path in _PLUGIN_FILES or not (filename.startswith("<") or path.startswith(ours) or is_installed(path))


def raised_by_user(error: BaseException) -> str | None:
    """``"mynet.py:12 (forward)"`` when ``error`` (one of tinymnist's own, a UserError or a GateFailed) was raised
    by the user's code itself, its innermost frame: a model that raised GateFailed read as a gate failure (exit
    1) in one process and as a dead job (6) under local jobs (the ninth independent sweep of issue 30). One that
    tinymnist raised, called from user code, stays tinymnist's verdict."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    return _where(frames[-1]) if frames and _users(frames[-1].filename) else None


def _where(frame) -> str:
    """``"mynet.py:12 (forward)"``: where in the user's code, as every "user code at" line says it."""
    return f"{frame.filename}:{frame.lineno} ({frame.name})"
