"""``bisect``: the first commit between GOOD and BAD whose seed population regresses against GOOD's.

asv's ``find`` takes one sample per commit and warns that it needs a "more-or-less monotonic" metric; an
accuracy that moves by +-0.05 between seeds is neither. Here every tested commit is a population of seeds, and
its verdict against GOOD's population is one of three:

- **bad**: compare's own test (``compare.accuracy_rule``) calls it a regression;
- **good**: "clearly no regression": the same seeds give the same figures to the last bit (the code that
  trains did not change), or the one-sided Welch test shows the drop is *smaller than compare's minimum
  effect* at the same alpha (``stats.welch_within_p``). Failing to find a drop is not enough: a population
  too small to see one would pass as good, and the search would walk past the culprit;
- **inconclusive** otherwise: both populations grow by the initial number of seeds, up to ``max_seeds``, and
  the commit is judged again. Past the cap it is skipped, as ``git bisect skip`` would. Every look is another
  chance of a false verdict, so alpha is spent across the possible looks (Bonferroni: with 5 seeds growing to
  16, four looks at alpha / 4 each).

A commit whose code does not run (an import error, a crash), or that predates this interface (its ``train``
lacks an option the bisect passes), is skipped and named.

Each commit trains in its own ``git worktree`` (detached, in a temporary folder) with its own code on the
current interpreter and environment. A commit's missing seeds go out as one list of jobs, one seed each, to the
executor the command chose (this machine's cores, or one SLURM array), every job with the same thread count,
so that every commit's runs are computed alike and file under one machine. Results go into the store
(``tinymnist.history``), so a second bisect, or ``history show``, reuses them. The worktrees are removed however
the search ends; it never uses ``git bisect``, so no bisect state can be left behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tinymnist import history
from tinymnist.compare import Thresholds, accuracy_rule
from tinymnist.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, UserError
from tinymnist.executors import Ended, Job, JobsInterrupted
from tinymnist.history import Commit, StoreError
from tinymnist.results import RunResult
from tinymnist.shell import fitted
from tinymnist.stats import SeedStats, welch_within_p
from tinymnist.summary import summarize


@dataclass(frozen=True)
class Spec:
    """What to train at every commit, as ``tinymnist train`` arguments."""

    recipe_args: tuple[str, ...]  # ("--step", "2") or ("--recipe", "/abs/file.toml")
    key: str  # the recipe's folder in the results (step2, or the recipe file's name)
    options: tuple[str, ...] = ()  # --epochs 1 --train-subset 2000 ...: passed to every commit's train
    settings: dict = field(default_factory=dict)  # what a stored run must have recorded to be reused
    config: str = ""  # the store's configuration folder of these runs (results.config_folder)


@dataclass(frozen=True)
class Tested:
    """One commit's standing against GOOD."""

    commit: Commit
    verdict: str  # good | bad | skip | reference
    n: int = 0
    stats: SeedStats | None = None
    p: float = math.nan  # compare's test against GOOD (one-sided Welch p)
    drop: float = math.nan  # GOOD's mean minus this commit's
    why: str = ""  # why it was skipped

    def row(self) -> str:
        figure = f"mean {self.stats.mean:.3f} (95% CI {self.stats.ci(3)})" if self.stats else ""
        p = "" if math.isnan(self.p) else f"p {self.p:.2g}"
        what = self.verdict + (f": {self.why}" if self.why else "")
        return f"{self.commit.short}  {fitted(self.commit.subject, 48)}  n={self.n:<3} {figure:34} {p:9} {what}"


class Skip(Exception):
    """A commit that cannot be judged; the message says why."""


class JobsDied(Exception):
    """Jobs died outside the code's control (killed, out of memory, a time limit): no verdict on the commit."""

    def __init__(self, ended: list[Ended]):
        super().__init__("jobs died")
        self.ended = ended


class Interrupted(Exception):
    def __init__(self, code: int):
        super().__init__("interrupted")
        self.code = code


@dataclass(frozen=True)
class Outcome:
    first_bad: Commit | None
    rows: tuple[Tested, ...]
    no_regression: bool = False  # BAD is not shown to regress against GOOD
    undecided: tuple[Commit, ...] = ()  # skipped commits the first bad one could be among


def _seeds_for(seeds: Sequence[int], n: int) -> list[int]:
    """The first ``n`` seeds of the population: the given ones, then the next unused integers above them."""
    out = list(seeds)
    nxt = max(out) + 1
    while len(out) < n:
        if nxt not in out:
            out.append(nxt)
        nxt += 1
    return out[:n]


def _settings_mismatch(run: RunResult, settings: dict) -> str | None:
    for k, v in settings.items():
        if k.startswith("recipe."):
            got = run.recipe.get(k[7:])
        elif k.startswith("identity."):
            got = run.identity.get(k[9:])
        else:
            got = getattr(run, k, None)
        if got != v:
            return f"{k} {got!r}, this bisect trains {v!r}"
    return None


class Bisector:
    def __init__(
        self,
        repo: str | os.PathLike,
        store: str | os.PathLike,
        spec: Spec,
        seeds: Sequence[int],
        max_seeds: int,
        machine: str,
        executor,
        threads: int,
        thresholds: Thresholds | None = None,
        say: Callable[[str], None] = print,
        work_dir: str | os.PathLike | None = None,
    ):
        self.repo, self.store, self.spec = Path(repo), Path(store), spec
        self.seeds, self.max_seeds, self.machine = list(seeds), max_seeds, machine
        self.executor, self.threads = executor, threads
        from tinymnist.threads import thread_env

        # Every job computes with ``threads`` threads, so that what it records (and the machine folder that
        # names) is the machine this bisect looks up.
        self.env = {**os.environ, **thread_env(threads)}
        self.t, self.say = thresholds or Thresholds(), say
        # The worktrees and each commit's results folder: a temporary folder, or one the jobs' nodes can read.
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="tinymnist-bisect-", dir=work_dir))
        self.worktrees: list[Path] = []

    # --- training at a commit -------------------------------------------------------------------------------

    def stored(self, commit: Commit, seeds: Sequence[int]) -> dict[int, RunResult]:
        runs = history.population(self.store, commit.short, self.spec.config, self.machine, self.spec.key)
        out = {}
        for r in runs:
            if r.seed not in seeds:
                continue
            why = _settings_mismatch(r, self.spec.settings)
            if why:
                raise StoreError(
                    f"{self.store}: {r.label} seed {r.seed} at {commit.short} was trained with other settings "
                    f"({why}); bisect into another --store"
                )
            out[r.seed] = r
        return out

    def population(self, commit: Commit, n: int) -> list[RunResult]:
        """The first ``n`` seeds' runs at ``commit``: from the store, training the missing ones there."""
        seeds = _seeds_for(self.seeds, n)
        have = self.stored(commit, seeds)
        missing = [s for s in seeds if s not in have]
        if missing:
            self._train(commit, missing)
            have = self.stored(commit, seeds)
            if any(s not in have for s in missing):
                raise Skip(
                    f"its train wrote no results for seeds {[s for s in missing if s not in have]} on machine "
                    f"{self.machine}"
                )
        from tinymnist.results import recipes_differ

        mixed = recipes_differ(list(have.values()))  # stored runs of another recipe are not this commit's
        if mixed:
            raise StoreError(f"{self.store}: at {commit.short}, {mixed}; bisect into another --store")
        return [have[s] for s in seeds]

    def _train(self, commit: Commit, seeds: list[int]) -> None:
        from tinymnist.results import refuse_links_below

        # before minutes of training: a linked folder where the store files this commit's runs is the user's to
        # remove (exit 2), not a commit to skip after training (the fifth independent sweep)
        refuse_links_below(
            self.store, self.store / commit.short / self.spec.config / self.machine / self.spec.key / "x"
        )
        wt = self.tmp / f"wt-{commit.short}"
        out = self.tmp / f"out-{commit.short}"
        self.worktrees.append(wt)  # before the add: an add cut short is cleaned up too
        try:
            history.git(self.repo, "worktree", "add", "--detach", "--quiet", str(wt), commit.sha)
            code = wt / "src" if (wt / "src" / "tinymnist").is_dir() else wt
            paths = [str(code), *self._in_worktree(self.env.get("PYTHONPATH", ""), wt)]
            env = {**self.env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
            has = self._probe(wt, env)
            jobs = [self._job(commit, wt, env, out, seed, has) for seed in seeds]
            try:
                # a line as each seed ends: a commit's seeds take minutes, and a CI log must not fall silent
                ended = self.executor.run(jobs, self._ended_line)
            except JobsInterrupted as e:
                self._file(out)  # the seeds that finished before the interrupt are kept
                raise Interrupted(EXIT_TERMINATED if e.signal_name == "SIGTERM" else EXIT_INTERRUPTED) from None
            died = [e for e in ended if e.code is None]
            if died:
                self._file(out)
                raise JobsDied(died)
            # 1: a gate failed, and the runs are still this commit's figures; but older code may end a crash
            # with 1 too, so no results at all is a crash whatever the exit code
            if not list(out.glob("*/seed*.json")):
                first = next((e for e in ended if e.code not in (0, 1)), ended[0])
                last = first.why or f"exit code {first.code}"
                raise Skip(f"its code does not run (train exit {first.code}: {last[:160]})")
            ran = self._code_that_ran(out)
            if ran and not all(Path(p).is_relative_to(wt.resolve()) for p in ran):
                raise Skip(f"its runs imported tinymnist from {sorted(ran)[0]}, not from its own tree")
            try:
                history.add(out, self.store)
            except UserError as e:  # results this version cannot read, or that conflict with the store
                raise Skip(f"its results cannot be filed ({str(e)[:200]})") from None
        finally:
            self._remove(wt)
            shutil.rmtree(out, ignore_errors=True)

    def _in_worktree(self, pythonpath: str, wt: Path) -> list[str]:
        """The user's PYTHONPATH for one commit's jobs: a folder inside the checkout (``/repo/models``) becomes the
        same folder of that commit's worktree. Left as it was, every commit imported the model as the checkout
        has it now, and an old commit was filed with today's code (the eleventh independent sweep of issue 30).
        A folder outside the checkout stays: not the commit's code (the README says so)."""
        top = Path(os.path.realpath(history.git(self.repo, "rev-parse", "--show-toplevel").strip()))
        out = []
        for entry in pythonpath.split(os.pathsep):
            real = Path(os.path.realpath(entry)) if entry and os.path.isabs(entry) else None
            out.append(str(wt / real.relative_to(top)) if real is not None and real.is_relative_to(top) else entry)
        return out

    def _job(self, commit: Commit, wt: Path, env: dict, out: Path, seed: int, has: set[str]) -> Job:
        """One seed at ``commit``, by that commit's own ``train``: with this version's job options where its
        train has them (an older one runs its seeds one at a time, in its own process, all the same)."""
        cmd = [sys.executable, "-m", "tinymnist", "train", *self.spec.recipe_args, "--seeds", str(seed)]
        cmd += [*self.spec.options, "--population", "1", "--quiet", "--out", str(out)]
        if "--executor" in has:
            cmd += ["--executor", "inline"]
        if "--threads" in has:
            cmd += ["--threads", str(self.threads)]
        added = {k: env[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
        return Job(
            name=f"{commit.short} {self.spec.key} seed {seed}",
            argv=tuple(cmd),
            cwd=str(wt),
            env=added,
            result=str(out / self.spec.key / f"seed{seed}.json"),
            log=str(out / self.spec.key / f"seed{seed}.log"),
            threads=self.threads,
        )

    def _probe(self, wt: Path, env: dict) -> set[str]:
        """The options of this commit's ``train``; Skip if it has none of ours, does not run, or would not be its
        own code: a tree without tinymnist where the jobs look (src/ or the top level) imports the copy installed
        in this environment, and the old commit would be filed with today's results."""
        found = subprocess.run(
            [sys.executable, "-c", "import os, tinymnist; print(os.path.realpath(tinymnist.__file__))"],
            cwd=wt,
            env=env,
            capture_output=True,
            text=True,
            errors="surrogateescape",  # a worktree path that is not UTF-8 is compared as the bytes it is
        )
        where = found.stdout.strip()
        if found.returncode == 0 and where and not Path(where).is_relative_to(wt.resolve()):
            raise Skip(f"before this interface (no tinymnist package in its tree; {where} would run instead)")
        done = subprocess.run(
            [sys.executable, "-m", "tinymnist", "train", "--help"],
            cwd=wt,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
        )
        if done.returncode != 0:
            err = done.stderr.strip().splitlines() or [""]
            if "No module named tinymnist" in done.stderr or "No module named 'tinymnist'" in done.stderr:
                raise Skip("before this interface (no tinymnist package)")
            raise Skip(f"its code does not run ({err[-1][:160]})")
        flags = [a for a in (*self.spec.recipe_args, *self.spec.options, "--population") if a.startswith("--")]
        lacking = [f for f in flags if f not in done.stdout]
        if lacking:
            raise Skip(f"before this interface (its train has no {', '.join(lacking)})")
        return {f for f in ("--executor", "--threads") if f in done.stdout}

    def _ended_line(self, e) -> None:
        how = "finished" if e.finished else (e.why or f"exit {e.code}")
        self.say(f"  {e.job.name}: {how}")

    @staticmethod
    def _code_that_ran(out: Path) -> set[str]:
        """The tinymnist package folders the results in ``out`` recorded (runs of older code record none)."""
        ran = set()
        for p in out.glob("*/seed*.json"):
            try:
                where = json.loads(p.read_text()).get("extra", {}).get("tinymnist")
            except (OSError, ValueError, AttributeError):
                continue  # history.add names a damaged file
            if isinstance(where, str):
                ran.add(where)
        return ran

    def _file(self, out: Path) -> None:
        if list(out.glob("*/seed*.json")):
            try:
                history.add(out, self.store)
            except UserError:
                pass  # an interrupt is being reported; what cannot be filed is not worth a second error

    def _remove(self, wt: Path) -> None:
        subprocess.run(["git", "-C", str(self.repo), "worktree", "remove", "--force", str(wt)], capture_output=True)
        shutil.rmtree(wt, ignore_errors=True)
        if wt in self.worktrees:
            self.worktrees.remove(wt)

    def close(self) -> None:
        """Remove every worktree and the temporary folder; prune git's record of them."""
        for wt in list(self.worktrees):
            self._remove(wt)
        shutil.rmtree(self.tmp, ignore_errors=True)
        # after the folders are gone: prune drops the records of worktrees whose folder no longer exists
        subprocess.run(["git", "-C", str(self.repo), "worktree", "prune"], capture_output=True)

    # --- judging ------------------------------------------------------------------------------------------

    def looks(self) -> int:
        """How many times a commit can be judged: at the first population, then after each growth."""
        n0 = len(self.seeds)
        return 1 + max(0, math.ceil((self.max_seeds - n0) / n0))

    def reference(self, good: Commit, n: int) -> list[float]:
        try:
            ref = self.population(good, n)
        except Skip as e:
            raise StoreError(f"GOOD {good.short} cannot be trained: {e}") from None
        values = _last_k(ref)
        bad = [r.seed for r, v in zip(ref, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise StoreError(
                f"GOOD {good.short}: seeds {bad} did not finish with finite figures (diverged?); a reference "
                "must be sound: choose another GOOD or other seeds"
            )
        return values

    def judge(self, good: Commit, commit: Commit) -> Tested:
        """``commit`` against GOOD, growing both populations while the test is inconclusive.

        Each look at a growing population is another chance of a false verdict, so alpha is spent across
        the looks (Bonferroni: alpha / looks() per look, for "bad" and for "good" alike)."""
        n = len(self.seeds)
        t = replace(self.t, alpha=self.t.alpha / self.looks())
        while True:
            a = self.reference(good, n)
            try:
                runs = self.population(commit, n)
            except Skip as e:
                return Tested(commit, "skip", why=str(e))
            b = _last_k(runs)
            if not all(math.isfinite(v) for v in b):
                return Tested(commit, "bad", len(b), None, why="a run did not finish with finite figures")
            check = accuracy_rule(a, b, t)
            stats = SeedStats.of(b)
            if check.regression:
                return Tested(commit, "bad", len(b), stats, check.p, check.drop)
            # The same seeds giving the same figures to the last bit is the strongest "no change" there is: a
            # commit that does not touch what trains (docs, tests, another recipe) computes exactly what GOOD
            # did, however noisy the configuration (the test's 1-epoch runs have an SD of 6 points).
            if a == b or welch_within_p(b, a, t.min_effect) < t.alpha:
                return Tested(commit, "good", len(b), stats, check.p, check.drop)
            grown = min(self.max_seeds, n + len(self.seeds))
            if grown == n:
                return Tested(
                    commit, "skip", len(b), stats, check.p, check.drop, why=f"inconclusive at {n} seeds (--max-seeds)"
                )
            self.say(f"{commit.short}  inconclusive at n={n} (p {check.p:.2g}, drop {check.drop:+.3f}): {grown} seeds")
            n = grown

    def run(self, good_rev: str, bad_rev: str) -> Outcome:
        good = _one(self.repo, good_rev)
        bad = _one(self.repo, bad_rev)
        line = history.commits(self.repo, [f"{good.sha}..{bad.sha}"])
        first_parent = history.git(self.repo, "rev-parse", f"{line[0].sha}^").strip() if line else ""
        if not line or line[-1].sha != bad.sha or first_parent != good.sha:
            raise StoreError(
                f"{bad_rev} is not a first-parent descendant of {good_rev}; give GOOD as an ancestor on BAD's "
                "first-parent line"
            )
        rows: list[Tested] = []

        def show(t: Tested) -> Tested:
            rows.append(t)
            self.say(t.row())
            return t

        ref = self.reference(good, len(self.seeds))
        show(Tested(good, "reference", len(ref), SeedStats.of(ref)))
        first = show(self.judge(good, bad))
        if first.verdict != "bad":
            return Outcome(None, tuple(rows), no_regression=True)
        lo, hi = -1, len(line) - 1  # indexes into line: lo is good (-1 = GOOD itself), hi is bad
        skipped: set[int] = set()
        while True:
            open_ = [i for i in range(lo + 1, hi) if i not in skipped]
            if not open_:
                break
            mid = (lo + hi) // 2
            i = min(open_, key=lambda j: (abs(j - mid), j))  # the middle, or the nearest untested commit to it
            t = show(self.judge(good, line[i]))
            if t.verdict == "bad":
                hi = i
            elif t.verdict == "good":
                lo = i
            else:
                skipped.add(i)
        between = tuple(line[i] for i in range(lo + 1, hi) if i in skipped)
        if between:
            return Outcome(None, tuple(rows), undecided=(*between, line[hi]))
        return Outcome(line[hi], tuple(rows))


def _last_k(runs: list[RunResult]) -> list[float]:
    """Each run's last-k mean, as the summary computes it for compare (nan for a run with no epoch)."""
    by_seed = summarize(runs).last_k_by_seed
    return [by_seed.get(r.seed, math.nan) for r in runs]


def _one(repo: Path, rev: str) -> Commit:
    try:
        sha = history.git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except StoreError:
        from tinymnist.shell import shown

        raise StoreError(f"'{shown(rev)}' is not a commit of {repo}; give a sha, tag or branch it holds") from None
    out = history.git(repo, "log", "-1", "--format=%H%x00%cI%x00%s", sha)
    return Commit(*out.strip().split("\0", 2))


__all__ = ["Bisector", "Outcome", "Spec", "Tested", "Skip", "Interrupted", "JobsDied"]
