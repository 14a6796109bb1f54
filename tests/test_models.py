import pytest
import torch

from tinymnist.models import ModelError, count_params, create_model, list_models

# The seed table's parameter counts. A model registered without an entry here fails test_every_model_has_count.
EXPECTED_PARAMS = {"step1": 147_658, "step2": 8_952, "step3": 8_952, "step4": 8_952, "step5": 4_972, "step6": 9_802}
EXPECTED_PARAMS["blocks"] = 3_762  # the public anchor's count (issue 21), from its own widths


def test_every_model_has_count():
    assert set(list_models()) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", list_models())
def test_param_count(name):
    assert count_params(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape(name, batch):
    torch.manual_seed(0)
    model = create_model(name).eval()
    out = model(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_gradient(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(7, 1, 28, 28)), torch.arange(7))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_unknown_model_is_clear():
    with pytest.raises(ModelError, match="unknown model 'nope'; registered: blocks, step1"):
        create_model("nope")


def test_dropout_is_an_argument():
    assert create_model("step2").cfg.dropout == 0.0
    assert create_model("step3").cfg.dropout > 0
    assert create_model("step2", dropout=0.1).cfg.dropout == 0.1


def test_pooled_convs_run_at_12_pixels_and_leave_other_nets_alone():
    plain = create_model("step2")
    net = create_model("step2", pooled=[12])
    # One padded 3x3 conv (12 -> 12) and its BatchNorm: the grid stays 12x12, so nothing after it changes shape.
    assert count_params(net) - count_params(plain) == 12 * 12 * 9 + 2 * 12
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # Without it, the state-dict keys are the ones every saved checkpoint has.
    assert list(create_model("step2", pooled=[]).state_dict()) == list(plain.state_dict())
