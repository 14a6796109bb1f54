"""The README's measured figures are generated from committed files, and its calibration is recomputed here."""

import json

import pytest

from harness import readme
from harness.compare import Thresholds, calibrate
from harness.results import load_results
from harness.summary import summarize
from tests.conftest import REPO


def test_readme_blocks_match_their_files(capsys):
    assert readme.main(["--check"]) == 0, capsys.readouterr().err


def test_the_calibration_recomputes_from_the_committed_results():
    path = REPO / "reports" / "population" / "calibration.json"
    if not path.exists():
        pytest.skip("reports/population/calibration.json not committed yet")
    saved = json.loads(path.read_text())
    cal = saved["calibration"]
    runs = load_results(REPO / "reports" / "population")[saved["step"]]
    values = list(summarize(runs).last_k_by_seed.values())
    again = calibrate(
        values, Thresholds(alpha=cal["alpha"], min_effect=cal["min_effect"]), splits=cal["splits"], seed=cal["seed"]
    )
    assert {str(k): v for k, v in again.rates.items()} == cal["rates"]
    # The design: false alarms at most alpha, plus the sampling error of the splits (binomial, 3 SD).
    n = cal["splits"]
    assert cal["rates"]["0.0"] <= cal["alpha"] + 3 * (cal["alpha"] * (1 - cal["alpha"]) / n) ** 0.5
    assert cal["rates"]["0.1"] >= cal["rates"]["0.05"] >= cal["rates"]["0.0"]
