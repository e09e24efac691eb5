"""The train stage: config checks, declared outputs, the model convention, BatchNorm that works
in inference mode, two-phase fine-tuning, and resuming without redoing finished epochs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import config, dataset, images, pipeline
from indvision.errors import ConfigError, IndvisionError
from indvision.rundir import Run
from indvision.stages import ingest, train
from tests.conftest import make_tree, train_tiny, write_pipeline

keras = pytest.importorskip("keras")

TINY = """
name: tiny
seed: 5
stages:
  ingest: {{}}
  augment:
    transforms: [{{HorizontalFlip: {{p: 0.5}}}}]
    preview_per_class: 2
  train: {{backbone: small_cnn, height: 32, width: 40, batch_size: 8, {train}}}
"""


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _split(run: Run, split: str, spec: images.InputSpec) -> tuple[np.ndarray, np.ndarray]:
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    rows = [r for r in dataset.read_splits(run.artifact("ingest", "splits")) if r["split"] == split]
    x = np.stack([images.load(r["path"], spec) for r in rows]).astype(np.float32)
    return x, np.array([classes.index(r["label"]) for r in rows])


def _logged_epochs(folder: Path, tag: str = "epoch_loss") -> list[list[int]]:
    """The steps (epochs from 0) ``tag`` was logged at, per TensorBoard event file in write
    order, read with TensorFlow's own reader (no tensorboard package needed)."""
    import tensorflow as tf

    files = [list(tf.compat.v1.train.summary_iterator(str(path)))
             for path in folder.glob("events.out.tfevents.*")]
    files.sort(key=lambda events: events[0].wall_time)  # the file-version event, at creation
    return [[event.step for event in events for value in event.summary.value
             if value.tag == tag] for events in files]


def test_config_is_checked_before_any_work(tmp_path: Path) -> None:
    cfg = train.Config()
    assert cfg.backbone == "mobilenet_v2" and cfg.resolved_weights() == "imagenet"
    assert train.Config(backbone="small_cnn").resolved_weights() == "none"
    for params, message in [
        ({"backbone": "mobilenetv2"}, "did you mean 'mobilenet_v2'"),
        ({"alpha": 0.6}, "alpha 0.6"),
        ({"weights": str(tmp_path / "nope.weights.h5")}, "no such file"),
        ({"crop": [0.5, 0.0, 0.2, 1.0]}, "crop"),
        ({"class_weight": "auto"}, "balanced"),
        ({"height": 16}, "between 32"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config.build_config("train", train.Config, params)
    with pytest.raises(ConfigError, match="did you mean 'head_steps'"):
        config.build_config("train", train.Config, {"head_step": 3})
    # the epoch counts of earlier versions say where the budget lives now
    with pytest.raises(ConfigError, match=r"'train\.finetune_epochs' moved to "
                                          r"'train\.finetune_steps': schedules are budgets"):
        config.build_config("train", train.Config, {"finetune_epochs": 30})


def test_balanced_class_weights() -> None:
    weights = train.balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


@pytest.mark.slow
def test_training_writes_every_declared_output(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", per_class=16, size=48, seed=1)
    yaml = write_pipeline(tmp_path / "tiny.yaml",
                          TINY.format(train="head_steps: 8, crop: [0.0, 0.0, 1.0, 1.0], "
                                            "tensorboard: false"))
    spec = config.load_pipeline(str(yaml), [], data=str(tree))
    run = pipeline.run_pipeline(spec, tmp_path / "exports")

    record = run.manifest["stages"]["train"]
    assert set(record["outputs"]) == {"model", "input_spec", "history", "curves", "info"}
    for name in record["outputs"]:
        assert run.artifact("train", name).parent == run.root / "train"
    leftovers = {p.name for p in (run.root / "train").iterdir()} - {
        "model.keras", "input_spec.json", "history.csv", "curves.png", "train_info.json",
        train.STATE}
    assert not leftovers  # backups and best-weights files are cleaned up

    input_spec = json.loads(run.artifact("train", "input_spec").read_text())
    assert images.InputSpec.from_dict(input_spec) == images.InputSpec(32, 40, "area",
                                                                      (0.0, 0.0, 1.0, 1.0))
    model = keras.models.load_model(run.artifact("train", "model"))  # plain load, no customs
    assert model.input.shape == (None, 32, 40, 3) and model.input.dtype == "float32"
    x, y = _split(run, "train", images.InputSpec.from_dict(input_spec))
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (len(x), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # BatchNorm in inference mode after a short from-scratch fit: not one class for everything.
    predicted = probabilities.argmax(axis=1)
    assert len(set(predicted.tolist())) >= 2
    assert np.mean(predicted == y) > 0.6

    history = _history(run.artifact("train", "history"))
    assert list(history[0]) == list(train.HISTORY_COLUMNS)
    assert [(h["epoch"], h["phase"]) for h in history] == [("1", "full"), ("2", "full")]
    assert all(float(h["lr"]) == pytest.approx(1e-3) for h in history)
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["backbone"] == "small_cnn" and info["weights"]["kind"] == "none"
    assert info["epochs_run"] == 2 and info["resumed"] is False
    assert info["augmentation"] is True and info["batchnorm_recalibrated_batches"] > 0
    assert 0 <= info["best_val_accuracy"] <= 1 and info["val_accuracy"] is not None
    assert run.artifact("train", "curves").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["tensorboard"] is None  # tensorboard: false writes no logs (leftovers above)


@pytest.mark.slow
def test_two_phase_fine_tuning_keeps_backbone_batchnorm_frozen(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", per_class=12, size=48, seed=2)
    run = Run.create(tmp_path / "exports", "two", seed=0, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree)), run), 0.0)
    cfg = train.Config(backbone="mobilenet_v3_small", weights="none", alpha=0.75, height=32,
                       width=32, batch_size=8, probe=False, head_steps=3, finetune_steps=3,
                       unfreeze_top_layers=20, workers=1)
    outputs = train.run(cfg, run)  # no augment stage: trains without augmentation

    history = _history(outputs["history"])
    assert [h["phase"] for h in history] == ["head", "finetune"]
    assert float(history[1]["lr"]) == pytest.approx(cfg.finetune_learning_rate)
    model = keras.models.load_model(outputs["model"])
    backbone = model.get_layer("backbone")
    for layer in backbone.layers:  # weights "none": moving stats stay at their initial 0 / 1
        if type(layer).__name__ == "BatchNormalization":
            np.testing.assert_array_equal(np.asarray(layer.moving_mean), 0.0)
            np.testing.assert_array_equal(np.asarray(layer.moving_variance), 1.0)
    info = json.loads(outputs["info"].read_text())
    assert set(info["phases"]) == {"head", "finetune"} and info["augmentation"] is False
    assert info["tensorboard"] == "train/tensorboard"  # one folder per phase, per split
    for phase in ("head", "finetune"):
        assert _logged_epochs(outputs["tensorboard"] / phase / "train") == [[0]]
        assert _logged_epochs(outputs["tensorboard"] / phase / "validation") == [[0]]


@pytest.mark.slow
def test_resume_continues_after_the_last_finished_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "data", per_class=12, size=48, seed=3)
    yaml = write_pipeline(tmp_path / "tiny.yaml",
                          TINY.format(train="head_steps: 12, patience_steps: 0"))
    spec = config.load_pipeline(str(yaml), [], data=str(tree))
    original = keras.callbacks.BackupAndRestore

    class InterruptAfterSecondEpoch(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)  # the backup of this epoch is written...
            if epoch == 1:
                raise KeyboardInterrupt  # ...then the user presses Ctrl-C

    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", InterruptAfterSecondEpoch)
    exports = tmp_path / "exports"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(spec, exports)
    run_root = next((exports / "tiny").iterdir())
    assert Run.open(run_root).stage_status("train") == "interrupted"
    assert len(_history(run_root / "train" / "history.csv")) == 2
    first_output = capfd.readouterr().out
    assert "full epoch 2/4:" in first_output and "full epoch 3/4:" not in first_output

    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", original)
    run = pipeline.run_pipeline(spec, exports, resume=run_root.name)
    second_output = capfd.readouterr().out
    assert "full epoch 1/4:" not in second_output and "full epoch 2/4:" not in second_output
    assert "full epoch 3/4:" in second_output and "full epoch 4/4:" in second_output

    assert run.manifest["stages"]["train"]["status"] == "done"
    history = _history(run.artifact("train", "history"))
    assert [h["epoch"] for h in history] == ["1", "2", "3", "4"]
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["resumed"] is True and info["epochs_run"] == 4
    assert not (run.root / "train" / "backup").exists()
    # TensorBoard: the resumed fit appends a second event file, at the epochs it ran
    assert _logged_epochs(run.root / "train" / "tensorboard" / "full" / "train") == [
        [0, 1], [2, 3]]


@pytest.mark.slow
def test_an_ensemble_trains_each_member_with_its_own_seed_and_resumes_inside_a_member(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "data", per_class=12, size=48, seed=3)
    yaml = write_pipeline(tmp_path / "tiny.yaml",
                          TINY.format(train="head_steps: 6, patience_steps: 0, ensemble: 2"))
    spec = config.load_pipeline(str(yaml), [], data=str(tree))
    original = keras.callbacks.BackupAndRestore
    ends = []

    class InterruptInTheSecondMember(original):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            ends.append(epoch)
            if len(ends) == 3:  # member 1 has run its two epochs, member 2 its first
                raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", InterruptInTheSecondMember)
    exports = tmp_path / "exports"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(spec, exports)
    first_output = capfd.readouterr().out
    assert "ensemble member 2 of 2 (seed 6)" in first_output
    run_root = next((exports / "tiny").iterdir())

    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", original)
    run = pipeline.run_pipeline(spec, exports, resume=run_root.name)
    second_output = capfd.readouterr().out
    assert "phase full finished earlier (2 epochs)" in second_output
    assert second_output.count(" epoch 2/2:") == 1 and " epoch 1/2:" not in second_output

    history = _history(run.artifact("train", "history"))
    assert [h["phase"] for h in history] == ["full", "full", "full_m2", "full_m2"]
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["ensemble"] == 2 and set(info["phases"]) == {"full", "full_m2"}
    model = keras.models.load_model(run.artifact("train", "model"))
    first = model.get_layer("indvision_small_cnn")
    second = model.get_layer("indvision_small_cnn_m2")
    assert not np.allclose(first.get_weights()[0], second.get_weights()[0])  # own seeds
    x, _ = _split(run, "test", images.InputSpec(32, 40))
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        (first.predict(x, verbose=0) + second.predict(x, verbose=0)) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="ensemble"):
        config.build_config("train", train.Config, {"ensemble": 0})


def _two_view_tree(root: Path, per_class: int = 10) -> Path:
    """Objects of two views, ``<id>_a.png`` and ``<id>_b.png``: a defective object shows its
    defect in view a only; view b always looks like an ``ok`` one."""
    from tests.conftest import draw_tiny

    for c, label in enumerate(("ok", "scratch")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            for view, drawn in (("a", label), ("b", "ok")):
                image = draw_tiny(drawn, np.random.default_rng([c, i, ord(view)]), 40)
                cv2.imwrite(str(root / label / f"{c}{i:03d}_{view}.png"), image)
    return root


GROUPED = """
name: grouped
seed: 3
stages:
  ingest: {{group_regex: '^(\\d+)_', good_class: {good}}}
  train: {{backbone: small_cnn, height: 32, width: 32, batch_size: 8, head_steps: 6,
           object_steps: 6, workers: 1}}
"""


@pytest.mark.slow
def test_objects_phase_trains_whole_objects_after_the_image_phases(tmp_path: Path) -> None:
    tree = _two_view_tree(tmp_path / "data")
    yaml = write_pipeline(tmp_path / "g.yaml", GROUPED.format(good="[intact, ok]"))
    run = pipeline.run_pipeline(config.load_pipeline(str(yaml), [], data=str(tree)),
                                tmp_path / "exports")
    history = _history(run.artifact("train", "history"))
    assert [h["phase"] for h in history] == ["full", "full", "objects", "objects"]
    assert all(h["val_loss"] and float(h["val_loss"]) > 0 for h in history)
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["last_phase_on"] == "objects" and set(info["phases"]) == {"full", "objects"}
    assert 0 <= info["val_accuracy"] <= 1
    model = keras.models.load_model(run.artifact("train", "model"))  # the plain classifier
    assert model.input.shape == (None, 32, 32, 3) and model.output.shape == (None, 2)


@pytest.mark.slow
def test_objects_phase_is_skipped_without_a_good_class_or_grouped_views(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    tree = _two_view_tree(tmp_path / "data", per_class=8)
    yaml = write_pipeline(tmp_path / "g.yaml", GROUPED.format(good="[intact]"))
    spec = config.load_pipeline(str(yaml), [], data=str(tree))
    with pytest.raises(IndvisionError, match=r"train\.object_steps needs the good class"):
        pipeline.run_pipeline(spec, tmp_path / "exports")  # checked right after ingest
    run = Run.create(tmp_path / "direct", "g", 0, {}, "h")  # the stage alone skips the phase
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(spec.config("ingest"), run), 0.0)
    train_tiny(run, size=32, epochs=1, object_steps=4)
    assert "no ingest.good_class is among the classes" in capfd.readouterr().out
    assert {h["phase"] for h in _history(run.artifact("train", "history"))} == {"full"}
    with pytest.raises(ConfigError, match="object_steps"):
        config.build_config("train", train.Config, {"object_steps": -1})
    with pytest.raises(ConfigError, match="good_class"):
        config.build_config("train", train.Config, {"good_class": []})


@pytest.mark.slow
def test_tensorboard_logs_each_fit_under_its_phase_key(tmp_path: Path) -> None:
    from tests.conftest import train_tiny

    tree = make_tree(tmp_path / "data", per_class=8, size=40, seed=4)
    run = Run.create(tmp_path / "exports", "tb", seed=0, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree)), run), 0.0)
    train_tiny(run, size=32, epochs=2, patience_steps=0)  # tensorboard is on by default

    folder = run.root / "train" / "tensorboard"
    assert sorted(p.name for p in folder.iterdir()) == ["full"]
    assert _logged_epochs(folder / "full" / "train") == [[0, 1]]
    assert _logged_epochs(folder / "full" / "train", "epoch_learning_rate") == [[0, 1]]
    assert _logged_epochs(folder / "full" / "validation", "epoch_accuracy") == [[0, 1]]
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["tensorboard"] == "train/tensorboard"
    declared = run.manifest["stages"]["train"]["outputs"]["tensorboard"]
    assert declared["path"] == "train/tensorboard"
    assert declared["files"] and all(name.startswith("train/tensorboard/full/")
                                     for name in declared["files"])
    assert run.artifact("train", "tensorboard") == folder
