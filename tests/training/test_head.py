"""A head phase fits the head alone on the frozen backbone's pooled features, computed once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indvision import dataset
from indvision.rundir import Run
from indvision.stages import ingest, train
from tests.conftest import make_tree

keras = pytest.importorskip("keras")


def _feed(tmp_path: Path, cfg: train.Config):
    from indvision.training.batches import Feed, load_splits

    tree = make_tree(tmp_path / "data", per_class=12, size=40, seed=3)
    run = Run.create(tmp_path / "exports", "head", seed=0, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree)), run), 0.0)
    rows = dataset.read_splits(run.artifact("ingest", "splits"))
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    splits = load_splits(cfg, classes, dataset.rows_of(rows, "train"),
                         dataset.rows_of(rows, "val"), len(rows))
    return run, Feed.build(cfg, len(classes), splits, None, None)


@pytest.mark.slow
def test_the_head_phase_trains_the_head_alone_on_the_classifiers_own_features(
        tmp_path: Path) -> None:
    from indvision import models
    from indvision.training import records
    from indvision.training.phases import fit_phase, head_fit
    from indvision.training.plan import phases_for

    cfg = train.Config(backbone="mobilenet_v3_small", weights="none", alpha=0.75, height=32,
                       width=32, batch_size=4, probe=False, head_steps=20, finetune_steps=0,
                       patience_steps=0, workers=1, tensorboard=False)
    run, feed = _feed(tmp_path, cfg)
    keras.utils.set_random_seed(0)
    model = models.build_classifier(cfg.backbone, feed.n_classes, cfg.height, cfg.width,
                                    "none", cfg.alpha, cfg.dropout)
    fit = head_fit(model, feed, seed=0)
    # the trainer is the classifier's own head: on the pooled features it fits on (in the
    # split's order, unshuffled), it says what the whole model says on the images
    features = fit.train_data.features
    assert features.shape == (len(feed.train.labels),
                              model.get_layer(models.HEAD_INPUT_LAYER).input.shape[-1])
    np.testing.assert_allclose(fit.trainer.predict(features, verbose=0),
                               model.predict(feed.train.pixels.astype(np.float32), verbose=0),
                               atol=1e-5)

    backbone_before = [w.copy() for w in models.backbone_of(model).get_weights()]
    head_before = [w.copy() for w in model.get_layer(models.HEAD_LAYER).get_weights()]
    [phase] = phases_for(cfg, image_batches=len(fit.train_data))
    assert phase.name == "head" and phase.epochs == 20 // len(fit.train_data) + (
        20 % len(fit.train_data) > 0)
    out = run.stage_dir("train")
    state = records.read_state(out)
    fit_phase(cfg, phase, out, state, fit)

    record = state["phases"]["head"]
    assert record["done"] and record["epochs_run"] == phase.epochs
    for before, after in zip(backbone_before, models.backbone_of(model).get_weights(),
                             strict=True):
        np.testing.assert_array_equal(before, after)  # the backbone did not move
    assert not np.allclose(head_before[0], model.get_layer(models.HEAD_LAYER).get_weights()[0])
    # the best epoch's file holds the whole classifier, as every other phase's does
    best = records.load_arrays(out / record["best_weights"])
    assert len(best) == len(model.get_weights())
