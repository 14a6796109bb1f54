"""Synthetic results for report and compare tests: exact, known numbers."""

from dataclasses import replace

from tinymnist.recipes import get_recipe
from tinymnist.results import EpochStats, RunResult, save_result
from tinymnist.verdict import seed_verdict


def make_result(
    step,
    seed,
    test,
    train=None,
    ips=10_000.0,
    device_name="Test CPU",
    params=None,
    recipe=None,
    status="completed",
    planned_epochs=None,
):
    planned_epochs = len(test) if planned_epochs is None else planned_epochs
    # a run records the recipe it trained, epochs included (--epochs changes both): the reader holds them equal
    recipe = replace(recipe or get_recipe(step), epochs=planned_epochs)
    train = train or [t + 0.1 for t in test]
    params = params if params is not None else (147658 if step == 1 else 8952)
    epochs = [
        EpochStats(
            epoch=i + 1,
            train_loss=0.1 / (i + 1),
            train_acc=tr,
            test_loss=0.05 / (i + 1),
            test_acc=te,
            lr=0.01,
            seconds=60000 / ips,
            eval_seconds=0.5,
            images_per_second=ips,
        )
        for i, (tr, te) in enumerate(zip(train, test, strict=True))
    ]
    r = RunResult(
        step=step,
        seed=seed,
        params=params,
        recipe=recipe.to_dict(),
        epochs=epochs,
        gate={},
        status=status,
        device="cpu",
        device_name=device_name,
        threads=2,
        torch="test",
        git_sha="abc",
        planned_epochs=planned_epochs,
        train_images=60000,
        test_images=10000,
        wall_seconds=100.0,
    )
    r.gate = seed_verdict(r).to_dict()
    return r


def write_results(folder, runs):
    for r in runs:
        save_result(folder, r)
    return folder


RAMP = [97.0 + 0.15 * i for i in range(12)]  # 97.00 ... 98.65


def step4_runs(last3=((99.45, 99.50, 99.55), (99.40, 99.42, 99.48), (99.47, 99.46, 99.50)), **kw):
    return [make_result(4, s, RAMP + list(l3), **kw) for s, l3 in enumerate(last3)]
