"""ONNX export (torch.onnx dynamo exporter) and onnxruntime evaluation of a trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tinymnist.errors import UserError
from tinymnist.recipes import Recipe, check_ranges
from tinymnist.results import load_torch_data

OPSET = 18


class ExportError(UserError):
    """A checkpoint or ONNX file that cannot be used; the CLI turns it into exit code 2."""


def load_checkpoint(
    path: str | os.PathLike, step: int | None = None, trusted_model: str | None = None
) -> tuple[torch.nn.Module, Recipe, int]:
    """The model of a ``seed{S}.pt`` written by the runner, in eval mode, with its recipe and seed. The model is
    rebuilt from the recipe the file records: a built-in or an installed plugin by its name; an import path only
    when the user names that same path (``trusted_model``, ``export --model``). A file names any callable it
    likes with the kwargs it likes (``subprocess:getoutput`` with a command): the fourth independent sweep of
    issue 30 ran one from a checkpoint, though nothing in a checkpoint may run before it is vouched for."""
    from tinymnist.models import create_model
    from tinymnist.models.registry import is_import_path

    path = Path(path)
    fix = "pass a seedS.pt written by `tinymnist train`"
    if path.exists() and not path.is_file():
        raise ExportError(f"{path}: not a regular file; {fix}")
    if not path.is_file():
        raise ExportError(
            f"{path}: no such checkpoint; train first (tinymnist train --step N) and pass OUT/stepN/seedS.pt"
        )
    state = load_torch_data(path, fix=fix)
    seed = state.get("seed")
    if not isinstance(state.get("recipe"), dict) or not isinstance(state.get("model"), dict):
        raise ExportError(f"{path}: not a tinymnist checkpoint (no recipe and model state); {fix}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ExportError(f"{path}: seed is {seed!r}, not an integer; {fix}")
    try:
        recipe = Recipe.from_dict(state["recipe"])
        check_ranges(recipe)  # step 99, lr -1: as a results file with them is refused (the fourth sweep)
    except (TypeError, ValueError) as e:  # a RecipeError is a ValueError
        raise ExportError(f"{path}: its recipe cannot be read ({e}); {fix}") from None
    if is_import_path(recipe.model) and recipe.model != trusted_model:
        raise ExportError(
            f"{path}: its recipe builds the model by the import path {recipe.model!r}, code that this file cannot "
            f"vouch for; nothing was run. If you trust that code, pass --model {recipe.model}"
        )
    model = create_model(recipe.model, **recipe.model_kwargs)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as e:
        # load_state_dict lists every mismatched tensor, one per line; one line says which file and why.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(
            f"{path}: its weights do not fit model {recipe.model!r} with {recipe.model_kwargs} ({first.rstrip(':')}); "
            f"{fix}"
        ) from None
    if step is not None and recipe.step != step:
        raise ExportError(f"{path}: checkpoint is for {recipe.label}, not --step {step}")
    return model.eval(), recipe, seed


def export_onnx(
    model: torch.nn.Module, path: str | os.PathLike, opset: int = OPSET, metadata: dict[str, str] | None = None
) -> Path:
    """Export ``model`` (eval form: dropout off, BatchNorm on running statistics) with a dynamic batch axis."""
    import onnx

    from tinymnist.results import atomic_write_bytes

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
    atomic_write_bytes(path, proto.SerializeToString(), named=True)  # export --out names this file
    return path


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such ONNX file"
        raise ExportError(f"{path}: {what}; create it with tinymnist export")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(
            f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]}); re-export it with tinymnist export"
        ) from None


def check_io(session, path: str | os.PathLike) -> None:
    """An ONNX model for this data takes (batch, 1, 28, 28) float images, any batch, and gives (batch, 10)
    logits; say which of these it breaks before running it."""
    fix = "pass a model exported by tinymnist export"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or list(shape[1:]) != [1, 28, 28] or inputs[0].type != "tensor(float)":
        got = "several inputs" if shape is None else f"{inputs[0].type} {shape}"
        raise ExportError(f"{path}: its input is {got}, not (batch, 1, 28, 28) float images; {fix}")
    if isinstance(shape[0], int):
        raise ExportError(f"{path}: its batch is fixed at {shape[0]}; export it with a dynamic batch ({fix})")
    out = outputs[0].shape if len(outputs) == 1 else None
    if out is None or len(out) != 2 or out[1] != 10 or isinstance(out[0], int):
        got = "several outputs" if out is None else str(out)
        raise ExportError(f"{path}: its output is {got}, not (batch, 10) logits; {fix}")


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
