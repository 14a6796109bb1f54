"""``tinymnist export``: a trained checkpoint to ONNX (dynamo exporter, dynamic batch)."""

from __future__ import annotations

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK, UsageError
from tinymnist.shell import console


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="export a trained checkpoint to ONNX (dynamo exporter, dynamic batch)")
    e.add_argument(
        "--step", type=_args.step, help="check that the checkpoint was trained for this step (default: any recipe)"
    )
    e.add_argument("--checkpoint", required=True, help="OUT/<recipe>/seedS.pt written by `train`")
    e.add_argument("--out", required=True, help="where to write the .onnx file")
    e.add_argument(
        "--model",
        metavar="PKG.MOD:CALLABLE",
        help="the import path the checkpoint's recipe builds its model with, if it uses one: you vouch for that "
        "code (a checkpoint's own say-so never runs it)",
    )


def run(args) -> int:
    from tinymnist.errors import require

    require("onnx", "export")
    from tinymnist.export import export_onnx, load_checkpoint, opset_of

    if not args.out.endswith(".onnx"):
        raise UsageError(f"--out {args.out}: give a path ending in .onnx")
    model, recipe, seed = load_checkpoint(args.checkpoint, args.step, args.model)
    meta = {"step": str(recipe.step), "recipe": recipe.key, "seed": str(seed), "model": recipe.model}
    try:
        path = export_onnx(model, args.out, metadata=meta)
    except OSError as e:
        raise UsageError(
            f"--out {args.out}: cannot write the ONNX file ({e.strerror}); nothing was written there; "
            "choose another --out"
        ) from None
    print(
        f"wrote {console(path)} ({recipe.label}, seed {seed}, opset {opset_of(path)}, dynamic batch); "
        "onnx.checker passed"
    )
    return EXIT_OK
