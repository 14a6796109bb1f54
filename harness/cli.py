"""Command line: ``python -m harness {train,models} ...``; ``main(argv)`` returns the exit code.

Exit codes: 0 every gate passed, 1 a gate failed (or a run diverged), 2 bad usage or bad data,
130 interrupted (Ctrl-C) with the partial results written.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _step(text: str) -> int:
    from harness.recipes import RECIPES

    value = _int(text)
    if value not in RECIPES:
        raise argparse.ArgumentTypeError(f"unknown step {value}; known steps: "
                                         f"{', '.join(map(str, sorted(RECIPES)))}")
    return value


def _writable_dir(text: str) -> Path:
    """Create the folder now and prove it writable, so a bad --out fails before minutes of training."""
    import tempfile

    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot create or write this folder ({e.strerror}); "
                                         "choose another --out") from None
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="tinymnist: tiny CNNs on MNIST, gated.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a step's recipe under fixed seeds and check its gate")
    t.add_argument("--step", type=_step, nargs="+", required=True,
                   help="which steps' recipes, run in order (e.g. --step 1 2 3 4)")
    t.add_argument("--seeds", type=_int, nargs="+", help="seeds to run (default: the recipe's seeds)")
    t.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs (gates assume its own)")
    t.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")
    t.add_argument("--out", type=_writable_dir, default=Path("results"), help="results folder (default results/)")
    t.add_argument("--resume", action="store_true", help="continue each seed from its last epoch checkpoint")
    t.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch of 3 batches, gate not checked")
    t.add_argument("--train-subset", type=_positive_int, metavar="N",
                   help="train on the first N training images only (quick checks; gate not checked)")
    t.add_argument("--test-subset", type=_positive_int, metavar="N",
                   help="evaluate on the first N test images only (quick checks; gate not checked)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="experiment: override a recipe field (JSON value), e.g. --set lr=0.05; recorded in "
                        "the results, gate unchanged")
    t.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")

    sub.add_parser("models", help="list registered models with their parameter counts")

    e = sub.add_parser("export", help="export a trained checkpoint to ONNX (dynamo exporter, dynamic batch)")
    e.add_argument("--step", type=_step, required=True, help="the step the checkpoint was trained for")
    e.add_argument("--checkpoint", required=True, help="results/stepN/seedS.pt written by `train`")
    e.add_argument("--out", required=True, help="where to write the .onnx file")

    v = sub.add_parser("evaluate", help="test accuracy of an exported model through onnxruntime")
    v.add_argument("--onnx", required=True, help="the .onnx file written by `export`")
    v.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")
    v.add_argument("--threads", type=_positive_int, help="onnxruntime intra-op threads (default: its own)")

    r = sub.add_parser("report", help="write REPORT.md and plots from a results folder")
    r.add_argument("results", help="folder with step*/seed*.json (e.g. results/)")
    r.add_argument("--out", type=_writable_dir, required=True, help="folder for REPORT.md and its images")
    r.add_argument("--bench", nargs="*", default=[], help="pytest-benchmark JSON files to add as tables")

    g = sub.add_parser("log", help="experiment log (markdown) from a folder of experiment result folders")
    g.add_argument("experiments", help="folder whose sub-folders are --out folders of `train` runs")
    g.add_argument("--out", required=True, help="markdown file to write, e.g. reports/experiments.md")

    c = sub.add_parser("compare", help="compare two results folders; exit 1 on a regression")
    c.add_argument("baseline", help="results folder of the reference run (e.g. reports/baseline)")
    c.add_argument("new", help="results folder of the run under test")
    c.add_argument("--max-acc-drop", type=float, default=0.10, help="points of last-3 mean accuracy (0.10)")
    c.add_argument("--max-throughput-drop", type=float, default=0.10, help="fraction of throughput (0.10)")
    c.add_argument("--steps", type=_step, nargs="+", help="compare only these steps (default: all found)")
    return p


def cmd_models(args) -> int:
    from models import count_params, create_model, list_models

    for name in list_models():
        print(f"{name:16s} {count_params(create_model(name)):>9,d}")
    return EXIT_OK


def cmd_train(args) -> int:
    from harness.data import load_mnist
    from harness.engine import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    recipes = [_recipe(args, step) for step in args.step]  # bad --set or model: fail before loading data
    data = load_mnist(args.data_root, device)  # validated once, before any training starts
    if args.train_subset or args.test_subset:
        data = data.subset(args.train_subset or len(data.train_x), args.test_subset or len(data.test_x))
    codes = []
    for recipe in recipes:
        code = _train_step(args, recipe, data, device)
        if code == EXIT_INTERRUPTED:
            return code
        codes.append(code)
    if len(codes) > 1:
        failed = [s for s, c in zip(args.step, codes) if c != EXIT_OK]
        smoke = args.dry_run or bool(args.train_subset) or bool(args.test_subset)
        ok = "all smoke runs OK (gates not checked)" if smoke else "all gates PASS"
        print(f"steps {args.step}: " + (f"FAIL (steps {failed})" if failed else ok))
    return max(codes)


def _recipe(args, step: int):
    from dataclasses import replace

    from harness.engine import check_precision
    from harness.recipes import get_recipe, with_overrides
    from models import create_model

    recipe = get_recipe(step)
    if args.batch_size:
        recipe = replace(recipe, batch_size=args.batch_size)
    try:
        recipe = with_overrides(recipe, args.set)
        create_model(recipe.model, **recipe.model_kwargs)  # a bad --set model or model_kwargs fails here
        check_precision(recipe)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    return recipe


def _train_step(args, recipe, data, device) -> int:
    import torch

    from harness.engine import Interrupted, train
    from harness.gates import Verdict, check_seeds
    from harness.stats import Spread

    seeds = tuple(args.seeds) if args.seeds else recipe.seeds
    smoke = args.dry_run or bool(args.train_subset) or bool(args.test_subset)
    epochs = 1 if args.dry_run else args.epochs
    runs = {}
    print(f"step {recipe.step}: {recipe.name} | model {recipe.model} | seeds {list(seeds)} | "
          f"device {device.type} | threads {torch.get_num_threads()}", flush=True)
    for seed in seeds:
        try:
            r = train(recipe, seed, data, device, out_dir=args.out, epochs=epochs, resume=args.resume,
                      max_batches=3 if args.dry_run else None, eval_limit=500 if args.dry_run else None,
                      progress=not args.quiet, gate=not smoke)
        except Interrupted as e:
            done = len(e.result.epochs)
            print(f"\ninterrupted: step {recipe.step} seed {seed} after {done} complete epoch(s); "
                  f"partial results in {e.path}. Resume with: python -m harness train --step {recipe.step} "
                  f"--seeds {' '.join(map(str, seeds))} --out {args.out} --resume"
                  + (f" --epochs {args.epochs}" if args.epochs else ""), file=sys.stderr)
            return EXIT_INTERRUPTED
        runs[seed] = r
        if not args.quiet:
            for e in r.epochs:
                print(f"  seed {seed} epoch {e.epoch:2d}  train {e.train_loss:.4f} {e.train_acc:6.2f}%  "
                      f"test {e.test_loss:.4f} {e.test_acc:6.2f}%  lr {e.lr:.5f}  {e.seconds:5.1f}s "
                      f"({e.images_per_second:,.0f} img/s)")
        last = r.epochs[-1].test_acc if r.epochs else float("nan")
        mark = ("smoke" if smoke else "PASS") if r.gate["passed"] else "FAIL"
        extra = f" diverged at {r.diverged_at}" if r.diverged_at else ""
        print(f"seed {seed}: {r.status}{extra}, {r.params:,} params, final test {last:.2f}%, "
              f"{r.wall_seconds:.0f}s -> {mark}", flush=True)
    verdicts = {s: Verdict(**r.gate) for s, r in runs.items()}
    finals = {s: r.epochs[-1].test_acc for s, r in runs.items() if r.epochs}
    step_verdict = (Verdict(all(v.passed for v in verdicts.values()), []) if smoke else
                    check_seeds(recipe.expect, recipe.step, finals, verdicts, recipe.seeds))
    if finals:
        print(f"step {recipe.step}: final test accuracy over seeds {sorted(finals)}: "
              f"{Spread.of(finals.values()).fmt()}")
    for reason in step_verdict.reasons:
        print(f"GATE FAILED: {reason}", file=sys.stderr)
    verdict = ("SMOKE OK (gate not checked)" if step_verdict.passed else "SMOKE FAILED") if smoke \
        else ("PASS" if step_verdict.passed else "FAIL")
    print(f"step {recipe.step}: {verdict}", flush=True)
    return EXIT_OK if step_verdict.passed else EXIT_GATE


def cmd_export(args) -> int:
    from harness.export import export_onnx, load_checkpoint, opset_of

    if not args.out.endswith(".onnx"):
        raise UsageError(f"--out {args.out}: give a path ending in .onnx")
    model, recipe, seed = load_checkpoint(args.checkpoint, args.step)
    path = export_onnx(model, args.out, metadata={"step": str(recipe.step), "seed": str(seed),
                                                    "model": recipe.model})
    print(f"wrote {path} (step {recipe.step}, seed {seed}, opset {opset_of(path)}, dynamic batch); "
          "onnx.checker passed")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    import numpy as np

    from harness.data import load_mnist
    from harness.export import onnx_logits, onnx_session

    session = onnx_session(args.onnx, args.threads)
    data = load_mnist(args.data_root, "cpu")
    pred = onnx_logits(session, data.test_x).argmax(1)
    acc = 100.0 * float(np.mean(pred == data.test_y.numpy()))
    print(f"{args.onnx}: test accuracy {acc:.2f}% on {len(pred):,} images (onnxruntime "
          f"{session.get_providers()[0]})")
    return EXIT_OK


def cmd_report(args) -> int:
    from harness.report import build_report

    for p in [args.results, *args.bench]:
        if not Path(p).exists():
            raise UsageError(f"{p}: no such file or folder")
    try:
        path = build_report(args.results, args.out, args.bench)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{args.results}: a results file cannot be read ({e}); regenerate it with "
                         "python -m harness train") from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_log(args) -> int:
    from harness.experiments import build_log

    if not Path(args.experiments).is_dir():
        raise UsageError(f"{args.experiments}: no such folder")
    try:
        path = build_log(args.experiments, args.out)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from harness.compare import compare

    for p in (args.baseline, args.new):
        if not Path(p).is_dir():
            raise UsageError(f"{p}: no such results folder")
    try:
        lines, regressions = compare(args.baseline, args.new, args.max_acc_drop, args.max_throughput_drop,
                                     args.steps)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"a results file cannot be read ({e}); regenerate it with python -m harness train") \
            from None
    print("\n".join(lines))
    for reg in regressions:
        print(f"REGRESSION: {reg}", file=sys.stderr)
    print(f"{len(regressions)} regression(s)" if regressions else "no regression")
    return EXIT_GATE if regressions else EXIT_OK


COMMANDS = {"train": cmd_train, "models": cmd_models, "export": cmd_export, "evaluate": cmd_evaluate,
            "report": cmd_report, "compare": cmd_compare, "log": cmd_log}


def main(argv: list[str] | None = None) -> int:
    from harness.data import DataError
    from harness.export import ExportError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error
        return int(e.code or 0)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, ExportError) as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
