"""``StepSummary``: every figure of one step over its seeds, computed once, read by report, compare and log.

The verdict inside it is ``tinymnist.verdict.judge``'s; the statistics are ``tinymnist.stats``'. Nothing here
renders, and nothing else computes these figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinymnist.recipes import Recipe
from tinymnist.results import RunResult
from tinymnist.stats import Rate, SeedStats, first_stable_epoch, last_k_mean
from tinymnist.verdict import Verdict, judge, split_of

TARGET = 99.4  # the mission's accuracy, the line the report draws


@dataclass(frozen=True)
class EpochMean:
    epoch: int
    train: float
    test: float

    @property
    def gap(self) -> float:
        return self.train - self.test


@dataclass(frozen=True)
class StepSummary:
    step: int
    recipe: Recipe
    params: int
    seeds: tuple[int, ...]
    verdict: Verdict
    k: int  # the last-k window of the gate
    last_k_by_seed: dict[int, float]  # each seed's mean test accuracy over its last k epochs
    last_k: SeedStats | None  # None when no run finished an epoch
    final_test: SeedStats | None
    best_test: SeedStats | None
    best_train: SeedStats | None
    best_at: tuple[float, int, int] | None  # (accuracy, epoch, seed) of the best single epoch
    at_target: dict[int, list[int]]  # per seed, the epochs at or above TARGET
    last_k_at_target: int  # seeds whose last k epochs all reach TARGET
    stable_from: dict[int, int | None]  # per seed, the epoch from which it stays at or above TARGET
    per_epoch: tuple[EpochMean, ...]
    epoch_seconds: SeedStats | None
    eval_seconds: SeedStats | None
    images_per_second: SeedStats | None
    wall_seconds: SeedStats
    machines: tuple[str, ...]
    torch: tuple[str, ...]
    git_sha: tuple[str, ...]
    epochs: int  # epochs every run finished
    statuses: dict[int, str]
    split: str = "test"  # which images the accuracies are on: "validation" under --on val (verdict.split_of)

    @property
    def pass_rate(self) -> Rate:
        return self.verdict.pass_rate

    @property
    def passed_seeds(self) -> tuple[int, ...]:
        return tuple(s for s in self.seeds if s not in self.verdict.failed_seeds)


def summarize(
    runs: Sequence[RunResult], required_seeds: Sequence[int] = (), smoke: bool = False, rule: str = "seeds"
) -> StepSummary:
    """The summary of one step's runs (all of one step), judged with ``required_seeds`` present, by ``rule``
    (``tinymnist.verdict``: every seed, or the population)."""
    runs = sorted(runs, key=lambda r: r.seed)
    recipe = Recipe.from_dict(runs[0].recipe)
    verdict = judge(runs, required_seeds, smoke, rule=rule)
    done = [r for r in runs if r.epochs]
    k = recipe.expect.last_k
    n_ep = min(len(r.epochs) for r in done) if done else 0

    def spread(values) -> SeedStats | None:
        values = list(values)
        return SeedStats.of(values) if values else None

    best = [(max(r.test_acc), r.test_acc.index(max(r.test_acc)) + 1, r.seed) for r in done]
    last_k_by_seed = {r.seed: last_k_mean(r.test_acc, k) for r in done}
    return StepSummary(
        split=split_of(runs[0]),
        step=recipe.step,
        recipe=recipe,
        params=runs[0].params,
        seeds=tuple(r.seed for r in runs),
        verdict=verdict,
        k=k,
        last_k_by_seed=last_k_by_seed,
        last_k=spread(last_k_by_seed.values()),
        final_test=spread(r.test_acc[-1] for r in done),
        best_test=spread(b[0] for b in best),
        best_train=spread(max(e.train_acc for e in r.epochs) for r in done),
        best_at=max(best) if best else None,
        at_target={r.seed: [e.epoch for e in r.epochs if e.test_acc >= TARGET] for r in done},
        last_k_at_target=sum(1 for r in done if len(r.test_acc) >= k and min(r.test_acc[-k:]) >= TARGET),
        stable_from={r.seed: first_stable_epoch(r.test_acc, TARGET) for r in done},
        per_epoch=tuple(
            EpochMean(
                i + 1,
                sum(r.epochs[i].train_acc for r in done) / len(done),
                sum(r.epochs[i].test_acc for r in done) / len(done),
            )
            for i in range(n_ep)
        ),
        epoch_seconds=spread(e.seconds for r in done for e in r.epochs),
        eval_seconds=spread(e.eval_seconds for r in done for e in r.epochs),
        images_per_second=spread(e.images_per_second for r in done for e in r.epochs),
        wall_seconds=SeedStats.of(r.wall_seconds for r in runs),
        machines=tuple(sorted({f"{r.device} ({r.device_name}), {r.threads} threads" for r in runs})),
        torch=tuple(sorted({r.torch for r in runs})),
        git_sha=tuple(sorted({r.git_sha for r in runs})),
        epochs=n_ep,
        statuses={r.seed: r.status for r in runs},
    )
