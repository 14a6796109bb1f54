"""Versioned JSON results and atomic file writes (temporary file in the same folder, fsync, rename)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tinymnist import sources
from tinymnist.errors import UserError
from tinymnist.recipes import Recipe, RecipeError, check_ranges, label_of, sort_key, typed

SCHEMA_VERSION = 3
# Schema 1 (reports/baseline/) lacks `identity` and `population`; schema 2 lacks the validation figures
# (`val_images`, and `val_loss`/`val_acc` per epoch). Both stay readable, with their defaults.
READABLE_SCHEMAS = (1, 2, 3)


TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000  # MNIST's full sets: fewer means a smoke run
MAX_VAL_SPLIT = 50_000  # of MNIST's 60,000 training images: leave 10,000 to train on
DEVICES = ("cpu", "cuda")  # what tinymnist.engine.resolve_device gives


class ResultsError(UserError, ValueError):
    """A results file that cannot be read; the message names it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputError(UserError, OSError):
    """An output file that cannot be written where it was asked for (a folder stands there, no permission, a
    full disk): exit 2, one line naming the path. An OSError too, so a caller that says what it kept (the
    runner) still catches it; ``strerror`` is the reason in words."""

    def __init__(self, path: str | os.PathLike, reason: str, errno: int = 0):
        super().__init__(errno, reason)
        self.path = str(path)

    def __str__(self) -> str:
        return f"{self.path}: cannot write here ({self.strerror}); choose another output path"


def dangling_link(path: str | os.PathLike) -> str:
    """Why an output path cannot be written: a symlink to nothing, through which a write would make a file
    elsewhere (the independent sweep of issue 30); "" for any other path. Every writer asks this one place."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"a symlink to {os.path.realpath(path)}, which does not exist"
    return ""


def refuse_non_files(paths: Sequence[Path], named: bool = False) -> None:
    """Before anything is written or moved (and by a command before the first of several files, or a run
    before it trains): a target that exists and is not a regular file (a folder, a FIFO, a device) is the
    user's, never swapped aside (issue 30: a folder at REPORT.md was moved to a hidden name); so is a symlink
    at a file tinymnist names itself (``_through_link``)."""
    import stat

    for path in paths:
        _through_link(Path(path), named)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as e:
            raise OutputError(path, e.strerror or type(e).__name__, e.errno or 0) from None
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "something that is not a regular file"
            raise OutputError(path, f"{kind} stands where this file goes; nothing was moved")


def refuse_links_below(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """A folder tinymnist makes inside ``root`` (the folder the user gave: OUT, the store) on the way to ``path``
    that is a symlink is refused: writing through it would file results outside ``root`` (the fourth independent
    sweep of issue 30: OUT/step4 and STORE/<commit> linked elsewhere took the results there). ``root`` itself
    may be a link: the user named it."""
    root, path = Path(root), Path(path)
    for folder in reversed(path.relative_to(root).parents[:-1]):  # root/a, root/a/b, ... (not root, not path)
        if (root / folder).is_symlink():
            raise OutputError(
                root / folder,
                f"a symlink to {os.path.realpath(root / folder)} stands where tinymnist keeps a folder of its own "
                "inside the one you gave; remove the link; nothing was written",
            )


# The files a run's record is kept in (results, weights, a checkpoint, its lock and log): hours of training each.
RECORD_FILE = re.compile(r"seed\d+\.(json|pt|ckpt|lock|log)")


def refuse_run_records(path: str | os.PathLike) -> None:
    """An output the user names (``--junit-xml``, ``--markdown``, ``calibrate --out``, ``export --out``) is
    refused by a run's record's name: written over or appended to, a result or its weights would be lost to a
    typo such as ``--junit-xml OUT/step4/seed0.json`` (the fifth independent sweep of issue 30)."""
    named = [Path(path), Path(os.path.realpath(path))]
    if any(RECORD_FILE.fullmatch(p.name) for p in [*named, *named[0].parents]):  # OUT/step2/seed0.json/j.xml
        # would make seed0.json a folder, which every later run of that seed then stumbles on (the seventh sweep)
        # by name, whether or not one stands there yet: a run writes OUT/step4/seed0.pt while it trains, and an
        # output named so would replace it afterwards (the sixth independent sweep)
        raise OutputError(
            path, "a run's record goes by this name (seedN.json, .pt, .ckpt, .lock, .log); nothing was written"
        )


def refuse_hard_link(path: str | os.PathLike) -> None:
    """A file appended to that has other names (a hard link) is refused: the append would change each of them,
    a run's record among them perhaps. A replaced file (the atomic writes) leaves the other names as they were."""
    try:
        links = os.stat(path).st_nlink
    except OSError:
        return
    if links > 1 and os.path.isfile(path):
        raise OutputError(
            path,
            f"a file with {links - 1} other name(s) (a hard link), which an append would change "
            "too; give a file of its own; nothing was written",
        )


def _through_link(path: Path, named: bool) -> Path:
    """A symlink at a path the user named (``--markdown``, ``--junit-xml``, an export's file) is theirs: the file
    it names is replaced (atomically, beside it), the link kept. A link at a file tinymnist names itself inside
    a folder (a result, weights, a checkpoint, REPORT.md, a plot, the history store) is refused: a write through
    it would replace a file outside that folder, which no one asked for (the third sweep of issue 30, F17). A
    link to nothing is refused everywhere, never replaced by a file."""
    if not path.is_symlink():
        return path
    if dangling_link(path):
        raise OutputError(path, f"{dangling_link(path)}, stands here; nothing was written")
    if not named:
        target = os.path.realpath(path)
        raise OutputError(
            path,
            f"a symlink stands where tinymnist keeps a file of its own, and would send the write "
            f"to {target}; remove the link; nothing was written",
        )
    return Path(os.path.realpath(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, named: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one.

    The temporary name is unique per writer, so two processes writing into one folder cannot collide.
    ``named``: the user named this very path, so a symlink there is followed (see ``_through_link``).
    """
    _write_files([(path, data)], named)


def atomic_write_pair(items: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write several files as one (a result and its weights): a signal or a full disk never leaves a new file
    beside an old one. Each is a file tinymnist names inside a folder: a symlink at one is refused."""
    _write_files(items, named=False)


def _write_files(items: Sequence[tuple[str | os.PathLike, bytes]], named: bool) -> None:
    """Every temporary is written and synced first (beside its target, so the rename is atomic), then all are
    renamed in a row with SIGINT and SIGTERM held back; a failure before the renames changes nothing."""
    import signal

    staged: list[tuple[str, Path]] = []
    for p, _ in items if named else ():
        refuse_run_records(p)
    targets = [(_through_link(Path(p), named), data) for p, data in items]
    refuse_non_files([p for p, _ in targets], named=True)  # the targets: links already followed or refused
    path = targets[0][0] if targets else Path(".")
    try:
        for path, data in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone who may read them
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        held = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            _swap_in(staged)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    except OutputError:
        raise
    except OSError as e:  # every target is as it was (_swap_in puts back what it moved)
        raise OutputError(e.filename or path, e.strerror or type(e).__name__, e.errno or 0) from None
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def _swap_in(staged: list[tuple[str, Path]]) -> None:
    """Rename every staged file over its target, all or none: each existing target is first moved aside, and
    any failure (an immutable or unwritable file, a full directory) puts back every target as it was, so a
    result is never replaced without its weights, nor its weights without it (issue 18, B3)."""
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for _, path in staged:
            if path.exists():
                backup = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
                os.replace(path, backup)
                aside.append((backup, path))
        for tmp, path in staged:
            os.replace(tmp, path)
            placed.append(path)
    except OSError:
        for path in placed:
            path.unlink(missing_ok=True)
        for backup, path in aside:
            os.replace(backup, path)
        raise
    for backup, _ in aside:
        backup.unlink(missing_ok=True)


def torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def text_bytes(text: str) -> bytes:
    """UTF-8 of a text file a person reads (markdown, JUnit). A name that was not UTF-8 arrives as surrogate
    escapes; it is shown as its bytes (``r\\xe9s``), never a crash (issue 30, cause 13)."""
    from tinymnist.shell import shown

    return shown(text).encode()


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def atomic_torch_save(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, torch_bytes(obj))


def load_torch_data(path: str | os.PathLike, device="cpu", fix: str = "delete it") -> dict:
    """A checkpoint or weights file as plain data (tensors, numbers, strings, lists, dicts).

    ``weights_only=True``: a file that holds code is refused before any of it runs, and says so; a damaged
    file is named. Every torch file the harness reads comes through here.
    """
    import pickle

    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler names the object it refused ("GLOBAL posix.system"); anything else
        # it cannot parse is a damaged or foreign file.
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise ResultsError(
                f"{path}: refused: it holds Python code ({found.group(1)}), not only tensors and "
                f"numbers; nothing in it was run; {fix}"
            ) from None
        raise ResultsError(f"{path}: not a torch checkpoint (unreadable pickle); {fix}") from None
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror}); {fix}") from None
    except Exception as e:  # a truncated zip, or not a torch file at all
        # The first line of what torch said, if it said anything: a pickle cut short is a bare EOFError.
        said = next(iter(str(e).splitlines()), "")[:100]
        raise ResultsError(f"{path}: damaged ({type(e).__name__}{': ' + said if said else ''}); {fix}") from None
    if not isinstance(state, dict):
        raise ResultsError(f"{path}: not a tinymnist file (holds a {type(state).__name__}); {fix}")
    return state


def _git(*args: str) -> str:
    # The commit of the project being trained: the working directory's checkout (the user's repository, or
    # a worktree that `bisect` made), not wherever the tinymnist package happens to be installed.
    return subprocess.run(["git", *args], capture_output=True, text=True, errors="replace", timeout=5).stdout.strip()


COMMIT_VARIABLE = "TINYMNIST_COMMIT"


@functools.cache
def git_sha() -> str:
    """The checkout's commit, read once per process: the code that started the run, even if the checkout moves
    on while it trains. ``-dirty`` when a tracked file is changed or a Python module or TOML file is not
    committed: a model or recipe that a run imports from the checkout must be committed code for its run to
    count as clean (issue 30, cause 6). Outside a git checkout (an sdist, a container), $TINYMNIST_COMMIT names
    the commit of the code under test (e.g. $GITHUB_SHA); inside one it must agree with HEAD."""
    try:
        sha = _git("rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.SubprocessError):
        sha = ""
    named = os.environ.get(COMMIT_VARIABLE)
    if named is not None:
        named = named.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{12,40}", named):
            raise UserError(
                f"{COMMIT_VARIABLE}={named!r}: not a commit hash (12 to 40 hex digits); set it to the commit of "
                "the code under test (e.g. $GITHUB_SHA), or unset it"
            )
        if sha and not named.startswith(sha):
            raise UserError(
                f"{COMMIT_VARIABLE}={named[:12]}, but this git checkout is at {sha}; in a checkout its own commit "
                f"is recorded: unset {COMMIT_VARIABLE}"
            )
        if not sha:
            return named[:12]
    if not sha:
        return "unknown"
    try:
        dirty = (
            _git("status", "--porcelain", "--untracked-files=no")
            or _git("status", "--porcelain", "--untracked-files=all", "--", ":(top)*.py", ":(top)*.toml")
            or _imported_but_not_committed()
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def still_committed(sha: str) -> str:
    """``git_sha``'s answer once the run has trained: a module first imported during training (a forward that
    imports a helper at its sixth batch) was not there when the commit was read at the start, and a gitignored
    one passed as the clean commit (the eighth independent sweep of issue 30). Asked again when the result is
    written; only ever adds ``-dirty``."""
    if sha == "unknown" or sha.endswith("-dirty"):
        return sha
    try:
        late = _imported_but_not_committed()
    except (OSError, subprocess.SubprocessError):
        return sha
    return sha + "-dirty" if late else sha


def _imported_but_not_committed() -> list[str]:
    """Modules this process imported from inside the checkout that git does not track: a model module git
    ignores (``*.py`` in .gitignore, a scratch folder) is code the run used and no commit holds. Installed
    packages are not the checkout's code, even where the environment lives in it (.tox, .venv)."""
    import sys

    from tinymnist.errors import is_installed

    top = _git("rev-parse", "--show-toplevel")
    if not top:
        return []
    top = os.path.realpath(top) + os.sep
    files = set()
    names = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    for name in [*names, *list(sources.SEEN)]:  # imported, or run or read some other way (tinymnist.sources)
        if not isinstance(name, str) or not os.path.isabs(name):  # torch._classes says "_classes.py": no file
            continue
        path = sources.container(os.path.realpath(name))  # a module inside a zip is the zip's (the tenth sweep)
        if path and path.startswith(top) and not is_installed(path, within=top):
            files.add(path)
    # A checkout of tinymnist itself whose run imported another copy (installed, or another worktree): the code
    # that ran is not this commit's (the third independent sweep of issue 30).
    elsewhere = _another_tinymnist(top)
    files |= {p for p in map(os.path.realpath, READ_FROM_CHECKOUT) if p.startswith(top)}
    if not files:
        return elsewhere
    # `-v` tags each file: H is tracked as it is; S (skip-worktree) and a lower-case tag (assume-unchanged) hide
    # an edit from `git status`, so the file's content is not the commit's.
    listed = _git("ls-files", "-v", "--full-name", "-z", "--", *sorted(files)).split("\0")
    clean = {entry[2:] for entry in listed if entry[:2] == "H "}
    return elsewhere + sorted(f for f in files if os.path.relpath(f, top) not in clean)


def _another_tinymnist(top: str) -> list[str]:
    """``[its __init__.py]`` when ``top`` is a checkout of tinymnist itself and the tinymnist this process
    imported lies elsewhere with other code than the commit's (an older install, another worktree); ``[]`` when
    it is the checkout's own, or a copy whose modules match the commit's byte for byte (``pip install .`` of
    this very commit, as the README's install does: the review of issue 30's third-sweep fixes)."""
    import tinymnist

    package = os.path.dirname(os.path.realpath(tinymnist.__file__))
    found = _git("ls-files", "--full-name", "--", ":(top,glob)**/tinymnist/__init__.py").splitlines()
    if package.startswith(top) or not found:
        return []
    committed_dir = os.path.dirname(found[0])  # src/tinymnist
    listing = _git("ls-tree", "-r", "--full-tree", "HEAD", "--", committed_dir)
    committed = {}
    for line in listing.splitlines():  # "<mode> blob <sha>\t<path>"
        meta, _, path = line.partition("\t")
        if path.endswith(".py"):
            committed[os.path.relpath(path, committed_dir)] = meta.split()[2]
    imported = sorted(
        os.path.relpath(os.path.join(d, f), package)
        for d, dirs, files in os.walk(package)
        for f in files
        if f.endswith(".py") and "__pycache__" not in d
    )
    hashed = _git("hash-object", "--", *(os.path.join(package, f) for f in imported)).splitlines() if imported else []
    same = sorted(committed) == imported and [committed[f] for f in imported] == hashed
    return [] if same else [os.path.join(package, "__init__.py")]


# Files a run reads as code from the checkout besides modules (recipe files): each must be committed too.
READ_FROM_CHECKOUT: list[str] = []


MAX_JSON_BYTES = 64 << 20  # a results file is a few kB; anything near this is not one (or is /dev/zero)


def read_regular_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; a FIFO, a device (``/dev/zero``)
    or a folder is refused by name before anything is read, so a bad path can neither hang nor fill memory."""
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, a device or a socket)"
        raise ResultsError(f"{path}: {kind}; pass a {what}")
    if st.st_size > max_bytes:
        raise ResultsError(f"{path}: {st.st_size:,} bytes, too large for a {what} (at most {max_bytes:,})")
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror})") from None


def read_json(path: str | os.PathLike, what: str):
    """A JSON file, read safely (``read_regular_file``); damage, or nesting too deep to parse, is named."""
    data = read_regular_file(path, what)
    try:
        return json.loads(data)
    except RecursionError:
        raise ResultsError(f"{path}: not a {what} (nested too deeply)") from None
    except ValueError as e:  # includes UnicodeDecodeError
        raise ResultsError(f"{path}: not a {what} (not valid JSON: {str(e)[:120]})") from None


def _check_fields(obj: dict, types: dict[str, tuple[type, ...]], where: str) -> dict:
    """Each present field of ``obj`` of its type, by the one type check recipes use (``recipes.typed``)."""
    for name, kinds in types.items():
        if name in obj:
            obj[name] = typed(name, kinds, obj[name], what=f"{where}{name}")
    return obj


_NONE = type(None)
EPOCH_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "train_loss": (float,),
    "train_acc": (float,),
    "test_loss": (float,),
    "test_acc": (float,),
    "lr": (float,),
    "seconds": (float,),
    "eval_seconds": (float,),
    "images_per_second": (float,),
    "val_loss": (float, _NONE),
    "val_acc": (float, _NONE),
}
_EPOCH_OPTIONAL = ("val_loss", "val_acc")
RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,),
    "seed": (int,),
    "params": (int,),
    "recipe": (dict,),
    "epochs": (list,),
    "gate": (dict,),
    "status": (str,),
    "device": (str,),
    "device_name": (str,),
    "threads": (int,),
    "torch": (str,),
    "git_sha": (str,),
    "planned_epochs": (int,),
    "train_images": (int,),
    "test_images": (int,),
    "wall_seconds": (float,),
    "diverged_at": (dict, _NONE),
    "schema_version": (int,),
    "extra": (dict,),
    "identity": (dict,),
    "population": (int,),
    "val_images": (int,),
}


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float  # learning rate at the epoch's last step
    seconds: float  # training, this epoch
    eval_seconds: float  # evaluation on the test set, timed apart
    images_per_second: float
    val_loss: float | None = None  # on the held-out validation split (--val-split); None without one
    val_acc: float | None = None


def evaluation_diverged(*losses: float | None) -> bool:
    """An epoch's evaluation ends the run as diverged when any loss it measured (train, test, validation) is not
    finite: the one rule the writers (engine, population) follow and the reader holds a completed run to."""
    return not all(math.isfinite(x) for x in losses if x is not None)


@dataclass
class RunResult:
    step: int
    seed: int
    params: int
    recipe: dict
    epochs: list[EpochStats]
    gate: dict
    status: str  # completed | diverged | interrupted
    device: str
    device_name: str
    threads: int
    torch: str
    git_sha: str
    planned_epochs: int
    train_images: int
    test_images: int
    wall_seconds: float
    diverged_at: dict | None = None  # {"epoch": e, "batch": b, "loss": "nan"}
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)  # what makes two runs the same run (see tinymnist.runner)
    population: int = 1  # how many seeds trained together with this one
    val_images: int = 0  # training images held out as the validation split (0: none)

    @property
    def in_progress(self) -> bool:
        """Cut off by a signal: a training in progress, not a result, so no statistic or history counts it."""
        return self.status == "interrupted"

    def on_validation(self, where: str | os.PathLike) -> RunResult:
        """This run with its validation figures where the test figures are, so that the one judge, summary
        and compare judge it on validation (``--on val``). A run without a split is refused, by ``where``."""
        if not self.val_images or any(e.val_acc is None or e.val_loss is None for e in self.epochs):
            raise ResultsError(
                f"{where}: no validation figures (trained without --val-split); judge it with --on test, "
                "or train with --val-split N"
            )
        epochs = [replace(e, test_acc=float(e.val_acc or 0), test_loss=float(e.val_loss or 0)) for e in self.epochs]
        return replace(self, epochs=epochs, extra={**self.extra, "judged_on": "val"})

    @property
    def test_acc(self) -> list[float]:
        return [e.test_acc for e in self.epochs]

    @property
    def key(self) -> str:
        """The recipe's name on disk (``stepN`` for a built-in step, and for results of earlier versions)."""
        key = self.recipe.get("key")
        return key if isinstance(key, str) and key else f"step{self.step}"

    @property
    def max_batches(self) -> int | None:
        """A dry run's batches an epoch (``--dry-run``, ``--max-batches``), None for a run of whole epochs: what
        makes it a smoke run, and part of its configuration (checked on reading: an integer >= 1 or null)."""
        return self.identity.get("max_batches")

    @property
    def label(self) -> str:
        """How messages name the recipe: "step 4", or a recipe file's name."""
        return label_of(self.key)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        if not isinstance(d, dict) or d.get("schema_version") not in READABLE_SCHEMAS:
            got = d.get("schema_version") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"results schema {got!r}, this harness reads {', '.join(map(str, READABLE_SCHEMAS))}")
        d = _check_fields(dict(d), RESULT_TYPES, "")
        missing = [f for f in RESULT_TYPES if f not in d and f not in _OPTIONAL]
        if missing:
            raise ValueError(f"field {missing[0]} is missing")
        unknown = sorted(set(d) - set(RESULT_TYPES))
        if unknown:
            raise ValueError(f"field {unknown[0]} is not a results field")
        if d["status"] not in STATUSES:
            raise ValueError(f"field status is {d['status']!r}, not one of {', '.join(STATUSES)}")
        # A torch device type ("cpu", "cuda"): it becomes a folder name in the history store, so "../x" would
        # file a run outside the store (the third independent sweep of issue 30).
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,15}", d["device"]):
            raise ValueError(f"field device is {d['device']!r}, not a device type such as 'cpu' or 'cuda'")
        for name, (low, high) in _RANGES.items():  # counts and times that parse but cannot be (issue 30, cause 14)
            v = d.get(name)
            if v is not None and not (math.isfinite(v) and low <= v <= high):
                raise ValueError(f"field {name} is {v!r}, not a number in [{low:g}, {high:g}]")
        # what no run can have trained on (the fourth independent sweep: train_images 10**9 was filed as a
        # configuration of its own; a split larger than MNIST, a test set larger than its 10,000)
        if d["train_images"] + (d.get("val_images") or 0) > TRAIN_IMAGES:
            raise ValueError(
                f"fields train_images + val_images are {d['train_images'] + (d.get('val_images') or 0):,}, more "
                f"than MNIST's {TRAIN_IMAGES:,} training images"
            )
        if isinstance(d["recipe"], dict) and d["recipe"].get("step", d["step"]) != d["step"]:
            raise ValueError(f"field step is {d['step']}, but its recipe's is {d['recipe'].get('step')!r}")
        if isinstance(d["recipe"], dict) and d["recipe"].get("epochs", d["planned_epochs"]) != d["planned_epochs"]:
            raise ValueError(
                f"field planned_epochs is {d['planned_epochs']}, but its recipe trains {d['recipe'].get('epochs')!r}"
            )
        if d.get("diverged_at") is not None and d["status"] != "diverged":
            raise ValueError(f"field diverged_at is set in a run whose status is {d['status']!r}")
        if d["status"] == "diverged":  # where it diverged is what its verdict says (the fifth independent sweep)
            _check_diverged_at(d.get("diverged_at"), d["planned_epochs"])
        epochs = []
        for i, e in enumerate(d["epochs"], start=1):
            if not isinstance(e, dict):
                raise ValueError(f"epochs[{i}] is {type(e).__name__}, not an object")
            e = _check_fields(dict(e), EPOCH_TYPES, f"epochs[{i}].")
            if set(e) - set(_EPOCH_OPTIONAL) != set(EPOCH_TYPES) - set(_EPOCH_OPTIONAL) or set(e) - set(EPOCH_TYPES):
                gone = sorted((set(EPOCH_TYPES) - set(_EPOCH_OPTIONAL)) ^ (set(e) - set(_EPOCH_OPTIONAL)))
                raise ValueError(f"epochs[{i}] field {gone[0]} is missing or unknown")
            for name, (low, high) in _EPOCH_RANGES.items():
                if not (math.isfinite(e[name]) and low <= e[name] <= high):
                    raise ValueError(f"epochs[{i}].{name} is {e[name]!r}, not a number in [{low:g}, {high:g}]")
            for name in _EPOCH_POSITIVE:
                if e[name] <= 0:
                    raise ValueError(f"epochs[{i}].{name} is {e[name]!r}: an epoch that trained takes time")
            for name in ("train_loss", "test_loss", "val_loss"):  # cross-entropy is never negative
                if e.get(name) is not None and e[name] < 0:
                    raise ValueError(f"epochs[{i}].{name} is {e[name]!r}: a loss is never negative")
            if d["status"] == "completed":  # a non-finite loss ends a run as diverged: in a completed one, damage
                for name in ("train_loss", "train_acc", "test_loss", "test_acc", *_EPOCH_OPTIONAL):
                    if e.get(name) is not None and not math.isfinite(e[name]):
                        raise ValueError(
                            f"epochs[{i}].{name} is {e[name]!r} in a completed run (only a diverged one has it)"
                        )
            for name in ("train_acc", "test_acc", "val_acc"):
                # NaN is recorded (a diverged run) and judged as non-finite; a number outside 0-100 is no
                # accuracy at all, and must not pass silently.
                if e.get(name) is not None and math.isfinite(e[name]) and not 0 <= e[name] <= 100:
                    raise ValueError(f"epochs[{i}].{name} is {e[name]}, outside [0, 100]")
            epochs.append(EpochStats(**e))
        numbers = [e.epoch for e in epochs]
        if numbers != list(range(1, len(epochs) + 1)):
            first = next(i for i, n in enumerate(numbers, start=1) if n != i)
            raise ValueError(
                f"epochs[{first}].epoch is {numbers[first - 1]}, not {first}: epochs are numbered 1, 2, ..."
            )
        if len(epochs) > d["planned_epochs"]:
            raise ValueError(f"{len(epochs)} epochs recorded of {d['planned_epochs']} planned")
        if d["status"] == "completed" and len(epochs) != d["planned_epochs"]:  # only a cut-short run has fewer
            raise ValueError(f"a completed run with {len(epochs)} epochs recorded of {d['planned_epochs']} planned")
        for name in _EPOCH_OPTIONAL:  # validation figures in every epoch or none: a gap is a damaged file
            has = [getattr(e, name) is not None for e in epochs]
            if any(has) and not all(has):
                raise ValueError(f"epochs[{has.index(False) + 1}] has no {name}, which the other epochs have")
        if "judged_on" in (d.get("extra") or {}):  # set in memory by on_validation, never written: in a file it
            # would relabel the test figures as validation ones (the review of the third sweep's fixes)
            raise ValueError("field extra.judged_on is never written by a run; remove it")
        ident = d.get("identity") or {}
        # the run's identity names its own seed, recipe, split and device: a resume is checked against it, so one
        # that disagrees would let another run's checkpoint continue as this one (the fifth independent sweep)
        if d["device"] not in DEVICES:  # the eighth sweep: "tpu" was reported and filed
            raise ValueError(f"field device is {d['device']!r}; a run records one of {', '.join(DEVICES)}")
        # images: the identity counts those there were, the run those it trained on (a dry run's batches) and
        # evaluated; a full run trains on all of them (the eighth sweep: 60,000 beside 3,000 passed)
        full = ident.get("max_batches") is None
        for name in ("seed", "recipe", "val_images", "device", *(("train_images", "test_images") if full else ())):
            if name in ident and ident[name] != d.get(name, 0):
                if name == "recipe":
                    raise ValueError("field identity.recipe differs from the run's recipe")
                raise ValueError(
                    f"field identity.{name} is {ident[name]!r}, but the run's {name} is {d.get(name, 0)!r}"
                )
        for name in ("max_batches", "population"):  # a dry run's batches an epoch; the --population asked for
            value = ident.get(name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"field identity.{name} is {value!r}, not an integer >= 1 (or null)")
        stacked = ident.get("stacked", 1)  # seeds trained as one stacked model (resumed members may outnumber
        if type(stacked) is not int or stacked < 1:  # the --population asked for: no upper bound)
            raise ValueError(f"field identity.stacked is {stacked!r}, not an integer >= 1")
        # Validation figures come from a split of the training set, so they exist exactly when it does: a file
        # with one and not the other would be judged on a split no run had (the third sweep of issue 30, F11).
        split, has_val = d.get("val_images") or 0, bool(epochs) and epochs[0].val_acc is not None
        if has_val and not split:
            raise ValueError("its epochs have val_acc, but val_images is 0: no validation split was held out")
        if split and epochs and not has_val:
            raise ValueError(f"val_images is {split}, but its epochs have no val_acc")
        d["epochs"] = epochs
        return cls(**d)


def _check_diverged_at(at, planned: int) -> None:
    """A diverged run records where: ``{"epoch": E, "batch": B or "evaluation", "loss": "nan"}``, as the engine
    writes it. A diverged run without it, or with another shape, is no run's file: its verdict printed it raw."""
    ok = (
        isinstance(at, dict)
        and set(at) == {"epoch", "batch", "loss"}
        and type(at["epoch"]) is int
        and 1 <= at["epoch"] <= planned
        and (at["batch"] == "evaluation" or (type(at["batch"]) is int and at["batch"] >= 1))
        and isinstance(at["loss"], str)
    )
    if not ok:
        raise ValueError(
            f"field diverged_at is {at!r} in a diverged run; it records "
            '{"epoch": E, "batch": B or "evaluation", "loss": "nan"}'
        )


def diverged_where(at: dict | None) -> str:
    """Where a diverged run stopped, in words: "epoch 3, batch 7 (loss nan)"."""
    if not at:
        return ""
    batch = "its evaluation" if at["batch"] == "evaluation" else f"batch {at['batch']}"
    return f"epoch {at['epoch']}, {batch} (loss {at['loss']})"


# Each number's range: what a run can record. The upper bounds are far above any real run (a year of wall time,
# a billion images a second) but keep 1e308 out, whose sums overflowed into numpy warnings on stderr (the fourth
# independent sweep); a seed is the generator's 32 bits, as the command line takes it.
_YEAR = 3.2e7
_RANGES = {
    "seed": (0, 2**32 - 1),
    "params": (1, 1e12),  # a model with nothing to train is refused before it trains
    "threads": (1, 1e6),
    "planned_epochs": (1, 1e6),
    "train_images": (1, TRAIN_IMAGES),
    "test_images": (1, TEST_IMAGES),
    "wall_seconds": (0, _YEAR),
    "population": (1, 1e6),
    "val_images": (0, MAX_VAL_SPLIT),
}
_EPOCH_RANGES = {
    "epoch": (1, 1e6),
    "seconds": (0, _YEAR),
    "eval_seconds": (0, _YEAR),
    "images_per_second": (0, 1e9),
    "lr": (0, 1e6),
}
# An epoch trained at least one batch: it took time and went at some speed. A 0 here made `compare` report a
# throughput regression (the eighth independent sweep of issue 30).
_EPOCH_POSITIVE = ("seconds", "images_per_second")
STATUSES = ("completed", "diverged", "interrupted")
_OPTIONAL = ("diverged_at", "schema_version", "extra", "identity", "population", "val_images")


def config_folder(
    epochs: int, train_images: int, test_images: int, val_images: int = 0, max_batches: int | None = None
) -> str:
    """``e15-train60000-test10000``: the folder of one configuration's runs (``-val10000`` with a split,
    ``-b5`` for a dry run's few batches an epoch)."""
    return (
        f"e{epochs}-train{train_images}-test{test_images}"
        + (f"-val{val_images}" if val_images else "")
        + (f"-b{max_batches}" if max_batches else "")
    )


def config_key(run: RunResult) -> str:
    """What ``run`` trained on, as a folder name: the history store's key, and what ``compare`` checks. A dry
    run and a subset run of as many images are two configurations (the third independent sweep of issue 30)."""
    return config_folder(run.planned_epochs, run.train_images, run.test_images, run.val_images or 0, run.max_batches)


def result_path(out_dir: str | os.PathLike, key: str, seed: int, suffix: str = ".json") -> Path:
    """``OUT/<key>/seed<S><suffix>``: ``key`` is the recipe's (``step4``, or a recipe file's name)."""
    return Path(out_dir) / key / f"seed{seed}{suffix}"


def save_result(out_dir: str | os.PathLike, result: RunResult) -> Path:
    path = result_path(out_dir, result.key, result.seed)
    atomic_write_json(path, result.to_dict())
    return path


def load_result(path: str | os.PathLike) -> RunResult:
    d = read_json(path, "tinymnist results file")
    try:
        result = RunResult.from_dict(d)
        # a recipe this harness cannot read is a bad file, found here; so is one with values no run can have
        # had (lr -1, step 99: the third sweep of issue 30), which history add would file as a run
        check_ranges(Recipe.from_dict(result.recipe), sizes=False)
    except RecipeError as e:
        raise ResultsError(f"{path}: not a tinymnist results file (its recipe's {e}); regenerate it") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultsError(f"{path}: not a tinymnist results file ({e}); regenerate it with tinymnist train") from None
    name = Path(path).name
    if name.startswith("seed") and name.endswith(".json") and name != f"seed{result.seed}.json":
        raise ResultsError(f"{path}: holds seed {result.seed}, not the seed its name says; rename or remove it")
    return result


def recipe_changes(old: dict | Recipe, new: dict | Recipe) -> list[str]:
    """``["lr 0.1 -> 0.05"]``: how two recipes differ as this version reads them, without the recipe's own seed
    list, which changes no training (``Recipe.diff``)."""
    a, b = (r if isinstance(r, Recipe) else Recipe.from_dict(r) for r in (old, new))
    return [c for c in a.diff(b) if not c.startswith("seeds ")]


def recipes_differ(runs: Sequence[RunResult]) -> str:
    """ "seeds 0 and 2 were trained with different recipes (lr 0.1 -> 0.05)" for the first run whose recipe is not
    the lowest seed's; "" when they are one recipe. Compared as this version reads them (files of schema 1 and 2
    of one recipe are one), and without the recipe's own seed list, which changes no training. The one rule for
    a results folder (refused) and for the judge (a population of several recipes fails)."""
    runs = sorted(runs, key=lambda r: r.seed)
    if not runs:
        return ""
    for r in runs[1:]:
        changed = recipe_changes(runs[0].recipe, r.recipe)
        if changed:
            return f"seeds {runs[0].seed} and {r.seed} were trained with different recipes ({'; '.join(changed)})"
    return ""


JUDGED_ON = ("test", "val")


def load_results(
    results_dir: str | os.PathLike, on: str = "test", one_configuration: bool = True
) -> dict[str, list[RunResult]]:
    """Every ``<key>/seed*.json`` under a folder, grouped by recipe key (built-in steps first, in order), sorted
    by seed. A file holding another seed than its name's, or another recipe's results than its folder's, is
    refused by name: either would be judged as something it is not. So is a recipe folder holding runs of two
    configurations (``config_key``), unless ``one_configuration=False`` (the history store, which sorts them):
    one smoke seed among full ones made the whole population "not judged", and the others' gate failures passed
    unseen (the fourth independent sweep of issue 30). ``on="val"`` puts each run's validation figures where its
    test figures are (``RunResult.on_validation``)."""
    if on not in ("test", "val"):
        raise ValueError(f"on={on!r}: judge on 'test' or 'val'")
    by_key: dict[str, list[RunResult]] = {}
    for p in sorted(Path(results_dir).glob("*/seed*.json")):
        if not re.fullmatch(r"seed\d+\.json", p.name):
            continue
        # load_result holds each file to the seed of its name, and here to the recipe of its folder: so one
        # (recipe, seed) has one path, and no seed can be counted twice.
        r = load_result(p)
        if r.key != p.parent.name:
            # the folder's name as the console shows it, not as Python's repr ('s\udcff4': the tenth sweep)
            raise ResultsError(f"{p}: holds results of recipe '{r.key}', not of '{p.parent.name}'; move it")
        if on == "val":
            r = r.on_validation(p)
        by_key.setdefault(r.key, []).append(r)
    for key, runs in by_key.items() if one_configuration else ():
        configs: dict[str, list[int]] = {}
        for r in runs:
            configs.setdefault(config_key(r), []).append(r.seed)
        if len(configs) > 1:
            said = "; ".join(f"{c}: seeds {', '.join(map(str, sorted(seeds)))}" for c, seeds in sorted(configs.items()))
            raise ResultsError(
                f"{Path(results_dir) / key}: holds runs of {len(configs)} configurations ({said}); one folder is "
                "one configuration's population: move the others to a folder of their own"
            )
        # and one recipe's: a population is judged by its recipe's gate, read from one seed, so a seed retrained
        # with another lr or gate would be judged by a rule it never had (the fifth independent sweep)
        mixed = recipes_differ(runs)
        if mixed:
            raise ResultsError(
                f"{Path(results_dir) / key}: {mixed}; one folder is one recipe's population: move one of them to a "
                "folder of its own (train --name KEY)"
            )
    return {k: sorted(by_key[k], key=lambda r: r.seed) for k in sorted(by_key, key=sort_key)}


def load_benchmarks(paths, strict: bool = True) -> tuple[list[dict], dict]:
    """Benchmarks and machine info from pytest-benchmark JSON files. ``strict=False`` skips other JSON files."""
    benches: list[dict] = []
    machine: dict = {}
    for p in paths:
        try:
            d = read_json(p, "pytest-benchmark JSON file")
        except ResultsError:
            if strict:
                raise
            continue
        if not isinstance(d, dict) or "benchmarks" not in d:
            if strict:
                raise ResultsError(f"{p}: not a pytest-benchmark JSON file (no 'benchmarks')")
            continue
        benches += _checked_benchmarks(p, d)
        info = d.get("machine_info", machine)
        if not isinstance(info, dict) or not isinstance(info.get("cpu", {}), dict):
            raise ResultsError(f"{p}: machine_info is not an object; regenerate the file with tox -e bench")
        machine = info
    return benches, machine


def _checked_benchmarks(p, d: dict) -> list[dict]:
    """Every benchmark of a pytest-benchmark file with the fields the report and compare read, typed."""
    benches = d["benchmarks"]
    if not isinstance(benches, list):
        raise ResultsError(f"{p}: 'benchmarks' is not a list; regenerate the file with tox -e bench")
    for i, b in enumerate(benches):
        where = f"{p}: benchmarks[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise ResultsError(f"{where} has no name; regenerate the file with tox -e bench")
        for name in ("stats", "params", "extra_info"):
            if not isinstance(b.get(name) or {}, dict):  # pytest-benchmark writes null for no params
                raise ResultsError(f"{where} ({b['name']}): {name} is not an object; regenerate it with tox -e bench")
        median = (b.get("stats") or {}).get("median")
        # at most a day a call: 10**400 passed "< inf" as an int and overflowed in the report (the fifth sweep)
        if isinstance(median, bool) or not isinstance(median, (int, float)) or not 0 < median <= 86_400:
            raise ResultsError(
                f"{p}: benchmark {b['name']} has no positive median time; regenerate the file with tox -e bench"
            )
        info = b.get("extra_info") or {}
        rounds = (b.get("stats") or {}).get("rounds")
        if info.get("kind") == "train" and not (
            isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 1
        ):
            raise ResultsError(f"{where} ({b['name']}): stats.rounds is {rounds!r}, not a count; regenerate it")
        for name, kind in _BENCH_INFO.get(str(info.get("kind")), {}).items():  # what the report's tables read
            v = info.get(name)
            count = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10**9
            word = isinstance(v, str) and 0 < len(v) <= 60 and v.isprintable() and not set(v) & set("|`<>")
            if not (count if kind == "count" else word if kind == "name" else v is None or count or word):
                want = {"count": "an integer in [1, 10**9]", "name": "a short printable name without | ` < >"}
                raise ResultsError(
                    f"{where} ({b['name']}): extra_info.{name} is {v!r}, not {want.get(kind, 'a count or a name')}; "
                    "regenerate it with tox -e bench"
                )
    return benches


# The extra_info fields the report's benchmark tables read, by kind: checked on reading, so a string batch is no
# crash (exit 3) and a "|" or a newline no broken table (the fourth independent sweep of issue 30)
_BENCH_INFO: dict[str, dict[str, str]] = {
    "train": {"step": "count", "device": "name", "pipeline": "name", "batch": "count"},
    "inference": {"engine": "name", "batch": "count", "threads": "optional"},  # threads: 4, "default" or absent
}


def machine_name(machine: dict) -> str:
    return machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
