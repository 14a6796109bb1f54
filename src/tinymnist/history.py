"""The results store: runs filed by commit and machine, and the accuracy history across commits.

Layout: ``STORE/<commit>/<configuration>/<machine>/<recipe key>/seed<S>.json``. Each
``STORE/<commit>/<configuration>/<machine>/`` folder is a plain results folder, so ``report`` and ``compare``
read it as it is. ``<commit>`` is the 12-digit sha the run recorded (``git_sha``); ``<configuration>`` is what
the run trained on (epochs, training, test and validation images: a smoke bisect and a nightly of one commit
are two experiments, issue 30 cause 12); ``<machine>`` is the device, its model and the thread count.

Accuracy is one population across machines (a nightly's seeds come from runners with different CPUs, issue 30
cause 11), as ``compare`` treats it; throughput is per machine. Stores written before configurations were part
of the layout (``STORE/<commit>/<machine>/...``) are read as they are, each run under its own configuration.

Adding is all or none: every run is checked against what the store holds before anything is written, and
each file is written atomically. The same run added twice is a no-op; a different run under the same commit,
machine, recipe and seed is refused, naming the field.

Nothing here prints or parses arguments (``tinymnist.commands.history`` does), and nothing here computes a
statistic: the test between commits is ``tinymnist.compare.accuracy_rule``, the figures ``tinymnist.stats``'.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tinymnist.compare import MIN_SEEDS_FOR_TEST, AccuracyCheck, Thresholds, accuracy_rule
from tinymnist.errors import UserError
from tinymnist.recipes import sort_key
from tinymnist.results import RunResult, config_key, load_results
from tinymnist.shell import console, shown
from tinymnist.summary import StepSummary, summarize

SHA = re.compile(r"[0-9a-f]{12}")  # results.git_sha's form: every lookup is by these 12 digits
SEED_FILE = re.compile(r"seed\d+\.json")  # load_results' own pattern: the store lists what it can read


class StoreError(UserError):
    """A run the store refuses, or a store or repository it cannot read; the message names it."""


def machine_key(run: RunResult) -> str:
    """``cpu-AMD_EPYC_9B14-1t``: the folder of one machine's runs."""
    return machine_folder(run.device, run.device_name, run.threads)


def machine_folder(device: str, device_name: str, threads: int) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", device_name).strip("_") or "unknown"
    return f"{device}-{name[:60]}-{threads}t"


def _comparable(d: dict) -> dict:
    # What two files of one run may differ in without being two runs: nothing but the wall clock.
    return {k: v for k, v in d.items() if k not in ("wall_seconds", "epochs")} | {
        "epochs": [
            {k: v for k, v in e.items() if k not in ("seconds", "eval_seconds", "images_per_second")}
            for e in d.get("epochs", [])
        ]
    }


def _first_difference(old: RunResult, new: RunResult) -> str:
    from tinymnist.runner import identity_mismatch

    why = identity_mismatch(old.identity, new.identity) if old.identity and new.identity else None
    if why:
        return why
    why = identity_mismatch({"recipe": old.recipe}, {"recipe": new.recipe})  # names the recipe's fields
    if why:
        return why
    a, b = _comparable(old.to_dict()), _comparable(new.to_dict())
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return f"{k} differs"
    return ""


@dataclass(frozen=True)
class Added:
    new: tuple[Path, ...]
    unchanged: tuple[Path, ...]
    skipped: tuple[str, ...]  # runs that cannot be filed (unfinished), said in words


def add(results_dir: str | os.PathLike, store: str | os.PathLike) -> Added:
    """File every finished run of ``results_dir`` under ``store``; all or none (see the module's notes)."""
    runs = load_results(results_dir)
    if not runs:
        raise StoreError(f"{results_dir}: no <recipe>/seed*.json results to add")
    plan: list[tuple[Path, RunResult]] = []
    unchanged: list[Path] = []
    skipped: list[str] = []
    for key, rs in runs.items():
        for r in rs:
            if r.in_progress:
                skipped.append(f"{r.label} seed {r.seed}: interrupted, not a finished run")
                continue
            if not SHA.fullmatch(r.git_sha):
                raise StoreError(
                    f"{results_dir}/{key}/seed{r.seed}.json: recorded commit {r.git_sha!r}, not a commit "
                    "(trained outside a git checkout, or with uncommitted changes); commit and train again"
                )
            dest = Path(store) / r.git_sha / config_key(r) / machine_key(r) / key / f"seed{r.seed}.json"
            legacy = Path(store) / r.git_sha / machine_key(r) / key / f"seed{r.seed}.json"
            if not dest.exists() and legacy.exists() and _config_of(legacy) == config_key(r):
                dest = legacy  # an older store's copy of this configuration: compared, never filed twice
            if dest.exists():
                from tinymnist.results import load_result

                old = load_result(dest)
                why = _first_difference(old, r)
                if why:
                    raise StoreError(
                        f"{results_dir}/{key}/seed{r.seed}.json: the store already holds another run of "
                        f"{r.label} seed {r.seed} for commit {r.git_sha} in this configuration on this machine "
                        f"({why}), in {dest}; "
                        "nothing was added. Add it to another store, or remove the stored one"
                    )
                unchanged.append(dest)
                continue
            plan.append((dest, r))
    if plan:  # with what the store holds of each population, across machines: one recipe, or nothing is added
        held = stored(store) if Path(store).is_dir() else {}
        groups: dict[tuple[str, str, str], list[RunResult]] = {}
        for _, run in plan:
            groups.setdefault((run.git_sha, config_key(run), run.key), []).append(run)
        for (commit, config, key), adding in groups.items():
            held_runs = [o for runs in held.get((commit, config, key), {}).values() for o in runs]
            _one_recipe(
                held_runs + adding, f"{results_dir}/{key}: nothing was added; with the store's runs of commit {commit}"
            )
    from tinymnist.results import atomic_write_pair, json_bytes, refuse_links_below

    for dest, _ in plan:  # a linked <commit> or configuration folder would file the run outside the store
        refuse_links_below(store, dest)
    try:  # all or none: staged and synced first, then renamed together (a full disk changes nothing)
        atomic_write_pair([(dest, json_bytes(r.to_dict())) for dest, r in plan])
    except OSError as e:
        raise StoreError(f"{store}: cannot write the store ({e.strerror}); nothing was added") from None
    return Added(tuple(d for d, _ in plan), tuple(unchanged), tuple(skipped))


def _config_of(path: Path) -> str:
    from tinymnist.results import load_result

    return config_key(load_result(path))


def stored(store: str | os.PathLike) -> dict[tuple[str, str, str], dict[str, list[RunResult]]]:
    """{(commit, configuration, recipe key): {machine: runs}} of everything in the store, both layouts."""
    root = Path(store)
    out: dict[tuple[str, str, str], dict[str, list[RunResult]]] = {}
    folders = {p.parent.parent for p in root.glob("*/*/*/*/seed*.json") if SEED_FILE.fullmatch(p.name)}
    legacy = {p.parent.parent for p in root.glob("*/*/*/seed*.json") if SEED_FILE.fullmatch(p.name)}
    for folder in sorted(folders | legacy):
        rel = folder.relative_to(root).parts
        if not SHA.fullmatch(rel[0]):  # not a commit's folder (a bisect's worktrees in .work/)
            continue
        for key, runs in load_results(folder, one_configuration=False).items():
            for r in runs:
                # a folder renamed or moved by hand: the file says whose run it is, of what configuration, on
                # which machine (a dry run filed before the key had "-bN" sits under the full configuration's)
                config = config_key(r)
                older = re.sub(r"-b\d+$", "", config)  # the key before "-bN"
                filed = {"commit": (rel[0], r.git_sha[:12]), "machine": (rel[-1], machine_key(r))}
                if len(rel) == 3:
                    filed["configuration"] = (rel[1], rel[1] if rel[1] in (config, older) else config)
                for what, (folder_says, run_says) in filed.items():
                    if folder_says != run_says:
                        raise StoreError(
                            f"{folder / key}/seed{r.seed}.json: a run of {what} {run_says}, filed under "
                            f"{folder_says}; move it back, or remove it and add the run again with history add"
                        )
                # the run's own configuration, not its folder's: dry runs filed before the key had "-bN" sit
                # in the folder of the full configuration (the review of issue 30's third-sweep fixes)
                out.setdefault((rel[0], config_key(r), key), {}).setdefault(rel[-1], []).append(r)
    for (commit, config, key), by_machine in out.items():
        _one_recipe([r for runs in by_machine.values() for r in runs], f"{root / commit}: {key} in {config}")
    return out


def _one_recipe(runs: Sequence[RunResult], where: str) -> None:
    """One commit's population of a recipe and configuration, across machines, is of one recipe: runs of another
    (``--set lr=0.5`` under the same key) would be one row's seeds, and a bisect's (the sixth independent sweep
    of issue 30)."""
    from tinymnist.results import recipes_differ

    mixed = recipes_differ(runs)
    if mixed:
        raise StoreError(
            f"{where}: {mixed}; a commit's population is one recipe's: file an experiment under its own key "
            "(train --name KEY), and remove the stray runs from the store"
        )


def population(store: str | os.PathLike, commit: str, config: str, machine: str, key: str) -> list[RunResult]:
    """The stored runs of one recipe at one commit in one configuration on one machine (``commit`` may be
    longer than the folder's 12 digits)."""
    runs = []
    at = Path(store) / commit[:12]
    # every configuration folder of the commit, and the older layout: each run is held to its own configuration
    for folder in sorted({*at.glob(f"*/{glob.escape(machine)}"), at / machine}):
        if folder.is_dir():
            runs += [r for r in load_results(folder, one_configuration=False).get(key, []) if config_key(r) == config]
    return runs


def one_population(by_machine: dict[str, list[RunResult]]) -> tuple[list[RunResult], list[str]]:
    """Every machine's runs of one recipe, commit and configuration as one population; a seed run on two
    machines counts once (the first machine's, in name order), and each such seed is said."""
    runs: dict[int, RunResult] = {}
    twice = []
    for machine in sorted(by_machine):
        for r in by_machine[machine]:
            if r.seed in runs:
                twice.append(f"seed {r.seed} also on {machine}")
                continue
            runs[r.seed] = r
    return [runs[s] for s in sorted(runs)], twice


# --- git ----------------------------------------------------------------------------------------------------


def git(repo: str | os.PathLike, *args: str) -> str:
    try:
        # Old commits may hold Latin-1 subjects with no encoding header (issue 30, cause 5): each byte that is not
        # UTF-8 is kept as a surrogate escape, so tinymnist.shell.shown prints it as its bytes ("caf\xe9"), not as
        # U+FFFD, which says nothing of what it was (the fourth independent sweep)
        # U+FFFD, which says nothing of what it was (the fourth independent sweep). Bytes, decoded here: text
        # mode would turn a "\r" in a subject into a line break (the eighth sweep)
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise StoreError(f"git {' '.join(args)}: {e}; is git installed?") from None
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[0]
        raise StoreError(f"{repo}: git {' '.join(args)}: {console(first)}")
    return done.stdout.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Commit:
    sha: str  # full
    date: str  # committer date, ISO 8601
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:12]


def commits(repo: str | os.PathLike, rev_range: Sequence[str]) -> list[Commit]:
    """Commits of ``git rev-list --first-parent --reverse`` over ``rev_range``: oldest first."""
    out = git(repo, "log", "--first-parent", "--reverse", "--format=%H%x00%cI%x00%s", *rev_range, "--")
    # split on git's "\n" only: a subject can hold "\r", "\x1c" or U+2028, which str.splitlines also splits on
    # (the eighth independent sweep of issue 30: exit 3 in history show and bisect); %s never holds a "\n"
    return [Commit(*line.split("\0", 2)) for line in out.split("\n") if line]


# --- history ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One commit of one recipe's history in one configuration: accuracy over every machine's seeds."""

    commit: Commit
    summary: StepSummary | None  # None: no runs stored for it
    versus_previous: AccuracyCheck | None  # compare's test against the previous tested commit
    tested: bool  # False when either side has too few seeds for the test
    # mean training images/s and seeds, per machine: throughput is only comparable on one machine
    throughput: tuple[tuple[str, float, int], ...] = ()
    notes: tuple[str, ...] = ()  # seeds run on more than one machine (counted once)
    recipe_change: tuple[str, ...] = ()  # how its recipe differs from the previous point's ("lr 0.05 -> 0.5")

    @property
    def n(self) -> int:
        return self.summary.last_k.n if self.summary and self.summary.last_k else 0

    @property
    def regression(self) -> bool:
        return self.tested and self.versus_previous is not None and self.versus_previous.regression


@dataclass(frozen=True)
class Series:
    key: str
    config: str
    points: tuple[Point, ...]

    @property
    def regressions(self) -> list[Point]:
        return [p for p in self.points if p.regression]

    @property
    def machines(self) -> list[str]:
        return sorted({m for p in self.points for m, _, _ in p.throughput})


def _throughput(by_machine: dict[str, list[RunResult]]) -> tuple[tuple[str, float, int], ...]:
    out = []
    for machine in sorted(by_machine):
        ips = summarize(by_machine[machine]).images_per_second
        out.append((machine, ips.mean if ips else math.nan, len(by_machine[machine])))
    return tuple(out)


def history(
    store: str | os.PathLike,
    repo: str | os.PathLike,
    keys: Sequence[str] | None = None,
    t: Thresholds | None = None,
    rule: str = "seeds",
) -> list[Series]:
    """Every (recipe, configuration) in the store over the first-parent history of ``repo``'s HEAD, oldest
    first; each commit's population (all machines) tested against the previous commit that has runs. Stored
    commits that are not on that line (a side branch) are left out, and said so by ``off_line``."""
    t = t or Thresholds()
    held = stored(store)
    if not held:
        raise StoreError(f"{store}: the store holds no runs; add some with tinymnist history add")
    line = commits(repo, ["HEAD"])
    pairs = sorted({(key, config) for _, config, key in held}, key=lambda p: (sort_key(p[0]), p[1]))
    series = []
    for key, config in pairs:
        if keys and key not in keys:
            continue
        points: list[Point] = []
        previous: list[float] | None = None
        for c in line:
            by_machine = held.get((c.short, config, key))
            if not by_machine:
                continue
            runs, twice = one_population(by_machine)
            sm = summarize(runs, rule=rule)
            values = list(sm.last_k_by_seed.values())
            check, tested = None, False
            if previous is not None and values:
                check = accuracy_rule(previous, values, t)
                tested = min(len(previous), len(values)) >= MIN_SEEDS_FOR_TEST
            # A commit may change a recipe (what a bisect hunts), and a run with --set does too: said, never silent.
            change = tuple(points[-1].summary.recipe.diff(sm.recipe)) if points and points[-1].summary else ()
            points.append(Point(c, sm, check, tested, _throughput(by_machine), tuple(twice), change))
            if values:
                previous = values
        if points:
            series.append(Series(key, config, tuple(points)))
    return series


def off_line(store: str | os.PathLike, repo: str | os.PathLike) -> list[str]:
    """Stored commits that are not on the first-parent line of ``repo``'s HEAD."""
    line = {c.short for c in commits(repo, ["HEAD"])}
    return sorted({c for c, _, _ in stored(store)} - line)


def to_json(series: Sequence[Series]) -> str:
    """The history as data (HISTORY.json beside HISTORY.md): what the table and plots show, for other tools."""
    out = []
    for s in series:
        rows = []
        for p in s.points:
            lk = p.summary.last_k if p.summary else None
            rows.append(
                {
                    "commit": p.commit.sha,
                    "date": p.commit.date,
                    "subject": shown(p.commit.subject),  # a Latin-1 byte as \xe9, never a lone surrogate
                    "n": p.n,
                    "last_k_mean": lk.mean if lk else None,
                    "ci": [lk.ci_low, lk.ci_high] if lk else None,
                    # a smoke run's gate is not judged: no pass rate, as HISTORY.md says "not judged"
                    "pass_rate": (
                        [p.summary.pass_rate.k, p.summary.pass_rate.n]
                        if p.summary and not p.summary.verdict.smoke
                        else None
                    ),
                    "judged": bool(p.summary and not p.summary.verdict.smoke),
                    # per machine: never one mean over CPUs of different speeds
                    "images_per_second": {m: v for m, v, _ in p.throughput},
                    "seeds_per_machine": {m: k for m, _, k in p.throughput},
                    "p": None if p.versus_previous is None or math.isnan(p.versus_previous.p) else p.versus_previous.p,
                    "tested": p.tested,
                    "regression": p.regression,
                    "recipe_change": list(p.recipe_change),
                }
            )
        out.append({"recipe": s.key, "configuration": s.config, "machines": s.machines, "commits": rows})
    return json.dumps({"schema_version": 2, "series": _finite(out)}, indent=1, allow_nan=False, default=str)


def _finite(obj):
    """NaN and infinities as null: one seed has no interval, a diverged seed no mean; JSON has neither."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
