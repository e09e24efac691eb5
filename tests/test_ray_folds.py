"""Training fan-out on Ray (:mod:`indvision.ray_folds`): ``--folds K --ray`` makes the same folds
as the sequential path — the same splits, the same trained models — each fold a Ray task.
Runs on a local Ray (2 CPUs); skips where the ``[scale]`` extra is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indvision import pipeline
from indvision.rundir import Run
from tests.conftest import write_pipeline

ray = pytest.importorskip("ray", reason="Ray is the optional [scale] extra: "
                                        "pip install -e '.[scale]'")

TINY_TRAIN = """name: mini
seed: 3
stages:
  ingest: {good_class: ok, min_per_class: 6}
  train: {backbone: small_cnn, weights: none, height: 32, width: 32, batch_size: 8,
          head_steps: 12, workers: 1, tensorboard: false, probe: false}
"""


def fold_runs(out: Path) -> dict[int, Run]:
    found = {}
    for manifest in (out / "mini").glob("*/manifest.json"):
        run = Run.open(manifest.parent)
        report = json.loads(run.artifact("ingest", "report").read_text())
        found[report["fold"]] = run
    return found


def val_predictions(run: Run) -> np.ndarray:
    import keras

    from indvision import images
    from indvision.dataset import read_splits

    model = keras.saving.load_model(run.artifact("train", "model"), compile=False)
    spec = images.InputSpec(32, 32)
    rows = [r for r in read_splits(run.artifact("ingest", "splits")) if r["split"] == "val"]
    return model.predict(np.stack([images.load(r["path"], spec) for r in rows]), verbose=0)


@pytest.mark.slow
def test_folds_on_ray_equal_the_sequential_folds(tmp_path: Path, tiny_tree: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    mini = write_pipeline(tmp_path / "mini.yaml", TINY_TRAIN)
    common = [str(mini), "--data", str(tiny_tree), "--folds", "2"]
    assert pipeline.main([*common, "--out", str(tmp_path / "here")]) == 0
    try:
        assert pipeline.main([*common, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    finally:
        ray.shutdown()
    assert "2 fold(s) on Ray, 1 CPU(s) each" in capsys.readouterr().out
    here, there = fold_runs(tmp_path / "here"), fold_runs(tmp_path / "ray")
    assert sorted(here) == sorted(there) == [0, 1]
    for fold in (0, 1):
        a, b = here[fold], there[fold]
        assert (a.artifact("ingest", "splits").read_bytes()
                == b.artifact("ingest", "splits").read_bytes())
        # the same seed and data; only TensorFlow's thread count differs (1 in the task, the
        # machine's here), which reorders float sums: measured 1e-4 apart after training
        want, got = val_predictions(a), val_predictions(b)
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert (got.argmax(1) == want.argmax(1)).all()
    (summary,) = (tmp_path / "ray" / "mini" / "folds").glob("*/summary.json")
    assert [r["status"] for r in json.loads(summary.read_text())["rows"]] == ["done", "done"]
