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


# Where installed plugins live: their packages are the user's code though they sit among the libraries
# (the third sweep of issue 30 found an error raised in a pip-installed plugin reported as tinymnist's own).
_PLUGIN_ROOTS: set[str] = set()


def mark_user_package(module_name: str) -> None:
    """Count the top-level package of ``module_name`` (an imported plugin or import-path model) as user code for
    ``user_code_at``, wherever it is installed; tinymnist's own modules never are."""
    import os
    import sys

    top = sys.modules.get(module_name.partition(".")[0])
    if top is None or top.__name__ == __name__.partition(".")[0]:
        return
    file = getattr(top, "__file__", None)
    if file and os.path.basename(file) != "__init__.py":  # a single-file module
        _PLUGIN_ROOTS.add(os.path.realpath(file))
    else:  # a package, or a namespace package with several folders
        _PLUGIN_ROOTS.update(os.path.realpath(p) + os.sep for p in getattr(top, "__path__", []))


def user_code_at(error: BaseException) -> tuple[str, BaseException] | None:
    """``("mynet.py:12 (forward)", the error raised there)``: the innermost frame of the user's code (neither
    tinymnist, nor the standard library, nor an installed package) in ``error``'s traceback, or in that of an
    error it was raised from (torch.export wraps a forward's error in its own); None if there is none. An error
    raised there (a model's forward or state_dict, a module the user wrote) is the user's to fix: exit 2 naming
    it, not an internal error of tinymnist's (the third independent sweep of issue 30)."""
    import os
    import sysconfig
    import traceback

    ours = os.path.dirname(os.path.abspath(__file__)) + os.sep
    libraries = {
        os.path.realpath(p) + os.sep
        for k, p in sysconfig.get_paths().items()
        if k in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    seen: set[int] = set()
    chained: BaseException | None = error
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        for frame in reversed(traceback.extract_tb(chained.__traceback__)):
            path = os.path.realpath(frame.filename)
            if any(path == r or path.startswith(r) for r in _PLUGIN_ROOTS):
                return f"{frame.filename}:{frame.lineno} ({frame.name})", chained
            if frame.filename.startswith("<") or path.startswith(ours) or any(path.startswith(x) for x in libraries):
                continue
            if "site-packages" in path or "dist-packages" in path:
                continue
            return f"{frame.filename}:{frame.lineno} ({frame.name})", chained
        chained = chained.__cause__ or chained.__context__
    return None
