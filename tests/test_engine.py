import json
import math
import shutil
import signal
import subprocess
import time
from dataclasses import replace

import pytest
import torch

from tests.conftest import REPO, interrupt_on_call, signal_after_first_checkpoint, train_cmd, train_env
from tinymnist.engine import get_lr, lr_for, train
from tinymnist.recipes import RECIPES, STEP2, STEP4, RecipeError, validate
from tinymnist.runner import RunInterrupted, RunPlan, run_seed

TINY = replace(STEP4, epochs=2, batch_size=64)
CPU = torch.device("cpu")


def run(recipe, seed, data, out, **kw):
    return run_seed(RunPlan(recipe, seed, CPU), data, out, **kw)


def metrics(result):
    return [(e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.lr) for e in result.epochs]


def test_same_seed_same_metrics(small_mnist):
    a = train(TINY, 0, small_mnist)
    b = train(TINY, 0, small_mnist)
    assert metrics(a) == metrics(b)
    c = train(TINY, 1, small_mnist)
    assert metrics(a) != metrics(c)


def test_result_and_files(small_mnist, tmp_path):
    r = run(TINY, 5, small_mnist, tmp_path)
    d = json.loads((tmp_path / "step4" / "seed5.json").read_text())
    for key in ("step", "seed", "params", "recipe", "epochs", "gate", "device", "threads", "torch", "git_sha"):
        assert key in d, key
    assert d["params"] == 8952 and d["recipe"]["model"] == "step4" and len(d["epochs"]) == 2
    assert set(d["epochs"][0]) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    assert 0 <= d["epochs"][-1]["test_acc"] <= 100 and d["status"] == "completed"
    saved = torch.load(tmp_path / "step4" / "seed5.pt", weights_only=True)
    assert saved["recipe"] == r.recipe and "classifier.weight" in saved["model"]
    assert not (tmp_path / "step4" / "seed5.ckpt").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_training_learns(small_mnist):
    r = train(replace(STEP2, epochs=3, batch_size=32), 0, small_mnist)
    # 96 steps on 1,024 images: far from converged. Test accuracy this early swings with the BatchNorm running
    # statistics (41-65% seen, by thread count), so the learning is checked on the training side.
    assert r.epochs[-1].train_acc > 70 and r.epochs[-1].train_loss < 0.5 * r.epochs[0].train_loss
    assert r.epochs[-1].test_acc > 20  # twice chance


def test_divergence_stops_at_once(small_mnist, tmp_path):
    r = run(replace(STEP2, epochs=3, lr=1e6, batch_size=64), 0, small_mnist, tmp_path)
    assert r.status == "diverged" and not r.gate["passed"]
    assert r.diverged_at["epoch"] == 1 and r.diverged_at["batch"] >= 1 and len(r.epochs) == 0
    saved = json.loads((tmp_path / "step2" / "seed0.json").read_text())
    assert saved["status"] == "diverged" and saved["gate"]["passed"] is False


def test_onecycle_values_and_shape():
    total = 100  # warm-up: round(0.2 * 100) = 20 steps from lr/25 to lr; then cosine over steps 20..99
    lrs = [get_lr(STEP4, s, total) for s in range(total)]
    start, peak_lr, end = STEP4.lr / 25, STEP4.lr, STEP4.lr / 1e4
    assert lrs[10] == pytest.approx(start + (peak_lr - start) * 10 / 20)  # half-way up the ramp
    assert lrs[20] == pytest.approx(peak_lr)  # the peak
    assert lrs[20 + 79 // 2] == pytest.approx(end + (peak_lr - end) * 0.5 * (1 + math.cos(math.pi * 39 / 79)))
    peak = lrs.index(max(lrs))
    assert peak == 20
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1 :], strict=True))
    assert lrs[0] == pytest.approx(STEP4.lr / 25) and lrs[-1] == pytest.approx(STEP4.lr / 1e4)
    assert all(get_lr(RECIPES[s], 7, total) == RECIPES[s].lr for s in (1, 2, 3))


_cli, _env = train_cmd, train_env


def test_sigkill_then_resume_is_bit_identical(mnist_root, tmp_path):
    env = _env(mnist_root)
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run(_cli(ref), env=env, check=True, cwd=REPO, capture_output=True)

    proc = subprocess.Popen(_cli(run), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "step4" / "seed3.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never wrote its epoch-1 checkpoint"
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert killed_at < 3 and not (run / "step4" / "seed3.json").exists()

    subprocess.run(_cli(run, "--resume"), env=env, check=True, cwd=REPO, capture_output=True)
    a = json.loads((ref / "step4" / "seed3.json").read_text())
    b = json.loads((run / "step4" / "seed3.json").read_text())
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[e[k] for k in keys] for e in a["epochs"]] == [[e[k] for k in keys] for e in b["epochs"]]
    wa = torch.load(ref / "step4" / "seed3.pt", weights_only=True)["model"]
    wb = torch.load(run / "step4" / "seed3.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigint_writes_partial_result_and_says_how_to_resume(mnist_root, tmp_path):
    # 10 epochs: a window of several seconds after the first checkpoint, even on a loaded machine.
    proc = signal_after_first_checkpoint(
        _cli(tmp_path, "--epochs", "10"),
        _env(mnist_root),
        tmp_path / "step4" / "seed3.ckpt",
        signal.SIGINT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    saved = json.loads((tmp_path / "step4" / "seed3.json").read_text())
    assert saved["status"] == "interrupted" and saved["gate"]["passed"] is False
    assert len(saved["epochs"]) >= 1 and math.isfinite(saved["epochs"][0]["test_acc"])


def test_concurrent_runs_share_a_results_folder(mnist_root, tmp_path):
    """Two processes writing other seeds into one folder at once leave valid files (one seed, one writer:
    tests/test_reliability.py)."""
    env = _env(mnist_root)
    cmds = [_cli(tmp_path, "--seeds", s, "--epochs", "1", "--train-subset", "1500") for s in ("3", "4")]
    procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    for seed in (3, 4):
        d = json.loads((tmp_path / "step4" / f"seed{seed}.json").read_text())
        assert d["seed"] == seed and d["status"] == "completed" and len(d["epochs"]) == 1
        torch.load(tmp_path / "step4" / f"seed{seed}.pt", weights_only=True)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_bf16_precision_is_deterministic(small_mnist):
    bf16 = replace(TINY, precision="bf16")
    a, b = train(bf16, 0, small_mnist), train(bf16, 0, small_mnist)
    assert metrics(a) == metrics(b) and metrics(a) != metrics(train(TINY, 0, small_mnist))
    with pytest.raises(RecipeError, match="precision='fp16' is not known: choose one of fp32, bf16"):
        validate(replace(TINY, precision="fp16"))


def test_weight_ema_is_the_model_evaluated_and_saved(small_mnist, tmp_path):
    from tinymnist.engine import WeightEMA

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update()  # first update: ramped decay min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.model[0].weight, d * before["0.weight"] + (1 - d) * net[0].weight)
    assert ema.model[1].num_batches_tracked == net[1].num_batches_tracked
    assert not any(p.requires_grad for p in ema.model.parameters())

    r = run(replace(TINY, ema=0.99), 0, small_mnist, tmp_path)
    assert metrics(r) == metrics(train(replace(TINY, ema=0.99), 0, small_mnist))
    plain = train(TINY, 0, small_mnist)
    # Same training trajectory (train side), another evaluated model (test side).
    assert [e.train_loss for e in r.epochs] == [e.train_loss for e in plain.epochs]
    assert [e.test_loss for e in r.epochs] != [e.test_loss for e in plain.epochs]
    from tinymnist.engine import evaluate
    from tinymnist.models import create_model

    saved = torch.load(tmp_path / "step4" / "seed0.pt", weights_only=True)
    net = create_model("step4")
    net.load_state_dict(saved["model"])
    assert evaluate(net, small_mnist.test_x, small_mnist.test_y) == (r.epochs[-1].test_loss, r.epochs[-1].test_acc)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_run_is_deterministic_and_learns(small_mnist):
    data = small_mnist.to("cuda")
    recipe = replace(STEP2, epochs=3, batch_size=32, max_degrees=7.0, max_shift=0.08, max_scale=0.1, ema=0.99)
    a, b = train(recipe, 0, data, "cuda"), train(recipe, 0, data, "cuda")
    assert metrics(a) == metrics(b) and a.device == "cuda"
    assert a.epochs[-1].train_acc > 70


@cuda
def test_cuda_cli_smoke(mnist_root, tmp_path):
    from tinymnist.cli import main

    args = [
        "train",
        "--step",
        "4",
        "--seeds",
        "0",
        "--device",
        "cuda",
        "--data-root",
        str(mnist_root),
        "--out",
        str(tmp_path),
        "--epochs",
        "2",
        "--train-subset",
        "2000",
        "--test-subset",
        "500",
        "--quiet",
    ]
    assert main(args) == 0  # subset runs are smoke runs: no gate, so 0 means completed
    d = json.loads((tmp_path / "step4" / "seed0.json").read_text())
    assert d["device"] == "cuda" and d["status"] == "completed" and len(d["epochs"]) == 2


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler"
)
def test_compiled_forward_trains_like_eager(small_mnist):
    # Same weights, same data, fused kernels: the losses agree to rounding, not bit for bit. Dropout is off
    # because a compiled graph draws its masks from inductor's own generator: with dropout a compiled run is
    # a different (still seeded) experiment, which is why `compile` is a recorded recipe field.
    recipe = replace(TINY, epochs=1, model_kwargs={"dropout": 0.0})
    a = train(replace(recipe, compile=True), 0, small_mnist)
    b = train(recipe, 0, small_mnist)
    assert a.recipe.compile is True
    assert math.isclose(a.epochs[0].train_loss, b.epochs[0].train_loss, rel_tol=1e-3)
    assert math.isclose(a.epochs[0].test_loss, b.epochs[0].test_loss, rel_tol=1e-2)


def test_resume_restores_the_weight_ema(small_mnist, tmp_path, monkeypatch):
    import tinymnist.engine as engine

    recipe = replace(TINY, ema=0.99)
    ref = train(recipe, 0, small_mnist)
    real = engine.evaluate
    # Ctrl-C during epoch 2's evaluation
    monkeypatch.setattr(engine, "evaluate", interrupt_on_call(real, 2))
    with pytest.raises(RunInterrupted):
        run(recipe, 0, small_mnist, tmp_path)
    assert "ema" in torch.load(tmp_path / "step4" / "seed0.ckpt", weights_only=True)
    monkeypatch.setattr(engine, "evaluate", real)
    resumed = run(recipe, 0, small_mnist, tmp_path, resume=True)
    assert metrics(resumed) == metrics(ref)


# --- the anchors' pieces (issue 21): a piecewise-linear schedule, augmenting a share of the images, BlocksNet ---

ANCHOR_POINTS = [[0, 0.5], [3, 1], [9, 0.1], [15, 0]]


def test_piecewise_schedule_hits_its_knots_and_interpolates():
    r = validate(replace(STEP4, schedule="piecewise", lr=0.1, lr_points=ANCHOR_POINTS, epochs=15))
    total = 1500  # 100 steps an epoch
    # by hand: epoch 0 -> 0.05, 3 -> 0.1, 9 -> 0.01, 15 -> 0; half-way from 3 to 9 is 0.055
    assert get_lr(r, 0, total) == pytest.approx(0.05)
    assert get_lr(r, 300, total) == pytest.approx(0.1)
    assert get_lr(r, 600, total) == pytest.approx(0.055)
    assert get_lr(r, 900, total) == pytest.approx(0.01)
    assert get_lr(r, 150, total) == pytest.approx(0.075)
    assert get_lr(r, 1499, total) == pytest.approx(0.1 * 0.1 * (1 / 600), abs=1e-9)
    # the knots are epochs: with --epochs 30, step 600 of 3,000 is epoch 6, and past the last knot it holds
    assert get_lr(replace(r, epochs=30), 600, 3000) == pytest.approx(0.055)
    assert get_lr(replace(r, epochs=30), 2400, 3000) == 0


def test_a_schedule_read_per_epoch_is_held_for_the_epoch_and_matches_the_per_step_form_at_each_start():
    r = validate(replace(STEP4, lr_per="epoch", warmup_frac=0.3))
    per_step = replace(r, lr_per="step")
    batches, epochs = 7, r.epochs
    for epoch in range(1, epochs + 1):
        lrs = {lr_for(r, epoch, b, batches, epochs) for b in range(batches)}
        assert lrs == {get_lr(per_step, epoch - 1, epochs)}  # one value an epoch: the schedule over 15 steps
    # by hand, as OneCycleLR(total_steps=15, pct_start=0.3) stepped per epoch: lr/25 -> peak at epoch 5 -> ~0
    assert lr_for(r, 1, 3, batches, epochs) == pytest.approx(0.1 / 25)
    assert lr_for(r, 5, 0, batches, epochs) == pytest.approx(0.1)
    assert lr_for(r, 15, 6, batches, epochs) == pytest.approx(0.1 / 1e4)
    # the default moves every step: batch 3 of epoch 1 is not batch 0's rate
    assert lr_for(per_step, 1, 3, batches, epochs) != lr_for(per_step, 1, 0, batches, epochs)
    # the anchor's knots, read once per epoch: epoch 2 (index 1) sits half-way from 0.05 to 0.1
    a = validate(replace(STEP4, schedule="piecewise", lr=0.1, lr_points=[[0, 0.5], [2, 1], [15, 0]], lr_per="epoch"))
    assert lr_for(a, 2, 5, batches, epochs) == pytest.approx(0.075)
    with pytest.raises(RecipeError, match="lr_per='batch' is not known: choose one of step, epoch"):
        validate(replace(STEP4, lr_per="batch"))


@pytest.mark.parametrize(
    "points",
    [[[0, 1]], [[1, 1], [2, 0]], [[0, 1], [0, 0.5]], [[0, 2], [5, 0]], [[0, 1], [5, float("nan")]], [[0, "a"], [1, 0]]],
)
def test_bad_lr_points_are_refused(points):
    with pytest.raises(RecipeError, match="lr_points="):
        validate(replace(STEP4, schedule="piecewise", lr_points=points))


def test_lr_points_without_the_piecewise_schedule_are_refused():
    with pytest.raises(RecipeError, match="schedule is not 'piecewise'"):
        validate(replace(STEP4, lr_points=ANCHOR_POINTS))


def test_aug_prob_augments_that_share_and_leaves_the_rest_exact(small_mnist):
    from tinymnist.data import augment

    x = small_mnist.train_x[:400]
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, 7.0, 0.08, 0.0, prob=0.5)
    same = (out == x).flatten(1).all(1)
    # about half pass untouched (binomial(400, 0.5): 200 +- 10 SD), the others moved
    assert 150 < int(same.sum()) < 250
    full = augment(x, torch.Generator().manual_seed(0), 7.0, 0.08)
    # the augmented ones are exactly what prob=1 draws for them: the share is drawn after, so it adds no shift
    assert torch.equal(out[~same], full[~same])
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), 7.0, 0.08, prob=1.0), full)


def test_blocks_net_is_the_anchor_size_and_recipes_round_trip():
    from tinymnist.models import count_params, create_model
    from tinymnist.recipes import Recipe, with_overrides

    # 3,762 parameters: the public anchor's count, from its 4-4-4, 8-8-8, 8-8-8 blocks with biases
    assert count_params(create_model("blocks")) == 3762
    assert count_params(create_model("blocks", bias=False)) == 3762 - (4 * 3 + 8 * 6 + 10)
    r = validate(
        with_overrides(
            STEP4,
            ["model=blocks", "schedule=piecewise", f"lr_points={json.dumps(ANCHOR_POINTS)}", "aug_prob=0.5"],
        )
    )
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r  # one form on disk and in memory
    with pytest.raises(RecipeError, match="bias="):
        validate(replace(r, model_kwargs={"bias": 1}))
    with pytest.raises(RecipeError, match="layer sizes"):
        validate(replace(r, model_kwargs={"blocks": [[4, 0], [8]]}))
