"""Ensemble members as Ray tasks (:mod:`indvision.training.ray_members`): the same members as the
sequential path, and a resumed fan-out trains only the unfinished members. Runs on a local
Ray (2 CPUs); skips where the ``[scale]`` extra is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indvision.rundir import Run
from indvision.stages import ingest, train
from indvision.training.ray_members import MEMBER_MODEL, member_dir
from tests.conftest import make_tree, train_tiny

ray = pytest.importorskip("ray", reason="Ray is the optional [scale] extra: "
                                        "pip install -e '.[scale]'")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def ingested(base: Path, tree: Path) -> Run:
    run = Run.create(base, "tiny", seed=4, config={"name": "tiny", "stages": {}},
                     config_hash="test")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree), good_class="ok"),
                                          run), 0.0)
    return run


def val_predictions(run: Run) -> np.ndarray:
    import keras

    from indvision import images
    from indvision.dataset import read_splits

    model = keras.saving.load_model(run.artifact("train", "model"), compile=False)
    rows = [r for r in read_splits(run.artifact("ingest", "splits")) if r["split"] == "val"]
    batch = np.stack([images.load(r["path"], images.InputSpec(40, 40)) for r in rows])
    return model.predict(batch, verbose=0)


@pytest.mark.slow
def test_members_on_ray_equal_the_sequential_members_and_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "data", per_class=24)
    here = train_tiny(ingested(tmp_path / "here", tree), epochs=4, ensemble=2)
    there = train_tiny(ingested(tmp_path / "ray", tree), epochs=4, ensemble=2, ray="local")
    out = capsys.readouterr().out
    assert "2 ensemble member(s) as Ray tasks, 1 CPU(s) each" in out
    want, got = val_predictions(here), val_predictions(there)
    # the same seeds and data; only TensorFlow's thread count differs (1 in a task), which
    # reorders float sums
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert (got.argmax(1) == want.argmax(1)).all()

    # a fan-out killed before member 2 finished: only member 2 trains again
    (member_dir(there.stage_dir("train"), 2) / MEMBER_MODEL).unlink()
    config = train.Config(backbone="small_cnn", weights="none", height=40, width=40,
                          batch_size=8, workers=1, ensemble=2, ray="local",
                          head_steps=4 * (len(list((tmp_path / "data").rglob("*.png"))) // 8))
    train.run(config, there)
    out = capsys.readouterr().out
    assert "ensemble member 1 finished earlier" in out
    assert "1 ensemble member(s) as Ray tasks" in out
