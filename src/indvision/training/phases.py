"""Fitting: one ensemble member's phases, the fit of one phase, and what each epoch records.

Every phase stops early on validation (``patience`` epochs without a better val accuracy or
val loss) and keeps its best epoch's weights (highest val accuracy, ties to the lower val
loss); with a from-scratch backbone, BatchNorm is re-estimated before each validation so
validation sees the model as it will be used.

Resuming: after every epoch :class:`PhaseProgress` writes the state (history rows, best
epoch, best weights) atomically and Keras' ``BackupAndRestore`` keeps the model and optimizer
in ``train/backup/<phase key>``; a phase recorded done is skipped, an unfinished one continues
after its last finished epoch. TensorBoard logs (``train/tensorboard/<phase key>``, Keras'
``TensorBoard`` callback, epoch scalars only) are written every epoch and a resumed phase
appends to them.

Imports Keras at its top (like :mod:`indvision.layers`): the train stage imports this module
inside its ``run``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from indvision import models
from indvision.errors import IndvisionError
from indvision.training import records
from indvision.training.batches import Feed
from indvision.training.plan import Phase, member_name, phases_for

if TYPE_CHECKING:
    from indvision.stages.train import Config


@dataclass(frozen=True)
class Fit:
    """What one phase fits. ``model`` is the classifier (frozen/unfrozen per phase);
    ``trainer`` is what is fitted: the classifier itself, or its any-view wrapper
    (``good_index`` set). ``recalibration_data``: unaugmented batches for BatchNorm
    re-estimation (a from-scratch backbone), else None."""

    model: Any
    trainer: Any
    train_data: Any
    val_data: Any
    class_weight: dict[int, float] | None
    good_index: int | None
    recalibration_data: Any


@dataclass(frozen=True)
class Member:
    """One trained ensemble member: its classifier at its last phase's best weights."""

    model: Any
    source: models.WeightsSource
    phases: list[Phase]
    recalibrated: int  # batches its BatchNorm statistics were re-estimated on (0: none)


def train_member(config: Config, feed: Feed, member: int, seed: int, weights: str,
                 out: Path, state: dict[str, Any]) -> Member:
    """Build member ``member`` from ``seed`` and run its phases, skipping those done."""
    if config.ensemble > 1:
        print(f"train: ensemble member {member} of {config.ensemble} (seed {seed})",
              flush=True)
    keras.utils.set_random_seed(seed)
    model, source = models.build_classifier_with_source(
        config.backbone, feed.n_classes, config.height, config.width, weights, config.alpha,
        config.dropout, name=member_name(config.backbone, member))
    image_fit = Fit(model, model, feed.train_batches(seed), feed.val_data, feed.class_weight,
                    None, feed.plain_train)
    object_fit = None
    if feed.objects is not None:
        object_train = feed.object_batches(seed)
        object_fit = Fit(model, models.object_trainer(model, object_train.views), object_train,
                         feed.objects.val, None, feed.objects.good_index, feed.plain_train)

    member_phases = phases_for(config, objects=feed.objects is not None, member=member)
    for number, phase in enumerate(member_phases):
        record = state["phases"].get(phase.key, {})
        if record.get("done"):
            print(f"train: phase {phase.key} finished earlier "
                  f"({record['epochs_run']} epochs)", flush=True)
            continue
        if number > 0:  # start from the previous phase's best weights
            previous = state["phases"][member_phases[number - 1].key]
            model.set_weights(records.load_arrays(out / previous["best_weights"]))
        if phase.name == "objects":
            assert object_fit is not None
            print(f"train: objects: any-view loss on {len(object_fit.train_data.members)} "
                  f"objects of up to {object_fit.train_data.views} views: a defective object "
                  "needs its defect in one view only", flush=True)
            fit_phase(config, phase, out, state, object_fit)
        else:
            fit_phase(config, phase, out, state, image_fit)
        if number > 0:  # the previous phase's weights are not needed any more
            (out / str(state["phases"][member_phases[number - 1].key]["best_weights"])
             ).unlink(missing_ok=True)

    load_final_weights(model, out, state["phases"][member_phases[-1].key])
    recalibrated = 0
    if feed.plain_train is not None:
        plain = feed.plain_train
        recalibrated = models.recalibrate_batchnorm(model,
                                                    (plain[i][0] for i in range(len(plain))))
    return Member(model, source, member_phases, recalibrated)


def load_final_weights(model: Any, out: Path, record: dict[str, Any]) -> None:
    """The last phase's best weights; after a crash between writing the outputs and the
    manifest, the saved model.keras holds them (its best-weights file is already gone)."""
    best = out / str(record.get("best_weights"))
    if best.is_file():
        model.set_weights(records.load_arrays(best))
    elif (out / "model.keras").is_file():
        saved = models.find_submodel(models.load_model(out / "model.keras"), model.name)
        model.set_weights(saved.get_weights())
    else:
        raise IndvisionError(f"{out}: training state is incomplete ({best.name} is missing); "
                             "start a new run")


def fit_phase(config: Config, phase: Phase, out: Path, state: dict[str, Any], fit: Fit) -> None:
    """Fit one phase: freeze or unfreeze, compile, fit with early stopping, backups and (with
    ``config.tensorboard``) TensorBoard logs, then mark the phase done in the state."""
    model = fit.model
    if phase.name == "head":
        models.freeze_backbone(model)
    elif phase.name == "finetune" or (phase.name == "objects"
                                      and models.get_backbone(config.backbone).pretrainable):
        unfrozen = models.unfreeze_top(model, config.backbone, config.unfreeze_top_layers)
        print(f"train: {phase.key}: {unfrozen} backbone layers unfrozen (BatchNorm stays "
              "frozen)", flush=True)
    if fit.good_index is None:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        accuracy: Any = "accuracy"
    else:
        loss = models.any_view_loss(fit.good_index, config.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(models.any_view_accuracy(fit.good_index),
                                                   name="accuracy")
    fit.trainer.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss=loss,
                        metrics=[accuracy])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"train: phase {phase.key}: up to {phase.epochs} epochs at learning rate "
          f"{phase.learning_rate:g}, {trainable:,} trainable parameters, "
          f"{len(fit.train_data)} batches/epoch", flush=True)
    callbacks: list[Any] = [PhaseProgress(out, state, phase, [fit.train_data], config.patience,
                                          monitor_val=fit.val_data is not None,
                                          recalibration=(model, fit.recalibration_data))]
    if config.tensorboard:  # before the backup: an epoch backed up is an epoch logged
        callbacks.append(keras.callbacks.TensorBoard(  # epoch scalars: cheap
            log_dir=str(out / records.TENSORBOARD / phase.key), histogram_freq=0,
            write_graph=False, write_images=False, update_freq="epoch", profile_batch=0))
    callbacks.append(keras.callbacks.BackupAndRestore(
        backup_dir=str(out / "backup" / phase.key), double_checkpoint=True))
    fit.trainer.fit(fit.train_data, validation_data=fit.val_data, epochs=phase.epochs,
                    class_weight=fit.class_weight, callbacks=callbacks, verbose=2)
    shutil.rmtree(out / "backup" / phase.key, ignore_errors=True)
    record = state["phases"][phase.key]
    record["done"] = True
    records.write_state(out, state)
    print(f"train: phase {phase.key} done: {record['epochs_run']} epochs in "
          f"{record['seconds']:.0f} s, best epoch {record['best_epoch'] + 1} "
          f"(val accuracy {record['best_val_accuracy']:.4f})", flush=True)



class PhaseProgress(keras.callbacks.Callback):
    """After each epoch: record history, keep the best weights and stop early — all persisted
    in ``state.json`` so a resumed run knows them too.

    With ``recalibration`` = (classifier, unaugmented batches) for a from-scratch model,
    BatchNorm statistics are re-estimated on the batches before each validation, so validation
    — and the choice of the best epoch — sees the model as it will be used, not with moving
    averages that lag behind a short training.
    """

    def __init__(self, out: Path, state: dict[str, Any], phase: Phase, datasets: list[Any],
                 patience: int, monitor_val: bool,
                 recalibration: tuple[Any, Any] = (None, None)) -> None:
        super().__init__()
        self.out, self.state, self.phase, self.datasets = out, state, phase, datasets
        self.patience, self.monitor_val, self.recalibration = patience, monitor_val, recalibration
        self.record = state["phases"].setdefault(
            phase.key, {"done": False, "epochs_run": 0, "best_epoch": None,
                        "best_val_accuracy": None, "best_val_loss": None,
                        "best_weights": None, "seconds": 0.0, "stopped_early": False})
        self.first_epoch: int | None = None
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)
        if self.first_epoch is None:  # after BackupAndRestore: forget redone epochs
            self.first_epoch = epoch
            self.state["history"] = [r for r in self.state["history"]
                                     if r["phase"] != self.phase.key
                                     or r["epoch_in_phase"] < epoch]
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        out, state, key = self.out, self.state, self.phase.key
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        state["history"].append({
            "phase": key, "epoch_in_phase": epoch,
            "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_accuracy"),
            "lr": lr,
        })
        record = self.record
        record["epochs_run"] = epoch + 1
        record["seconds"] = round(record["seconds"] + time.perf_counter()
                                  - self.epoch_started, 2)
        prefix = "val_" if self.monitor_val else ""
        accuracy = float(logs.get(prefix + "accuracy", 0.0))
        loss = float(logs.get(prefix + "loss", 0.0))
        # Best epoch: highest accuracy, ties broken by lower loss. Patience counts epochs
        # since the last improvement of either, so a phase whose loss still falls while
        # a small validation set's accuracy plateaus keeps learning.
        if record.get("lowest_val_loss") is None or loss < record["lowest_val_loss"]:
            record.update(lowest_val_loss=loss, lowest_val_loss_epoch=epoch)
        best = record["best_epoch"]
        if best is None or (accuracy, -loss) > (record["best_val_accuracy"],
                                                -record["best_val_loss"]):
            weights_name = f"{key}_best_e{epoch}.npz"
            records.save_arrays(out / weights_name, self.model.get_weights())
            old = record["best_weights"]
            record.update(best_epoch=epoch, best_val_accuracy=accuracy,
                          best_val_loss=loss, best_weights=weights_name)
            records.write_state(out, state)
            if old and old != weights_name:
                (out / old).unlink(missing_ok=True)
        else:
            last_improvement = max(best, record["lowest_val_loss_epoch"])
            if self.patience and epoch - last_improvement >= self.patience:
                record["stopped_early"] = True
                self.model.stop_training = True
                print(f"train: {key}: no improvement for {self.patience} epochs, "
                      f"stopping; best epoch {best + 1}", flush=True)
            records.write_state(out, state)
        records.write_history(out, state)

    def on_test_begin(self, logs: dict | None = None) -> None:
        classifier, data = self.recalibration
        if data is not None:
            models.recalibrate_batchnorm(classifier, (data[i][0] for i in range(len(data))))

    def on_train_end(self, logs: dict | None = None) -> None:
        self.record["done"] = True  # before BackupAndRestore removes its backup
        records.write_state(self.out, self.state)
