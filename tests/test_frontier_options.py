"""Issue 33's recipe options: each off by default (registered recipes keep their exact draws and numbers), each
doing what its field says when on."""

import math
from dataclasses import replace

import pytest
import torch

from tests.conftest import interrupt_on_call
from tinymnist.data import BACKGROUND, MEAN, STD, augment
from tinymnist.engine import WeightSWA, build_model, recalibrated, train
from tinymnist.models import create_model
from tinymnist.recipes import STEP4, STEP5, RecipeError, validate
from tinymnist.runner import RunInterrupted, RunPlan, run_seed

TINY = replace(STEP4, epochs=2, batch_size=64)
CPU = torch.device("cpu")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _digit(n=8):
    x = torch.full((n, 1, 28, 28), BACKGROUND)
    x[:, :, 8:20, 12:16] = (1 - MEAN) / STD  # a white bar on black
    return x


def test_the_new_options_off_draw_and_return_exactly_what_the_old_ones_did():
    x = torch.randn(16, 1, 28, 28)
    old = augment(x, _gen(), 7.0, 0.08, 0.09, 0.5)
    new = augment(x, _gen(), 7.0, 0.08, 0.09, 0.5, max_shear=0.0, elastic_alpha=0.0, max_brightness=0.0)
    assert torch.equal(old, new)
    # and the generator is left where it was: the next draw of a run is the same
    g1, g2 = _gen(), _gen()
    augment(x, g1, 7.0, 0.08)
    augment(x, g2, 7.0, 0.08, max_contrast=0.0)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


@pytest.mark.parametrize(
    "option", [{"max_shear": 20.0}, {"elastic_alpha": 34.0}, {"max_brightness": 0.3}, {"max_contrast": 0.3}]
)
def test_each_option_alone_changes_images_and_is_a_pure_function_of_the_generator(option):
    x = _digit()
    a = augment(x, _gen(1), 0.0, 0.0, **option)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.equal(a, x)
    assert torch.equal(a, augment(x, _gen(1), 0.0, 0.0, **option))
    assert not torch.equal(a, augment(x, _gen(2), 0.0, 0.0, **option))


def test_shear_moves_a_vertical_bar_sideways_row_by_row_and_keeps_its_ink():
    x = _digit(1)
    out = augment(x, _gen(3), 0.0, 0.0, max_shear=30.0)[0, 0] - BACKGROUND
    cols = torch.arange(28.0)
    centre = [(out[r] * cols).sum() / out[r].sum() for r in (9, 18)]
    assert abs(centre[0] - centre[1]) > 1.0  # top and bottom rows of the bar moved apart: a shear
    assert out.sum().item() == pytest.approx((x[0, 0] - BACKGROUND).sum().item(), rel=0.05)  # ink is kept


def test_elastic_field_is_smooth_and_of_the_asked_size():
    from tinymnist.data import _elastic_field

    noise = torch.rand(64, 2, 28, 28, generator=_gen(5)) * 2 - 1
    d = _elastic_field(noise, alpha=34.0, sigma=4.0) * 14  # grid units -> pixels (28 pixels span 2 units)
    assert d.shape == (64, 28, 28, 2)
    # Simard's setting moves pixels by about a pixel or two, not the whole image
    assert 0.3 < d.abs().mean() < 3.0
    # smooth: neighbours move together
    assert (d[:, 1:] - d[:, :-1]).abs().mean() < 0.3 * d.abs().mean()
    assert torch.equal(_elastic_field(noise, 0.0, 4.0), torch.zeros_like(d))


def test_brightness_and_contrast_act_on_pixels_in_0_1_and_stay_there():
    x = _digit(64)
    out = augment(x, _gen(4), 0.0, 0.0, max_brightness=0.5, max_contrast=0.5)
    pixels = out * STD + MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    background = pixels[:, 0, 0, 0]  # black moves by the brightness draw only (clamped at 0)
    u = torch.rand(64, 2, generator=_gen(4)) * 2 - 1
    torch.testing.assert_close(background, (u[:, 1] * 0.5).clamp(0, 1), atol=1e-5, rtol=0)


def test_xavier_init_replaces_the_weights_within_the_glorot_bound_and_zeroes_biases():
    r = replace(STEP5, model="blocks", init="xavier")
    net = build_model(r, 0, CPU)
    plain = build_model(replace(r, init="default"), 0, CPU)
    conv = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv and all(m.bias is not None and not m.bias.any() for m in conv)
    for m in conv:
        k = m.weight[0, 0].numel()
        fan_in, fan_out = m.weight.shape[1] * k, m.weight.shape[0] * k
        assert m.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-6
    assert not torch.equal(conv[0].weight, next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)).weight)
    assert torch.equal(
        conv[0].weight, next(m for m in build_model(r, 0, CPU).modules() if isinstance(m, torch.nn.Conv2d)).weight
    )


def test_blocks_dropout_at_block_puts_one_dropout_after_each_pool():
    net = create_model("blocks", dropout_at="block")
    names = [type(m).__name__ for m in net.features]
    assert names.count("Dropout") == 2
    assert [names[i - 1] for i, n in enumerate(names) if n == "Dropout"] == ["MaxPool2d", "MaxPool2d"]
    assert names.count("Dropout") != [type(m).__name__ for m in create_model("blocks").features].count("Dropout")
    with pytest.raises(RecipeError, match="dropout_at='pool': choose conv or block"):
        validate(replace(STEP5, model="blocks", model_kwargs={"dropout_at": "pool"}))


def test_swa_mean_is_the_plain_average_of_the_epoch_end_weights():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    swa = WeightSWA(net)
    seen = []
    for k in range(3):
        with torch.no_grad():
            net[0].weight.add_(float(k + 1))
        net[1].num_batches_tracked += 1
        seen.append(net[0].weight.detach().clone())
        swa.add(net)
    torch.testing.assert_close(swa.model[0].weight, torch.stack(seen).mean(0))
    assert swa.model[1].num_batches_tracked == 3 and swa.count == 3


def test_recalibrated_statistics_are_the_exact_means_of_the_images_and_the_model_is_untouched():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), torch.nn.BatchNorm2d(2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3000, 1, 4, 4) * 2 + 5
    out = recalibrated(net, x)
    feats = torch.nn.functional.conv2d(x, net[0].weight)
    torch.testing.assert_close(out[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not out.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_swa_and_bn_recalibrate_change_what_is_evaluated_not_how_it_trains(small_mnist):
    plain = train(TINY, 0, small_mnist, max_batches=6, eval_limit=500)
    swa = train(replace(TINY, swa_epochs=2, bn_recalibrate=True), 0, small_mnist, max_batches=6, eval_limit=500)
    assert [e.train_loss for e in swa.epochs] == [e.train_loss for e in plain.epochs]
    assert [e.test_loss for e in swa.epochs] != [e.test_loss for e in plain.epochs]
    # the saved weights are the averaged ones, not the last epoch's
    last = [v for k, v in plain.state_dict.items() if k.endswith("weight")][0]
    mean = [v for k, v in swa.state_dict.items() if k.endswith("weight")][0]
    assert not torch.equal(last, mean)


def test_resume_restores_the_swa_mean(small_mnist, tmp_path, monkeypatch):
    import tinymnist.engine as engine

    recipe = replace(TINY, epochs=3, swa_epochs=2)
    kw = dict(max_batches=5, eval_limit=300)
    ref = train(recipe, 0, small_mnist, **kw)
    real = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", interrupt_on_call(real, 3))  # Ctrl-C in epoch 3's evaluation
    with pytest.raises(RunInterrupted):
        run_seed(RunPlan(recipe, 0, CPU, *kw.values()), small_mnist, tmp_path)
    assert "swa" in torch.load(tmp_path / "step4" / "seed0.ckpt", weights_only=True)
    monkeypatch.setattr(engine, "evaluate", real)
    resumed = run_seed(RunPlan(recipe, 0, CPU, *kw.values()), small_mnist, tmp_path, resume=True)
    assert [e.test_loss for e in resumed.epochs] == [e.test_loss for e in ref.epochs]


@pytest.mark.parametrize(
    "change, says",
    [
        ({"max_shear": 90.0}, "max_shear=90.0 is outside its range"),
        ({"elastic_sigma": 0.0}, "elastic_sigma=0.0 is outside its range"),
        ({"max_brightness": 1.0}, "max_brightness=1.0 is outside its range"),
        ({"init": "he"}, "init='he' is not known: choose one of default, xavier"),
        ({"swa_epochs": 99}, "swa_epochs=99 is outside its range"),
        ({"swa_epochs": 2, "ema": 0.99}, "swa_epochs and ema both average the weights"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(change, says):
    with pytest.raises(RecipeError, match=says):
        validate(replace(STEP4, **change))
