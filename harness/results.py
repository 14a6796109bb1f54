"""Versioned JSON results and atomic file writes (temporary file in the same folder, fsync, rename)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.recipes import Recipe

SCHEMA_VERSION = 2
# Schema 1 (reports/baseline/) lacks `identity` and `population`; it stays readable, with their defaults.
READABLE_SCHEMAS = (1, 2)


TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000  # MNIST's full sets: fewer means a smoke run


class ResultsError(ValueError):
    """A results file that cannot be read; the message names it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one.

    The temporary name is unique per writer, so two processes writing into one folder cannot collide.
    """
    _write_files([(path, data)])


def atomic_write_pair(items: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write several files as one (a result and its weights): a signal or a full disk never leaves a new file
    beside an old one."""
    _write_files(items)


def _write_files(items: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Every temporary is written and synced first (beside its target, so the rename is atomic), then all are
    renamed in a row with SIGINT and SIGTERM held back; a failure before the renames changes nothing."""
    import signal

    staged: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
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
            for tmp, path in staged:
                os.replace(tmp, path)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


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
        raise ResultsError(f"{path}: damaged ({type(e).__name__}: {str(e).splitlines()[0][:100]}); {fix}") from None
    if not isinstance(state, dict):
        raise ResultsError(f"{path}: not a tinymnist file (holds a {type(state).__name__}); {fix}")
    return state


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, timeout=5).stdout.strip()


@functools.cache
def git_sha() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes), read once per process: the code that
    started the run, even if the checkout moves on while it trains (forked workers inherit it)."""
    try:
        sha = _git("rev-parse", "--short=12", "HEAD")
        if not sha:
            return "unknown"
        return sha + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
    identity: dict = field(default_factory=dict)  # what makes two runs the same run (see harness.runner)
    population: int = 1  # how many seeds trained together with this one

    @property
    def test_acc(self) -> list[float]:
        return [e.test_acc for e in self.epochs]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        if not isinstance(d, dict) or d.get("schema_version") not in READABLE_SCHEMAS:
            got = d.get("schema_version") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"results schema {got!r}, this harness reads {', '.join(map(str, READABLE_SCHEMAS))}")
        d = dict(d)
        d["epochs"] = [EpochStats(**e) for e in d["epochs"]]
        for e in d["epochs"]:
            for name, value in asdict(e).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"epoch {e.epoch}: {name} is {value!r}, not a number")
        return cls(**d)


def result_path(out_dir: str | os.PathLike, step: int, seed: int, suffix: str = ".json") -> Path:
    return Path(out_dir) / f"step{step}" / f"seed{seed}{suffix}"


def save_result(out_dir: str | os.PathLike, result: RunResult) -> Path:
    path = result_path(out_dir, result.step, result.seed)
    atomic_write_json(path, result.to_dict())
    return path


def load_result(path: str | os.PathLike) -> RunResult:
    try:
        result = RunResult.from_dict(json.loads(Path(path).read_text()))
        Recipe.from_dict(result.recipe)  # a recipe this harness cannot read is a bad file, found here
        return result
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultsError(
            f"{path}: not a tinymnist results file ({type(e).__name__}: {e}); "
            "regenerate it with python -m harness train"
        ) from None


def load_results(results_dir: str | os.PathLike) -> dict[int, list[RunResult]]:
    """Every ``step*/seed*.json`` under a folder, grouped by step, sorted by seed."""
    by_step: dict[int, list[RunResult]] = {}
    for p in sorted(Path(results_dir).glob("step*/seed*.json")):
        r = load_result(p)
        by_step.setdefault(r.step, []).append(r)
    return {s: sorted(rs, key=lambda r: r.seed) for s, rs in sorted(by_step.items())}


def load_benchmarks(paths, strict: bool = True) -> tuple[list[dict], dict]:
    """Benchmarks and machine info from pytest-benchmark JSON files. ``strict=False`` skips other JSON files."""
    benches: list[dict] = []
    machine: dict = {}
    for p in paths:
        try:
            d = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            if strict:
                raise ValueError(f"{p}: not readable as JSON ({e})") from None
            continue
        if not isinstance(d, dict) or "benchmarks" not in d:
            if strict:
                raise ValueError(f"{p}: not a pytest-benchmark JSON file (no 'benchmarks')")
            continue
        for b in d["benchmarks"]:
            median = b.get("stats", {}).get("median") if isinstance(b, dict) else None
            if isinstance(median, bool) or not isinstance(median, (int, float)) or not 0 < median < float("inf"):
                raise ResultsError(
                    f"{p}: benchmark {b.get('name') if isinstance(b, dict) else b!r} has no positive "
                    "median time; regenerate the file with tox -e bench"
                )
        benches += d["benchmarks"]
        machine = d.get("machine_info", machine)
    return benches, machine


def machine_name(machine: dict) -> str:
    return machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
