"""``tinymnist evaluate``: test accuracy of an exported model through onnxruntime."""

from __future__ import annotations

from tinymnist.commands import _args
from tinymnist.errors import EXIT_OK


def add_parser(sub) -> None:
    v = sub.add_parser("evaluate", help="test accuracy of an exported model through onnxruntime")
    v.add_argument("--onnx", required=True, help="the .onnx file written by `export`")
    _args.add_data_root(v)
    v.add_argument("--threads", type=_args.threads, help="onnxruntime intra-op threads (default: its own)")


def run(args) -> int:
    from tinymnist.errors import require

    require("onnxruntime", "evaluate")
    import numpy as np

    from tinymnist.data import load_mnist
    from tinymnist.export import check_io, onnx_logits, onnx_session

    session = onnx_session(args.onnx, args.threads)
    check_io(session, args.onnx)
    data = load_mnist(args.data_root, "cpu")
    pred = onnx_logits(session, data.test_x).argmax(1)
    acc = 100.0 * float(np.mean(pred == data.test_y.numpy()))
    print(f"{args.onnx}: test accuracy {acc:.2f}% on {len(pred):,} images (onnxruntime {session.get_providers()[0]})")
    return EXIT_OK
