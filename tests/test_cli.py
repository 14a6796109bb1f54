import json
import os

import numpy as np
import pytest

from tinymnist.cli import main
from tinymnist.data import FILES, DataError, load_mnist, write_idx


def test_models_lists_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "step1" in out and "147,658" in out and "8,952" in out


def test_dry_run_smoke(mnist_root, tmp_path, capsys):
    code = main(
        [
            "train",
            "--step",
            "4",
            "--seeds",
            "0",
            "--dry-run",
            "--data-root",
            str(mnist_root),
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    r = json.loads((tmp_path / "step4" / "seed0.json").read_text())
    assert r["status"] == "completed" and len(r["epochs"]) == 1 and r["test_images"] == 500
    assert "NOT JUDGED (smoke run)" in capsys.readouterr().out


@pytest.mark.parametrize("step", [1, 2, 3])
def test_dry_run_every_step(mnist_root, tmp_path, step):
    assert (
        main(
            [
                "train",
                "--step",
                str(step),
                "--seeds",
                "1",
                "--dry-run",
                "--data-root",
                str(mnist_root),
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--step", "9"], "unknown step 9"),
        (["train", "--step", "x"], "'x' is not an integer"),
        (["train", "--step", "4", "--epochs", "0"], "0 must be a positive integer"),
        (["train", "--step", "4", "--epochs", "-3"], "-3 must be a positive integer"),
        (["train", "--step", "4", "--batch-size", "0"], "0 must be a positive integer"),
        (["train", "--step", "4", "--seeds", "a"], "'a' is not an integer"),
        (["train", "--step", "4", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["train"], "give --step N or --recipe FILE.toml (or both)"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    # One line, like every other error: argparse's usage block is a --help away, named in the line.
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith("tinymnist") and "error:" in err


def test_an_interrupt_while_the_data_loads_says_how_to_resume(mnist_root, tmp_path, monkeypatch, capsys):
    import tinymnist.data
    from tests.conftest import interrupt_on_call

    monkeypatch.setattr(tinymnist.data, "load_mnist", interrupt_on_call(tinymnist.data.load_mnist, 1))
    argv = ["train", "--step", "4", "--seeds", "0", "--data-root", str(mnist_root), "--out", str(tmp_path / "o")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted; no result was being written. Resume with: " in err and err.rstrip().endswith(" --resume")
    assert main(["models", "--bogus"]) == 2 and "Resume with" not in capsys.readouterr().err  # said once, not after


def test_cuda_without_cuda_exits_2(mnist_root, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert (
        main(["train", "--step", "4", "--device", "cuda", "--data-root", str(mnist_root), "--out", str(tmp_path)]) == 2
    )
    assert "CUDA is not available" in capsys.readouterr().err


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made under a file, whoever runs the test (root too)
    assert main(["train", "--step", "4", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "argument --out:" in err and "cannot create or write this folder" in err and "choose another folder" in err


# --- bad data: each broken file is built in a temporary folder ---------------------------------------


def _fake_mnist(root, n_train=60000, n_test=10000, **override):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays.update(override)
    for key, arr in arrays.items():
        if arr is not None:
            write_idx(raw / FILES[key][0], arr)
    return raw


def test_fake_dataset_loads(tmp_path):
    _fake_mnist(tmp_path)
    d = load_mnist(tmp_path, download=False)
    assert d.train_x.shape == (60000, 1, 28, 28)


def test_missing_files(tmp_path, capsys):
    _fake_mnist(tmp_path, test_labels=None)
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.*point --data-root or MNIST_ROOT"):
        load_mnist(tmp_path, download=False)
    assert (
        main(
            [
                "train",
                "--step",
                "4",
                "--data-root",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "nowhere" in err and "Traceback" not in err


def test_truncated_file(tmp_path):
    raw = _fake_mnist(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        load_mnist(tmp_path, download=False)


def test_wrong_magic(tmp_path):
    raw = _fake_mnist(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float32 type code
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: wrong magic number 0x00000d01"):
        load_mnist(tmp_path, download=False)


def test_images_are_labels(tmp_path):
    raw = _fake_mnist(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: wrong magic number 0x00000801"):
        load_mnist(tmp_path, download=False)


def test_count_mismatch(tmp_path):
    _fake_mnist(tmp_path, train_labels=np.zeros(59999, np.uint8))
    with pytest.raises(DataError, match="60000 images but .*train-labels-idx1-ubyte holds 59999 labels"):
        load_mnist(tmp_path, download=False)


def test_wrong_dimensions(tmp_path):
    _fake_mnist(tmp_path, test_images=np.zeros((10000, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: images are \(32, 32\) pixels, expected 28x28"):
        load_mnist(tmp_path, download=False)


def test_label_out_of_range(tmp_path, capsys):
    labels = np.zeros(10000, np.uint8)
    labels[1234] = 11
    _fake_mnist(tmp_path, test_labels=labels)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: label 11 at index 1234 is outside 0-9"):
        load_mnist(tmp_path, download=False)
    out = tmp_path / "out"
    assert main(["train", "--step", "2", "--data-root", str(tmp_path), "--out", str(out), "--device", "cpu"]) == 2
    assert "outside 0-9" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.json"))  # stopped before any training


def test_garbage_gz(tmp_path):
    raw = _fake_mnist(tmp_path, train_labels=None)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: cannot be read"):
        load_mnist(tmp_path, download=False)


def test_set_overrides_are_recorded(mnist_root, tmp_path):
    assert (
        main(
            [
                "train",
                "--step",
                "4",
                "--seeds",
                "0",
                "--dry-run",
                "--data-root",
                str(mnist_root),
                "--out",
                str(tmp_path),
                "--quiet",
                "--set",
                "lr=0.05",
                "--set",
                'model_kwargs={"dropout": 0.1}',
            ]
        )
        == 0
    )
    r = json.loads((tmp_path / "step4" / "seed0.json").read_text())
    assert r["recipe"]["lr"] == 0.05 and r["recipe"]["model_kwargs"] == {"dropout": 0.1}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("lr=x", "lr takes a float"),
        ("step=5", "expected KEY=VALUE with KEY one of"),
        ("batch_size=1.5", "batch_size takes a int"),
        ("model=nope", "unknown model 'nope'"),
        ('model_kwargs={"width": 3}', "unexpected keyword argument 'width'"),
    ],
)
def test_bad_set_exits_2_before_data(assignment, message, tmp_path, capsys):
    # --data-root points nowhere: the error must be about --set, found before any data is read.
    assert (
        main(
            ["train", "--step", "4", "--set", assignment, "--data-root", str(tmp_path / "none"), "--out", str(tmp_path)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pipelines_benchmark_needs_uncompressed_files(mnist_root, tmp_path, capsys):
    import shutil

    from benchmarks.pipelines import main as pipelines_main

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, raw)
    if len(list(raw.iterdir())) < 4:
        pytest.skip("the data folder holds no .gz files to copy")
    assert pipelines_main(["--data-root", str(tmp_path), "--batches", "1", "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gunzip" in err and str(raw) in err


def test_the_training_benchmark_takes_a_users_recipe(mnist_root, tmp_path):
    """Issue 17's gap: `tox -e bench -- --recipe FILE` benchmarks a user's recipe beside the built-in steps."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    recipe = tmp_path / "mine.toml"
    recipe.write_text('name = "mine"\nbase = "step5"\nbatch_size = 32\n')
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_training.py", "-k", "test_train_cpu and mine", "-q"]
    cmd += ["-p", "no:cacheprovider", "--recipe", str(recipe), f"--benchmark-json={out}", "--benchmark-min-rounds=1"]
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "MNIST_ROOT": str(mnist_root)}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["extra_info"]["recipe"] == "mine" and bench["extra_info"]["batch"] == 32
    assert bench["stats"]["median"] > 0


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`tinymnist models | head -1` was an internal error (exit 3, a crash file): a BrokenPipeError."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tinymnist", "train", "--step", "4", "--seeds", "0-999", "--list-jobs"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"[\n"
    proc.stdout.close()  # as head does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b"", err


def test_an_early_interrupt_of_a_bisect_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import tinymnist.commands.bisect as bisect
    from tests.conftest import interrupt_on_call

    monkeypatch.setattr(bisect._args, "seed_list", interrupt_on_call(bisect._args.seed_list, 1))
    assert main(["bisect", "a", "b", "--step", "2", "--store", str(tmp_path / "s")]) == 130
    err = capsys.readouterr().err
    assert "Continue with: " in err and err.rstrip().endswith(f"bisect a b --step 2 --store {tmp_path / 's'}")
