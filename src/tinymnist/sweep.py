"""Sweeps: candidate recipes x a seed population, ranked on the validation split only.

A candidate is a base recipe with ``--set`` changes (a variant, or one point of a grid), or a recipe file. Each
trains into its own folder ``OUT/<candidate key>/`` through the runner, so a sweep is resumable the way a
``train --resume`` is. The ranking reads only validation figures (``RunResult.on_validation``): the test set
takes no part in choosing, so a claim made later on fresh seeds is not inflated by the choice (issue 21: the
old step 5 and 6 recipes, chosen on the gate's own test accuracy, lost 0.07-0.09 points on fresh seeds).

Nothing here trains or prints; ``tinymnist.commands.sweep`` does both. The statistics are ``tinymnist.stats``'
and the test between candidates is ``tinymnist.compare.accuracy_rule``, compare's own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tinymnist.compare import MIN_SEEDS_FOR_TEST, AccuracyCheck, Thresholds, accuracy_rule
from tinymnist.recipes import NAME_PATTERN, Recipe, RecipeError, validate, with_overrides
from tinymnist.results import RunResult
from tinymnist.shell import code_span, table_row
from tinymnist.stats import Rate, SeedStats
from tinymnist.summary import summarize


@dataclass(frozen=True)
class Candidate:
    recipe: Recipe
    changes: tuple[str, ...]  # the --set items that make it, or ("recipe file NAME",); () for the base

    @property
    def key(self) -> str:
        return self.recipe.key

    @property
    def said(self) -> str:
        return ", ".join(self.changes) if self.changes else "(the base recipe)"


def candidate_key(base: Recipe, changes: Sequence[str]) -> str:
    """A folder name for ``base`` with ``changes``: readable where it can be (``step5.batch_size-32``), and
    the same for the same changes on every run, so that a rerun of a sweep resumes into the same folders. A
    short hash of the changes keeps two candidates apart when the readable name would lose a character."""
    if not changes:
        return base.key
    slug = ".".join(c.replace("=", "-", 1) for c in changes)
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", slug)
    name = f"{base.key}.{clean}"
    if clean != slug or len(name) > 64:
        digest = hashlib.sha256(json.dumps(list(changes)).encode()).hexdigest()[:8]
        name = f"{name[: 64 - 9]}-{digest}"
    return name


def grid_points(grid: Sequence[str]) -> list[list[str]]:
    """``["lr=0.05,0.1", "batch_size=32,64"]`` -> every combination, as --set items. A value holding a comma
    (a JSON list or object) goes in a variant instead."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        parts = [v for v in values.split(",") if v]
        if not sep or not key or not parts:
            raise RecipeError(f"--grid {item}: expected KEY=V1,V2,... e.g. --grid lr=0.05,0.1")
        axes.append([f"{key}={v}" for v in parts])
    return [list(p) for p in itertools.product(*axes)] if axes else []


def parse_variant(text: str) -> tuple[str | None, list[str]]:
    """``"anchor: model=blocks lr=0.1"`` -> ("anchor", ["model=blocks", "lr=0.1"]); the name is optional and
    names the candidate's folder (``step5.anchor``)."""
    head, sep, rest = text.partition(": ")
    if sep and "=" not in head and head.strip():
        if not NAME_PATTERN.fullmatch(head.strip()):
            raise RecipeError(f"--variant {text!r}: the name {head!r} must be a folder name (letters, digits, ._-)")
        return head.strip(), rest.split()
    return None, text.split()


def candidates(
    base: Recipe, variants: Sequence[Sequence[str] | str], grid: Sequence[str], files: Sequence[Recipe]
) -> list[Candidate]:
    """The base recipe, then each variant (``--set`` items, or ``parse_variant``'s text), each grid point and
    each recipe file, validated; a candidate that repeats another (the same recipe) is refused, naming both."""
    out = [Candidate(validate(base), ())]
    named = [parse_variant(v) if isinstance(v, str) else (None, list(v)) for v in variants]
    for name, changes in [*named, *[(None, p) for p in grid_points(grid)]]:
        if not changes:
            raise RecipeError("--variant with no changes; give KEY=VALUE items, e.g. --variant 'lr=0.05 batch_size=32'")
        recipe = with_overrides(base, changes)
        key = f"{base.key}.{name}" if name else candidate_key(base, changes)
        out.append(Candidate(validate(_rekey(recipe, key)), tuple(changes)))
    out += [Candidate(validate(r), (f"recipe file {r.key}",)) for r in files]
    seen: dict[str, Candidate] = {}
    for c in out:
        same = json.dumps({**c.recipe.to_dict(), "key": "", "name": ""}, sort_keys=True)
        if same in seen:
            raise RecipeError(f"candidates {seen[same].said} and {c.said} are one recipe; give each once")
        if c.key in {s.key for s in seen.values()}:
            raise RecipeError(f"two candidates would share the folder {c.key}; rename one recipe file")
        seen[same] = c
    return out


def _rekey(recipe: Recipe, key: str) -> Recipe:
    from dataclasses import replace

    if not NAME_PATTERN.fullmatch(key):  # cannot happen for candidate_key's names; kept as the folder's guard
        raise RecipeError(f"candidate folder {key!r} is not a folder name")
    return replace(recipe, key=key)


@dataclass(frozen=True)
class Ranked:
    """One candidate's standing, on validation figures only."""

    candidate: Candidate
    params: int
    seeds: tuple[int, ...]
    last_k: SeedStats | None  # each seed's mean validation accuracy over the gate's last k epochs
    last_k_by_seed: tuple[float, ...]
    pass_rate: Rate  # seeds passing the recipe's own gate, judged on validation
    seconds: SeedStats | None  # wall seconds per seed
    complete: bool  # every seed asked for has a completed run
    smoke: bool = False  # trained on a subset or cut short: the gate did not judge accuracy
    versus_top: AccuracyCheck | None = None  # compare's test of this candidate against the top one

    @property
    def k(self) -> int:
        """How many last epochs the ranking figure averages: the gate's last_k, or every epoch of a shorter run."""
        recipe = self.candidate.recipe
        return min(recipe.expect.last_k, recipe.epochs)


def rank(cands: Sequence[Candidate], runs_by_key: dict[str, list[RunResult]], seeds: Sequence[int]) -> list[Ranked]:
    """Candidates by their validation last-k mean, best first (unfinished ones last), each tested against
    the first with compare's rule. ``runs_by_key`` must hold validation-judged runs (``load_results(.., "val")``)."""
    ranked = []
    for c in cands:
        # An interrupted run is a training in progress, not a result: its last epochs are early ones, and
        # counting them dragged a candidate's mean down by 0.3 points (step6.bs32, one seed cut at epoch 1).
        runs = [r for r in runs_by_key.get(c.key, []) if r.seed in set(seeds) and not r.in_progress]
        if not runs:
            ranked.append(Ranked(c, 0, (), None, (), Rate.of(0, 0), None, complete=False))
            continue
        sm = summarize(runs, required_seeds=seeds)
        by_seed = tuple(sm.last_k_by_seed[s] for s in sorted(sm.last_k_by_seed))
        complete = {r.seed for r in runs if r.status == "completed"} >= set(seeds)
        ranked.append(
            Ranked(
                c, sm.params, sm.seeds, sm.last_k, by_seed, sm.pass_rate, sm.wall_seconds, complete, sm.verdict.smoke
            )
        )
    # A smoke candidate (cut short, a subset) ranks after every full one and is tested against none: ranked
    # first, it made every real candidate "worse" (the seventh independent sweep of issue 30).
    ranked.sort(key=lambda r: (r.smoke, not r.complete, -(r.last_k.mean if r.last_k else -math.inf)))
    top = ranked[0] if ranked and ranked[0].last_k_by_seed else None
    if top is None:
        return ranked
    if len(top.last_k_by_seed) < MIN_SEEDS_FOR_TEST:
        return ranked  # compare's test needs 5 seeds a side; its fixed rule is no statement about noise
    t = Thresholds()
    return [
        r
        if r is top or len(r.last_k_by_seed) < MIN_SEEDS_FOR_TEST or r.smoke != top.smoke
        else _with(r, accuracy_rule(top.last_k_by_seed, r.last_k_by_seed, t))
        for r in ranked
    ]


def _with(r: Ranked, check: AccuracyCheck) -> Ranked:
    from dataclasses import replace

    return replace(r, versus_top=check)


def sweep_markdown(ranked: Sequence[Ranked], command: str, val_images: int, seeds: Sequence[int]) -> str:
    """SWEEP.md: the ranking table and what it can and cannot tell apart. Renders only."""
    ks = sorted({r.k for r in ranked})
    k = ks[0] if len(ks) == 1 else "k"  # candidates of differing last_k: each row says its own k
    lines = [
        "# tinymnist sweep",
        "",
        f"Generated by {code_span(command)}; do not edit by hand. Every figure is on the validation split "
        f"({val_images:,} training images held out, the same for every seed and candidate); the test set takes "
        "no part in the ranking.",
        "",
        f"Seeds {_seed_text(seeds)} (n = {len(seeds)} per candidate). Ranked by each seed's mean validation "
        f"accuracy over the last {k} epochs: its mean over seeds with a 95% t-interval. The pass rate is the "
        "recipe's own gate judged on validation, with a 95% Wilson interval. 'vs #1' is compare's test of the "
        "candidate against the top one (one-sided Welch t-test at alpha 0.01 with a 0.05-point minimum effect, "
        "at least 5 seeds a side; with fewer, untested): 'worse' is a difference the data resolves, 'not "
        "resolved' one it does not. Each pair is tested on its own, with no correction for the number of "
        "candidates or for the top one being chosen by its mean: read 'worse' as evidence, not as a "
        "family-wise claim.",
        "",
        f"| rank | candidate | changes | params | n | val last-{k} mean (95% CI) | SD | val pass rate (95% CI) "
        "| s/seed | vs #1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(ranked, start=1):
        if r.last_k is None:
            lines.append(table_row(i, r.candidate.key, r.candidate.said, "", 0, "not trained", *[""] * 4))
            continue
        sd = "n/a" if math.isnan(r.last_k.sd) else f"{r.last_k.sd:.3f}"
        secs = f"{r.seconds.mean:.0f}" if r.seconds else ""
        if r.versus_top is None:
            # the reason it was not tested, as rank() decided it (the eighth sweep: a smoke row said "n < 5")
            if i == 1:
                vs = "(top)"
            elif r.smoke != ranked[0].smoke:
                vs = "untested (smoke run)" if r.smoke else "untested (the top is a smoke run)"
            else:
                vs = f"untested (n < {MIN_SEEDS_FOR_TEST} a side)"
        else:
            word = "worse" if r.versus_top.regression else "not resolved"
            p = "" if math.isnan(r.versus_top.p) else f", p {r.versus_top.p:.2g}"
            vs = f"{word}: {-r.versus_top.drop:+.3f}{p}"
        unfinished = "" if r.complete else " (unfinished)"
        rate = "smoke run: not judged" if r.smoke else r.pass_rate.fmt()
        mean = f"{r.last_k.mean:.3f} {r.last_k.ci(3)}{f' (k = {r.k})' if k == 'k' else ''}"
        lines.append(
            table_row(
                i,
                f"{r.candidate.key}{unfinished}",
                r.candidate.said,
                f"{r.params:,}",
                r.last_k.n,
                mean,
                sd,
                rate,
                secs,
                vs,
            )
        )
    lines.append("")
    # the top two of one kind: a smoke candidate is never tested against a full one (rank)
    done = [r for r in ranked if r.complete and r.last_k_by_seed and r.smoke == ranked[0].smoke]
    if len(done) >= 2 and done[1].versus_top is None:
        lines += [
            f"Top two: {done[0].candidate.key} and {done[1].candidate.key} are not tested against each "
            f"other: compare's test needs at least {MIN_SEEDS_FOR_TEST} seeds a side.",
            "",
        ]
    elif len(done) >= 2 and done[1].versus_top is not None:
        a, check = done[0], done[1].versus_top
        resolved = "resolves" if check.regression else "does not resolve"
        lines += [
            f"Top two: {a.candidate.key} over {done[1].candidate.key} by {check.drop:.3f} points; the data "
            f"{resolved} this difference ({check.rule}).",
            "",
        ]
    return "\n".join(lines)


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
