"""Determinism: two runs with the same seed on the same data give the same split and the same
metrics, within a stated tolerance.

The split is pure numpy seeded by the run (``splits.csv`` must be byte-identical). Training is
seeded too (``keras.utils.set_random_seed``, per-epoch shuffles and per-batch augmentation
seeds), but TensorFlow's CPU kernels (oneDNN) may sum in a different order from one run to the
next, so float results are only promised within a tolerance:

- probabilities, losses and metrics: ``|a - b| <= 1e-4`` absolute (measured on this tiny
  small_cnn pipeline on CPU: bit-identical, max difference 0.0; the bound leaves room for
  oneDNN reduction-order noise, ~1e-7 relative per op, compounding over a few epochs, while
  staying far below anything that moves a decision: a test image is 1/6 = 0.17 of accuracy);
- decided labels: identical.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from indvision import config, pipeline
from tests.conftest import make_tree, write_pipeline

TOLERANCE = 1e-4
PIPELINE = """
name: same
seed: 11
stages:
  ingest: {good_class: ok}
  augment:
    transforms: [{HorizontalFlip: {p: 0.5}}, {RandomBrightnessContrast: {p: 0.5}}]
    preview_per_class: 1
  train: {backbone: small_cnn, weights: none, height: 32, width: 32, batch_size: 8,
          head_steps: 9, patience_steps: 0, workers: 2}
  evaluate: {escape_rate_target: 0.1}
"""


def numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON document, keyed by its path."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in numbers(value, f"{prefix}/{key}")
                .items()}
    if isinstance(data, list):
        return {k: v for i, value in enumerate(data) for k, v in numbers(value, f"{prefix}/{i}")
                .items()}
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return {prefix: float(data)}
    return {}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def compare_csv(a: Path, b: Path, key: str) -> float:
    """Largest numeric difference between two CSVs of the same rows; other cells must match."""
    rows_a, rows_b = csv_rows(a), csv_rows(b)
    assert [r[key] for r in rows_a] == [r[key] for r in rows_b]
    largest = 0.0
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for column, value in row_a.items():
            x, y = as_number(value), as_number(row_b[column])
            if x is None or y is None:
                assert value == row_b[column], (a.name, column, value, row_b[column])
            else:
                largest = max(largest, abs(x - y))
    return largest


@pytest.mark.slow
def test_same_seed_same_data_same_split_and_metrics(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", per_class=12, size=40, seed=2)
    spec = config.load_pipeline(str(write_pipeline(tmp_path / "same.yaml", PIPELINE)), [],
                                data=str(tree))
    first = pipeline.run_pipeline(spec, tmp_path / "a")
    second = pipeline.run_pipeline(spec, tmp_path / "b")

    split_a, split_b = (r.artifact("ingest", "splits") for r in (first, second))
    assert split_a.read_bytes() == split_b.read_bytes()

    metrics_a, metrics_b = (numbers(json.loads(r.artifact("evaluate", "metrics").read_text()))
                            for r in (first, second))
    assert metrics_a.keys() == metrics_b.keys() and metrics_a
    metric_diff = max(abs(metrics_a[k] - metrics_b[k]) for k in metrics_a)
    history_diff = compare_csv(first.artifact("train", "history"),
                               second.artifact("train", "history"), "epoch")
    prediction_diff = compare_csv(first.artifact("evaluate", "predictions"),
                                  second.artifact("evaluate", "predictions"), "path")
    print(f"determinism: max |Δ| metrics {metric_diff:.3g}, history {history_diff:.3g}, "
          f"test probabilities {prediction_diff:.3g} (tolerance {TOLERANCE:g})")
    assert metric_diff <= TOLERANCE
    assert history_diff <= TOLERANCE
    assert prediction_diff <= TOLERANCE
