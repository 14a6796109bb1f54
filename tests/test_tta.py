"""Test-time augmentation (issue 33, lead 4): the shifts it averages, and ``tools.tta``, which measures it on the
validation split only and refuses weights that are not a run's final ones."""

import json

import pytest
import torch

from tests.conftest import overriding
from tinymnist.engine import TTA_SHIFTS, shifted


def test_a_shift_moves_the_image_and_fills_with_its_border():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    down = shifted(x, 1, 0)
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and torch.equal(down[..., 0, :], x[..., 0, :])
    left = shifted(x, 0, -1)
    assert torch.equal(left[..., :, :-1], x[..., :, 1:]) and torch.equal(left[..., :, -1], x[..., :, -1])
    assert shifted(x, 0, 0) is x and len(set(TTA_SHIFTS)) == 5 and (0, 0) in TTA_SHIFTS


def test_tta_is_measured_on_validation_from_a_runs_final_weights(tmp_path, mnist_root, capsys):
    from tinymnist.cli import main
    from tools import tta

    out = tmp_path / "sweep"
    argv = ["train", "--step", "2", "--dry-run", "--seeds", "0-1", "--val-split", "300", "--out", str(out)]
    assert main([*argv, "--data-root", str(mnist_root)]) == 0
    capsys.readouterr()
    report = tmp_path / "tta.json"
    base = [str(out), "--data-root", str(mnist_root), "--out", str(report)]
    assert tta.main([*base, "--val-split", "300", "--markdown", str(tmp_path / "TTA.md")]) == 0
    got = json.loads(report.read_text())
    recorded = json.loads((out / "step2" / "seed0.json").read_text())["epochs"][-1]["val_acc"]
    run = got["runs"][0]
    assert run["plain"] == recorded and 0 <= run["tta"] <= 100 and got["steps"]["2"]["n"] == 2
    assert "| 2 | step2 | 2 |" in (tmp_path / "TTA.md").read_text()
    # the seventh sweep: dry runs' weights are measured, never judged; a run's record is never an output; one
    # file is not two outputs; a split MNIST cannot hold is a usage error, not a traceback
    assert got["steps"]["2"]["smoke"] and got["steps"]["2"]["chosen"] is None
    assert "not judged (smoke runs)" in (tmp_path / "TTA.md").read_text()
    record = out / "step2" / "seed1.json"
    kept = record.read_bytes()
    for extra in (["--out", str(record)], ["--markdown", str(report)]):
        assert tta.main(overriding([*base, "--val-split", "300"], *extra)) == 2
        assert capsys.readouterr().err.count("\n") == 1 and record.read_bytes() == kept
    with pytest.raises(SystemExit) as bad:
        tta.main([*base, "--val-split", "70000"])
    err = capsys.readouterr().err  # one line, as tinymnist's own usage errors (the eighth sweep)
    assert bad.value.code == 2 and "1-59,999" in err and err.count("\n") == 1, err
    # another split than the run's: refused by name, nothing written
    report.unlink()
    assert tta.main([*base, "--val-split", "400"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed0.pt: its run held out 300 validation images" in err and not report.exists()
    # weights that are not the run's final ones (here: another seed's) are refused, not measured
    (out / "step2" / "seed0.pt").write_bytes((out / "step2" / "seed1.pt").read_bytes())
    assert tta.main([*base, "--val-split", "300"]) == 2
    err = capsys.readouterr().err
    assert "seed0.pt: its weights score" in err and "not the run's final weights" in err and not report.exists()


def test_a_claims_tta_row_is_measured_on_test_and_decides_nothing(tmp_path, mnist_root, capsys):
    from tinymnist.cli import main
    from tools import tta

    out = tmp_path / "claim"
    argv = ["train", "--step", "2", "--dry-run", "--seeds", "300", "--out", str(out), "--data-root", str(mnist_root)]
    assert main(argv) == 0
    report = tmp_path / "tta.json"
    base = [str(out), "--data-root", str(mnist_root), "--out", str(report), "--markdown", str(tmp_path / "T.md")]
    assert tta.main([*base, "--claim"]) == 0
    got = json.loads(report.read_text())
    recorded = json.loads((out / "step2" / "seed300.json").read_text())["epochs"][-1]["test_acc"]
    assert got["on"] == "test" and got["runs"][0]["plain"] == recorded and got["steps"]["2"]["chosen"] is None
    assert "it decides nothing" in (tmp_path / "T.md").read_text()
    capsys.readouterr()
    assert tta.main([*base, "--val-split", "300"]) == 2  # a claim's run has no split to choose on
    assert "held out 0 validation images" in capsys.readouterr().err
