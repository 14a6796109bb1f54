"""Argument types shared by the commands: each turns bad text into one line argparse prints, exit code 2."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tinymnist.errors import UsageError
from tinymnist.shell import shell_join

MAX_SEEDS = 10_000  # seeds in one command, all ranges together: keep it to what anyone trains
SEED_LIMIT = 2**32  # torch's CPU generator keeps 32 bits of a seed: 2**32 would replay seed 0
MAX_THREADS = 1024


def positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    return value


def threads(text: str) -> int:
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{value} threads: at most {MAX_THREADS}")
    return value


def cpus(text: str) -> int:
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{value} CPUs per job: at most {MAX_THREADS}")
    return value


def seed(text: str) -> int:
    value = integer(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"seed {value} is outside [0, 2**32): larger seeds would alias smaller ones; choose a seed in 0-4294967295"
        )
    return value


def seeds(text: str) -> list[int] | range:
    """``7`` or a range ``0-31`` (both ends included)."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo:
        return [seed(text)]
    if not hi:
        raise argparse.ArgumentTypeError(f"seed range {text!r}: write it as START-END, e.g. 0-31")
    a, b = seed(lo), seed(hi)
    if b < a:
        raise argparse.ArgumentTypeError(f"seed range {text}: the end is below the start")
    if b - a >= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"seed range {text}: {b - a + 1:,} seeds; at most {MAX_SEEDS:,} in one run")
    return range(a, b + 1)


def seed_list(groups) -> list[int]:
    """The union of ``--seeds`` groups in the order given; the cap counts every range together."""
    seen: dict[int, None] = {}
    for g in groups:
        for s in g:
            seen.setdefault(s, None)
            if len(seen) > MAX_SEEDS:
                raise UsageError(f"--seeds: more than {MAX_SEEDS:,} seeds in all; train at most {MAX_SEEDS:,} at once")
    return list(seen)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return value


def step(text: str) -> int:
    from tinymnist.recipes import RECIPES

    value = integer(text)
    if value not in RECIPES:
        raise argparse.ArgumentTypeError(f"unknown step {value}; known steps: {', '.join(map(str, sorted(RECIPES)))}")
    return value


def recipe_key(text: str) -> str:
    """A recipe as ``--steps`` names it: a step number (``4``) or a recipe's name (``step4``, ``sep4k``)."""
    return f"step{text}" if text.isdigit() else text


def folder_name(text: str) -> str:
    """A recipe key, which names its results folder: letters, digits, '.', '_' and '-', at most 64."""
    from tinymnist.recipes import NAME_PATTERN

    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a folder name of letters, digits, '.', '_' and '-' (at most 64, not starting with . _ -)"
        )
    if re.fullmatch(r"step\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is a built-in step's name; choose another, e.g. {text}.mine")
    return text


def shard(text: str) -> tuple[int, int]:
    """``K/N``: the K-th (1-based) of N shards, as pytest-split's ``--group K --splits N``."""
    k, sep, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not sep or nn < 1 or not 1 <= kk <= nn or nn > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r}: write K/N with 1 <= K <= N, e.g. 2/4 for the second of four")
    return kk, nn


def writable_dir(text: str) -> Path:
    """Create the folder now and prove it writable, so a bad --out fails before minutes of training. argparse
    names the option (--out, --store) in front of the message, so the message names none."""
    try:
        return writable_dir_for("folder", text)  # argparse names the option itself
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def writable_dir_for(what: str, text: str) -> Path:
    """``text`` as a folder that exists and can be written, made if need be; else a UsageError whose fix says
    "choose another ``what``" (an option's name, such as ``--slurm-folder``, or just "folder")."""
    import tempfile

    path = Path(text)
    new = [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        MADE.extend(new)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{text}: cannot create or write this folder ({e.strerror}); choose another {what}") from None
    return path


# Folders this process made while reading its command line, deepest first. A command refused for its usage
# (`train --out z --step 99`, an option given twice) left an empty --out behind (the eighth independent sweep of
# issue 30): ``remove_empty_made`` takes back those still empty; one holding anything is kept.
MADE: list[Path] = []


def remove_empty_made() -> None:
    import os

    while MADE:
        try:
            os.rmdir(MADE.pop(0))
        except OSError:  # not empty (a result, a log), or gone: kept as it is
            pass


def val_split(text: str) -> int:
    from tinymnist.results import MAX_VAL_SPLIT  # one place: results files are checked against it too

    value = integer(text)
    if not 0 <= value <= MAX_VAL_SPLIT:
        raise argparse.ArgumentTypeError(
            f"{value}: hold out between 1 and {MAX_VAL_SPLIT:,} training images (0, the default, holds out none)"
        )
    return value


def add_val_split(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--val-split",
        type=val_split,
        default=0,
        metavar="N",
        help="hold N training images out as a validation set (stratified, the same N images for every seed, "
        "recipe and machine) and report validation loss and accuracy beside test (default 0: none)",
    )


def add_rule(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rule",
        choices=["seeds", "population"],
        default="seeds",
        help="how a step's accuracy is judged: seeds (default), every seed meets its gate; population, at least "
        "8 seeds judged together by the rule measured for it (README: Population verdicts)",
    )


def add_judged_on(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on",
        choices=["test", "val"],
        default="test",
        help="judge on the test set (default) or on the validation split the runs held out (--val-split)",
    )


def writable_file(text: str) -> str:
    """A file a command will write when it is done (JUnit XML, a job summary): its folder is created and
    proved writable now, so that a bad path fails before minutes of training, not after them."""
    import os

    from tinymnist.results import OutputError, dangling_link, refuse_run_records

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file path")
    try:
        refuse_run_records(path)
    except OutputError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e.strerror}; give another file name") from None
    if dangling_link(path):
        raise argparse.ArgumentTypeError(f"{text}: {dangling_link(path)}; give a file path, or a link to a file")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f"{text}: cannot create its folder ({e.strerror}); choose another path"
        ) from None
    if path.exists() and not path.is_file():  # a FIFO or a device would hang or swallow the write
        raise argparse.ArgumentTypeError(f"{text}: is not a regular file; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write here (permission denied); choose another path")
    import tempfile

    try:  # the temporary the atomic write will make beside it, with as long a name
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot write here ({e.strerror}); choose another path") from None
    return text


def add_welch(p: argparse.ArgumentParser, min_effect_help: str) -> None:
    """compare's test, as compare, calibrate and bisect take it. The defaults are ``compare.Thresholds``' own
    (read by ``thresholds``): the help names them, the parser keeps None for "not given"."""
    p.add_argument("--alpha", type=fraction, help="compare's test: one-sided Welch t-test alpha (0.01)")
    p.add_argument("--min-effect", type=non_negative, help=min_effect_help)


def thresholds(args, **given):
    """``compare.Thresholds`` from ``add_welch``'s arguments and ``given`` ones; what was not given keeps the
    default."""
    from tinymnist.compare import Thresholds

    values = {"alpha": args.alpha, "min_effect": args.min_effect, **given}
    return Thresholds(**{k: v for k, v in values.items() if v is not None})


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")


def command_line(argv: list[str]) -> str:
    """``tinymnist ARGV...``, shell-quoted: what a generated file says made it ("Generated by ..."), to paste
    back. One form for every command's output."""
    return shell_join(["tinymnist", *argv])


def same_command(argv: list[str]) -> str:
    """The command that was run, shell-quoted, by the interpreter that ran it (a bare `python` may be another
    one, without tinymnist): what `bisect` and `sweep` print to continue, for they keep what finished."""
    import sys

    return shell_join([sys.executable, "-m", "tinymnist", *argv])


def resume_command(argv: list[str]) -> str:
    """The command that was run, plus --resume: the same training, continued."""
    return same_command([*argv, *([] if "--resume" in argv else ["--resume"])])


def list_plugins(command: str, broken_is: str, plugins: dict, line, blanks: str) -> int:
    """``models`` and ``recipes``: each installed plugin on its own line (``line(name, entry_point)``). A broken
    one is named on its line with its error, the others still list, and the command then fails (exit 2) naming
    every broken one, e.g. "plugin model(s) that cannot be built"."""
    import sys

    from tinymnist.errors import EXIT_OK, EXIT_USAGE, UserError

    broken = []
    for name, ep in sorted(plugins.items()):
        try:
            print(line(name, ep))
        except UserError as e:  # a plugin that cannot load, or whose model cannot be built
            print(f"{name:16s} {blanks}  plugin {ep.value}: {e}")
            broken.append(f"{name} ({ep.value})")
    if not broken:
        return EXIT_OK
    print(
        f"tinymnist {command}: error: {broken_is}: {', '.join(broken)}; fix or uninstall the package that "
        "provides them",
        file=sys.stderr,
    )
    return EXIT_USAGE


def appendable_file(text: str) -> str:
    """``writable_file``, for a file appended to (``--markdown``, a job summary): a hard link there is refused,
    since appending through it changes the file of its other names (the eighth independent sweep of issue 30:
    a hard link to a run's record got a markdown table appended, and the record no longer parsed)."""
    from tinymnist.results import OutputError, refuse_hard_link

    writable_file(text)
    try:
        refuse_hard_link(text)
    except OutputError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e.strerror}") from None
    return text


def distinct_outputs(args) -> None:
    """``--junit-xml`` and ``--markdown`` naming one file gave XML with markdown appended, which no parser reads,
    and exit 0 (the seventh independent sweep of issue 30): each output is its own file."""
    import os

    from tinymnist.errors import UsageError

    junit, markdown = getattr(args, "junit_xml", None), getattr(args, "markdown", None)
    if junit and markdown and os.path.realpath(junit) == os.path.realpath(markdown):
        raise UsageError(f"--junit-xml {junit} and --markdown {markdown} are one file; give each output its own")
