"""ONNX export and parity with PyTorch on all 10,000 test images.

The fast suite exports a step-4 model trained briefly on a subset; `.ci/run` sets TINYMNIST_CHECKPOINT to
the real 15-epoch step-4 checkpoint and runs the same parity test on it (`-m slow`).
"""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tinymnist.cli import main
from tinymnist.export import export_onnx, load_checkpoint, onnx_logits, onnx_session, opset_of, torch_logits
from tinymnist.recipes import STEP1, STEP4
from tinymnist.runner import RunPlan, run_seed


@pytest.fixture(scope="module")
def checkpoint(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    run_seed(
        RunPlan(replace(STEP4, epochs=2, batch_size=32), 0, torch.device("cpu")),
        mnist.subset(2048, 10000),
        out,
    )
    return out / "step4" / "seed0.pt"


def _parity(ckpt: Path, mnist, tmp: Path):
    model, recipe, _ = load_checkpoint(ckpt, 4)
    path = export_onnx(model, tmp / "m.onnx")
    assert opset_of(path) == 18
    session = onnx_session(path)
    x, y = mnist.test_x, mnist.test_y.numpy()
    ours, ref = onnx_logits(session, x), torch_logits(model, x)
    assert ours.shape == ref.shape == (10000, 10)
    assert np.array_equal(ours.argmax(1), ref.argmax(1))
    assert np.abs(ours - ref).max() < 1e-4
    assert (ours.argmax(1) == y).mean() == (ref.argmax(1) == y).mean()
    for batch in (1, 7, 1000):
        out = onnx_logits(session, x[:batch], batch_size=batch)
        assert out.shape == (batch, 10)
    return (ref.argmax(1) == y).mean() * 100


def test_parity_on_full_test_set(checkpoint, mnist, tmp_path):
    acc = _parity(checkpoint, mnist, tmp_path)
    assert acc > 50  # a real, if brief, training run: the parity is on a model that predicts something


@pytest.mark.slow
def test_parity_on_real_checkpoint(mnist, tmp_path):
    ckpt = os.environ.get("TINYMNIST_CHECKPOINT")
    if not ckpt:
        pytest.skip("set TINYMNIST_CHECKPOINT to a trained step-4 seedS.pt")
    acc = _parity(Path(ckpt), mnist, tmp_path)
    assert acc >= 99.4


def test_step1_exports_too(tmp_path):
    torch.manual_seed(0)
    from tinymnist.models import create_model

    model = create_model(STEP1.model).eval()
    session = onnx_session(export_onnx(model, tmp_path / "s1.onnx"))
    x = torch.randn(7, 1, 28, 28)
    assert np.abs(onnx_logits(session, x) - torch_logits(model, x)).max() < 1e-4


def test_eval_form_dropout_off(checkpoint, tmp_path):
    """The exported graph is the eval form: PyTorch's eval-mode logits, not its training-mode ones (dropout
    on, BatchNorm on batch statistics)."""
    model, _, _ = load_checkpoint(checkpoint)
    session = onnx_session(export_onnx(model, tmp_path / "m.onnx"))
    x = torch.randn(16, 1, 28, 28)
    ours = onnx_logits(session, x)
    np.testing.assert_allclose(ours, torch_logits(model, x), atol=1e-4, rtol=0)
    torch.manual_seed(0)
    with torch.no_grad():
        train_form = model.train()(x).numpy()
    model.eval()
    assert np.abs(ours - train_form).max() > 1e-2


def test_cli_export_and_evaluate(checkpoint, mnist_root, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--step", "4", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert "opset 18" in capsys.readouterr().out
    assert main(["evaluate", "--onnx", str(out), "--data-root", str(mnist_root)]) == 0
    text = capsys.readouterr().out
    model, _, _ = load_checkpoint(checkpoint)
    from tinymnist.data import load_mnist

    d = load_mnist(mnist_root)
    ref = (torch_logits(model, d.test_x).argmax(1) == d.test_y.numpy()).mean() * 100
    assert f"test accuracy {ref:.2f}%" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--step", "4", "--checkpoint", "nope.pt", "--out", "x.onnx"], "nope.pt: no such checkpoint"),
        (["export", "--step", "4", "--checkpoint", "{ckpt}", "--out", "x.txt"], "give a path ending in .onnx"),
        (["export", "--step", "2", "--checkpoint", "{ckpt}", "--out", "{tmp}/x.onnx"], "is for step 4, not --step 2"),
        (["evaluate", "--onnx", "nope.onnx"], "nope.onnx: no such ONNX file"),
        (["export", "--step", "4", "--checkpoint", "{junk}", "--out", "{tmp}/x.onnx"], "not a torch checkpoint"),
        (["evaluate", "--onnx", "{junk}"], "onnxruntime cannot load it"),
    ],
)
def test_bad_export_input(argv, message, checkpoint, tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage")
    argv = [a.format(ckpt=checkpoint, tmp=tmp_path, junk=junk) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- issue 18, B8: damaged checkpoints and foreign ONNX files are named, in one line -----------------------


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.update(seed="0"), "seed is '0', not an integer"),
        (lambda s: s["recipe"].update(lr="fast"), "its recipe cannot be read (recipe field lr is 'fast'"),
        (lambda s: s.update(model=[1, 2]), "not a tinymnist checkpoint"),
        # the weights of one network under the recipe of another: one line, not one per tensor
        (lambda s: s["recipe"].update(model_kwargs={"block1": [8, 8]}), "its weights do not fit model 'step4'"),
    ],
)
def test_damaged_checkpoint_metadata_is_one_line(checkpoint, tmp_path, capsys, damage, message):
    state = torch.load(checkpoint, weights_only=True)
    damage(state)
    bad = tmp_path / "seed0.pt"
    torch.save(state, bad)
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "x.onnx")]) == 2
    _one_line(capsys, str(bad), message)
    assert not (tmp_path / "x.onnx").exists()


def _onnx(path, in_shape, out_shape):
    """A one-node ONNX graph (Flatten, then a MatMul) with the given input and output shapes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_out = out_shape[-1]
    w = numpy_helper.from_array(np.zeros((784, n_out), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "in_shape, out_shape, message",
    [
        ([1, 1, 28, 28], [1, 10], "its batch is fixed at 1"),
        (["N", 1, 28, 28], ["N", 5], "its output is ['N', 5], not (batch, 10) logits"),
        (["N", 784], ["N", 10], "not (batch, 1, 28, 28) float images"),
    ],
)
def test_foreign_onnx_files_are_named_for_what_they_break(tmp_path, capsys, in_shape, out_shape, message):
    path = _onnx(tmp_path / "m.onnx", in_shape, out_shape)
    assert main(["evaluate", "--onnx", str(path)]) == 2
    _one_line(capsys, str(path), message)


def test_unreasonable_thread_counts_are_refused(tmp_path, capsys):
    assert main(["evaluate", "--onnx", str(tmp_path / "m.onnx"), "--threads", "100000"]) == 2
    # one line that names the argument, and where the usage is
    assert capsys.readouterr().err.strip().splitlines() == [
        "tinymnist evaluate: error: argument --threads: 100000 threads: at most 1024 (see tinymnist evaluate --help)"
    ]


def test_a_fifo_is_named_as_not_a_regular_file_not_as_missing(tmp_path, capsys):
    """The sixth independent sweep: export and evaluate called a FIFO "no such checkpoint" / "no such ONNX file"."""
    import os

    from tinymnist.cli import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["export", "--checkpoint", str(fifo), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"{fifo}: not a regular file" in capsys.readouterr().err
    assert main(["evaluate", "--onnx", str(fifo)]) == 2
    assert f"{fifo}: not a regular file" in capsys.readouterr().err
