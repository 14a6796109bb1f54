"""ONNX export (torch.onnx dynamo exporter) and onnxruntime evaluation of a trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from harness.recipes import Recipe
from harness.results import load_torch_data

OPSET = 18


class ExportError(Exception):
    """A checkpoint or ONNX file that cannot be used; the CLI turns it into exit code 2."""


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[torch.nn.Module, Recipe, int]:
    """The model of a ``seed{S}.pt`` written by the engine, in eval mode, with its recipe and seed."""
    from models import create_model

    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"{path}: no such checkpoint; train first (python -m harness train --step N) "
            "and pass results/stepN/seedS.pt"
        )
    state = load_torch_data(path, fix="pass a seedS.pt written by `python -m harness train`")
    try:
        recipe = Recipe.from_dict(state["recipe"])
        model = create_model(recipe.model, **recipe.model_kwargs)
        model.load_state_dict(state["model"])
    except Exception as e:  # a foreign or damaged file: say which and what to do, not where it broke
        raise ExportError(
            f"{path}: not a tinymnist checkpoint ({type(e).__name__}: {e}); "
            "pass a seedS.pt written by `python -m harness train`"
        ) from None
    if step is not None and recipe.step != step:
        raise ExportError(f"{path}: checkpoint is for step {recipe.step}, not --step {step}")
    return model.eval(), recipe, int(state.get("seed", -1))


def export_onnx(
    model: torch.nn.Module, path: str | os.PathLike, opset: int = OPSET, metadata: dict[str, str] | None = None
) -> Path:
    """Export ``model`` (eval form: dropout off, BatchNorm on running statistics) with a dynamic batch axis."""
    import onnx

    from harness.results import atomic_write_bytes

    path = Path(path)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = (torch.randn(2, 1, 28, 28),)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        opset_version=opset,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        verbose=False,
    )
    if program is None:  # the dynamo exporter always returns a program; None means the legacy path ran
        raise ExportError("torch.onnx.export returned no program; this torch build lacks the dynamo exporter")
    proto = program.model_proto
    for key, value in {"opset": str(opset), "torch": torch.__version__, **(metadata or {})}.items():
        proto.metadata_props.add(key=f"tinymnist.{key}", value=value)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file; create it with python -m harness export")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(
            f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]}); re-export it with python -m harness export"
        ) from None


def check_input(session, path: str | os.PathLike) -> None:
    """An ONNX model for this data takes (batch, 1, 28, 28) float images; say so before running it."""
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or list(shape[1:]) != [1, 28, 28] or inputs[0].type != "tensor(float)":
        got = "several inputs" if shape is None else f"{inputs[0].type} {shape}"
        raise ExportError(
            f"{path}: its input is {got}, not (batch, 1, 28, 28) float images; "
            "pass a model exported by python -m harness export"
        )


def onnx_logits(session, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> np.ndarray:
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def opset_of(path: str | os.PathLike) -> int:
    import onnx

    return max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
