"""The linear probe: its head reproduces the regression; fine-tuning that only hurts returns it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indvision import dataset, images
from indvision.rundir import Run
from indvision.stages import ingest, train
from indvision.training.phases import preferred_start
from indvision.training.probe import fit_probe, folds_for
from tests.conftest import SHARED_WEIGHTS, make_tree

sklearn = pytest.importorskip("sklearn")


def _features(n_classes: int, n: int = 90, dims: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    centres = rng.normal(0, 1, (n_classes, dims))
    features = np.abs(centres[labels] + rng.normal(0, 1.2, (n, dims))) * 3  # ReLU-like, scaled
    features[:, 0] = 2.0  # a dead unit: constant
    return features, labels


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_probe_as_head_weights_predicts_what_the_regression_predicts(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _features(n_classes)
    probe = fit_probe(features, labels, n_classes, seed=0)
    assert probe.kernel.shape == (12, n_classes) and probe.bias.shape == (n_classes,)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe.info["C"],
                                                                   max_iter=3000))
    reference.fit(features, labels)
    np.testing.assert_allclose(probe.scores(features), reference.predict_proba(features),
                               atol=1e-3)  # two lbfgs runs, tol 1e-4
    assert probe.info["C_chosen_by"].startswith("5-fold")


def test_too_few_objects_per_class_skips_cross_validation() -> None:
    labels = np.array([0, 0, 0, 1])
    assert folds_for(labels, np.arange(4)) == 0
    # three views of one object are one object: class 0 cannot be split into folds
    assert folds_for(np.array([0, 0, 0, 1, 1, 1]), np.array(list("aaabbc"))) == 0
    assert folds_for(np.arange(40) % 2, np.arange(40)) == 5
    probe = fit_probe(np.eye(4) * 3, labels, 2)
    assert "too few" in probe.info["C_chosen_by"]


def _ingested(tmp_path: Path) -> Run:
    tree = make_tree(tmp_path / "data", per_class=16, size=48, seed=2)
    run = Run.create(tmp_path / "exports", "probe", seed=0, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree)), run), 0.0)
    return run


def _pixels(run: Run, split: str, spec: images.InputSpec) -> np.ndarray:
    rows = dataset.rows_of(dataset.read_splits(run.artifact("ingest", "splits")), split)
    return np.stack([images.load(r["path"], spec) for r in rows]).astype(np.float32)


def _settings(**changes: object) -> train.Config:
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"{SHARED_WEIGHTS} is absent: pretrained features (the offline MobileNetV2 "
                    "weights in ../shared/weights) are what a probe is for")
    return train.Config(**{"weights": str(SHARED_WEIGHTS), "height": 64, "width": 64,
                           "batch_size": 8, "workers": 1, "tensorboard": False,
                           "unfreeze_top_layers": 40, **changes})


@pytest.mark.slow
def test_the_head_starts_from_the_probe_and_a_probe_only_model_is_the_probe(
        tmp_path: Path) -> None:
    import keras

    from indvision.training.phases import pooled_features

    run = _ingested(tmp_path)
    cfg = _settings(finetune_steps=0)
    outputs = train.run(cfg, run)
    assert {"model", "probe"} <= set(outputs)
    info = json.loads(outputs["info"].read_text())
    assert info["phases"] == {} and info["probe"]["n_train"] == 36
    model = keras.models.load_model(outputs["model"])
    probe_model = keras.models.load_model(outputs["probe"])
    x = _pixels(run, "test", cfg.input_spec)
    np.testing.assert_allclose(model.predict(x, verbose=0), probe_model.predict(x, verbose=0),
                               atol=1e-6)
    # ... and what the regression itself says on the same frozen features
    from indvision.training.batches import Feed, load_splits

    rows = dataset.read_splits(run.artifact("ingest", "splits"))
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    splits = load_splits(cfg, classes, dataset.rows_of(rows, "train"),
                         dataset.rows_of(rows, "val"), len(rows))
    feed = Feed.build(cfg, len(classes), splits, None, None)
    features = pooled_features(probe_model, feed)
    groups = np.array([r["group"] for r in feed.train.rows])
    refit = fit_probe(features, feed.train.labels, len(classes), groups, feed.class_weight,
                      seed=run.seed)
    train_x = _pixels(run, "train", cfg.input_spec)
    np.testing.assert_allclose(probe_model.predict(train_x, verbose=0), refit.scores(features),
                               atol=1e-4)


@pytest.mark.slow
def test_fine_tuning_that_destroys_the_features_returns_the_probe(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import keras

    run = _ingested(tmp_path)
    cfg = _settings(finetune_steps=12, finetune_learning_rate=1.0, patience_steps=0)
    run.start_stage("train")
    outputs = train.run(cfg, run)
    info = json.loads(outputs["info"].read_text())
    finetune = info["phases"]["finetune"]
    assert finetune["epochs_run"] == 3  # it did fine-tune (and its epochs are in the history)
    assert finetune["kept_start"] is True and finetune["best_epoch"] == -1
    assert finetune["best_val_accuracy"] == finetune["start"]["val_accuracy"]
    assert info["probe"]["val_accuracy"] == finetune["start"]["val_accuracy"]
    assert "keeping the start" in capfd.readouterr().out
    model = keras.models.load_model(outputs["model"])
    probe_model = keras.models.load_model(outputs["probe"])
    x = _pixels(run, "val", cfg.input_spec)
    np.testing.assert_allclose(model.predict(x, verbose=0), probe_model.predict(x, verbose=0),
                               atol=1e-6)
    leftovers = {p.name for p in (run.root / "train").iterdir()} - {
        "model.keras", "probe.keras", "input_spec.json", "history.csv", "curves.png",
        "train_info.json", train.STATE}
    assert not leftovers  # start and best-weights files are cleaned up

    # evaluate measures the probe beside the final model: here they are one, so nothing gained
    from tests.conftest import evaluate_tiny

    run.finish_stage("train", outputs, 0.0)
    evaluate_tiny(run)
    metrics = json.loads(run.artifact("evaluate", "metrics").read_text())
    probe = metrics["probe"]
    assert probe["gained_errors"] == {"val": 0, "test": 0}
    assert probe["test"]["errors"] == metrics["test"]["errors"]
    assert probe["val"]["n"] == metrics["n_val"] and probe["test_unit"] == "test"
    report = run.artifact("evaluate", "report").read_text()
    assert "Fine-tuning gained 0 errors on validation and 0 on test" in report


def test_a_phase_starts_from_the_best_epoch_unless_its_start_makes_fewer_errors() -> None:
    def measured(*accuracies: float) -> list[dict[str, float]]:
        return [{"val_accuracy": a, "val_loss": 1.0} for a in accuracies]

    assert preferred_start(measured(0.80)) == 0
    assert preferred_start(measured(0.80, 0.80)) == 0  # a tie goes to the fine-tuned weights
    assert preferred_start(measured(0.75, 0.80)) == 1  # the probe made fewer errors
    assert preferred_start(measured(0.90, 0.80)) == 0


def _two_view_run(tmp_path: Path) -> Run:
    """Ingested objects of two views (``<id>_a``, ``<id>_b``); a scratch shows in view a only."""
    import cv2

    from tests.conftest import draw_tiny

    root = tmp_path / "data"
    for c, label in enumerate(("ok", "scratch")):
        (root / label).mkdir(parents=True)
        for i in range(14):
            for view, drawn in (("a", label), ("b", "ok")):
                image = draw_tiny(drawn, np.random.default_rng([c, i, ord(view)]), 48)
                cv2.imwrite(str(root / label / f"{c}{i:03d}_{view}.png"), image)
    run = Run.create(tmp_path / "exports", "objects", seed=0, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(root),
                                                        group_regex=r"^(\d+)_",
                                                        good_class="ok"), run), 0.0)
    return run


@pytest.mark.slow
def test_an_objects_phase_after_destructive_fine_tuning_falls_back_to_the_probe(
        tmp_path: Path) -> None:
    import keras

    run = _two_view_run(tmp_path)
    cfg = _settings(finetune_steps=6, object_steps=4, finetune_learning_rate=1.0,
                    patience_steps=0)
    run.start_stage("train")
    outputs = train.run(cfg, run)
    phases = json.loads(outputs["info"].read_text())["phases"]
    finetune, objects = phases["finetune"], phases["objects"]
    # fine-tuning is not the last phase: it hands on its best epoch, worse than its start or not
    assert finetune["kept_start"] is False and finetune["best_epoch"] >= 0
    assert finetune["start"]["probe"] is True
    # the objects phase measured both on parcels-like objects and began from the better one
    best_epoch, probe = objects["start"]["candidates"]
    assert not best_epoch["probe"] and probe["probe"]
    assert best_epoch["val_accuracy"] < probe["val_accuracy"]  # lr 1.0 destroyed the features
    assert objects["start"]["probe"] is True and objects["kept_start"] is True
    model = keras.models.load_model(outputs["model"])
    probe_model = keras.models.load_model(outputs["probe"])
    x = _pixels(run, "val", cfg.input_spec)
    np.testing.assert_allclose(model.predict(x, verbose=0), probe_model.predict(x, verbose=0),
                               atol=1e-6)
    assert not list((run.root / "train").glob("*.npz"))  # every candidate file cleaned up
