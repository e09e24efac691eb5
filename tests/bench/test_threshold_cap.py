"""bench/threshold_cap.py: with the run's own rate it reproduces evaluate's threshold and test
numbers; with no cap it shows what the escape target alone would have done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench
from tests.stages.conftest import exported_run, trained_run  # noqa: F401


@pytest.fixture(scope="module")
def threshold_cap():
    return load_bench("threshold_cap")


def test_the_capped_row_is_what_evaluate_decided(threshold_cap,
                                                 exported_run: Path) -> None:  # noqa: F811
    from indvision.stages import evaluate

    metrics = json.loads((exported_run / "evaluate" / "metrics.json").read_text())
    rows = threshold_cap.rows_of_run(exported_run, evaluate.Config().max_false_reject_rate)
    model = rows[0]  # the tiny small_cnn has no probe; a probe would be the second row
    assert model["model"] == "model" and len(rows) == 1 + bool(metrics["probe"])
    assert model["threshold, cap"].split()[0] == f"{metrics['threshold']:.4f}"
    test = metrics["test"]
    assert model["cap"] == f"{test['errors']}/{test['n']} ({test['escapes']}, " \
                           f"{test['false_rejects']})"
    assert float(model["threshold, no cap"]) >= float(model["threshold, cap"].split()[0])
    assert model["val good"] == metrics["calibration"]["n_good"]
