"""The anomaly pipeline end to end on tiny generated images: good-only fitting, the threshold
at 0.5, exported scores and maps equal to Keras', maps that point at the defect, and the edge
(predict --heatmaps, evaluate with AUROC) — all without TensorFlow on the device side."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import config, pipeline
from indvision.dataset import read_splits
from indvision.edge import EdgeClassifier
from indvision.edge.cli import main as edge_main
from indvision.edge.evaluate import evaluate_tree
from indvision.errors import IndvisionError
from tests.conftest import write_pipeline

ANOMALY_PIPELINE = """
name: tinyanomaly
seed: 5
stages:
  ingest: {good_class: ok, good_only: true}
  fit: {weights: none, height: 64, width: 64, bank_size: 400}
  evaluate: {}
  export: {formats: [onnx, tflite], keep_per_class: 0}
  verify: {}
"""


@pytest.fixture(scope="module")
def fitted_anomaly_run(tmp_path_factory: pytest.TempPathFactory, tiny_tree_shared: Path):
    base = tmp_path_factory.mktemp("anomaly")
    spec = config.load_pipeline(str(write_pipeline(base / "a.yaml", ANOMALY_PIPELINE)),
                                data=str(tiny_tree_shared))
    return pipeline.run_pipeline(spec, base / "exports")


def _bundle_meta(run) -> dict:
    return json.loads((run.root / "bundle" / "model.json").read_text())


def test_only_good_images_are_fitted_and_the_threshold_sits_at_half(fitted_anomaly_run) -> None:
    run = fitted_anomaly_run
    rows = read_splits(run.root / "ingest" / "splits.csv")
    assert {r["label"] for r in rows if r["split"] == "train"} == {"ok"}
    report = json.loads((run.root / "fit" / "fit_report.json").read_text())
    assert report["train_images"] == sum(r["split"] == "train" for r in rows)
    inside = [side - 2 * report["border"] for side in report["grid"]]  # the border is not fitted
    assert report["border"] == 2 and report["pool_patches"] == report["train_images"] * (
        inside[0] * inside[1])
    meta = _bundle_meta(run)
    assert meta["model_kind"] == "anomaly" and meta["classes"] == ["ok", "anomaly"]
    assert meta["map"]["border"] == report["border"]  # the device knows what is not judged
    assert meta["decision"]["threshold"] == 0.5
    raw_threshold = meta["anomaly"]["threshold"]["raw_threshold"]
    assert raw_threshold == report["threshold"]["raw_threshold"] > 0
    edge = EdgeClassifier(run.root / "bundle")
    val = report["val"]  # raw worst-patch distances fit chose the threshold on
    results = edge.predict([v["path"] for v in val])
    for item, result in zip(val, results, strict=True):
        if abs(item["raw"] - raw_threshold) > 1e-4 * raw_threshold:  # not on the knife edge
            assert (result["scores"]["anomaly"] > 0.5) == (item["raw"] > raw_threshold)


def test_the_exported_model_matches_keras_on_scores_and_maps(fitted_anomaly_run) -> None:
    from indvision import models

    run = fitted_anomaly_run
    formats = json.loads((run.root / "verify" / "parity.json").read_text())["formats"]
    for key in ("onnx", "tflite"):  # every float file, scores and maps
        assert formats[key]["max_abs_diff"] <= 1e-4 and formats[key]["shippable"], key
        assert formats[key]["maps"]["max_abs_diff"] <= 1e-4, key
    parity = formats["onnx"]
    for runtime in ("onnxruntime", "opencv"):  # the nearest-patch graph runs on both
        assert parity["runtimes"][runtime]["passed"] is True, runtime
    edge = EdgeClassifier(run.root / "bundle")
    paths = [r["path"] for r in read_splits(run.root / "ingest" / "splits.csv")][:5]
    batch = np.stack([edge.load(p) for p in paths])
    probabilities, maps = models.load_model(run.root / "fit" / "model.keras").predict(
        batch.astype(np.float32), verbose=0)
    results = edge.predict(paths, heatmap=True)
    np.testing.assert_allclose([r["scores"]["anomaly"] for r in results], probabilities[:, 1],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.stack([r["map"] for r in results]), maps, rtol=1e-4,
                               atol=1e-6)


def test_the_map_peaks_inside_a_drawn_defect(fitted_anomaly_run) -> None:
    edge = EdgeClassifier(fitted_anomaly_run.root / "bundle")
    rng = np.random.default_rng(11)
    image = np.clip(rng.normal(130, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    cv2.circle(image, (44, 20), 7, (20, 20, 20), -1)  # a dark spot, top right
    result = edge.predict(image, heatmap=True)
    grid = result["map"]
    y, x = np.unravel_index(np.argmax(grid), grid.shape)
    cell = 64 / grid.shape[0]
    centre = ((x + 0.5) * cell, (y + 0.5) * cell)
    assert np.hypot(centre[0] - 44, centre[1] - 20) <= 7 + cell, (centre, grid.shape)
    assert result["label"] == "anomaly"


def test_edge_evaluate_reports_auroc_and_recall_per_folder(fitted_anomaly_run,
                                                           tiny_tree_shared: Path) -> None:
    report = evaluate_tree(EdgeClassifier(fitted_anomaly_run.root / "bundle"), tiny_tree_shared)
    assert set(report["per_folder"]) == {"ok", "scratch", "spot"}
    assert report["per_folder"]["spot"]["n"] == 30
    assert 0.5 < report["auroc"] <= 1.0
    for key in ("accuracy", "defect_recall", "false_reject_rate"):
        assert key in report


def test_heatmaps_from_the_cli_and_the_opencv_runtime(fitted_anomaly_run, tiny_tree_shared: Path,
                                                  tmp_path: Path, capsys) -> None:
    bundle = str(fitted_anomaly_run.root / "bundle")
    paths = sorted(str(p) for p in (tiny_tree_shared / "spot").iterdir())[:3]
    assert edge_main(["predict", bundle, *paths, "--heatmaps", str(tmp_path / "maps"),
                      "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [Path(line["heatmap"]) for line in lines]
    assert len(set(written)) == 3 and all(p.is_file() for p in written)
    spec = json.loads((Path(bundle) / "model.json").read_text())["input_spec"]
    assert spec["height"] == 48  # 64 asked for, the 48 px images are not upsampled
    assert cv2.imread(str(written[0])).shape[:2] == (48, 48)  # the image as the model saw it
    on_opencv = EdgeClassifier(bundle, runtime="opencv").predict(paths, heatmap=False)
    assert [r["label"] for r in on_opencv] == [line["label"] for line in lines]
    with pytest.raises(IndvisionError, match="cannot compute maps"):
        EdgeClassifier(bundle, runtime="opencv").predict(paths[0], heatmap=True)
