"""A phase's progress, one Keras callback (:class:`PhaseProgress`): after each epoch it records
the history row, keeps the best weights and stops early, all written to ``state.json`` so a
resumed run knows them too; and the console's one line per epoch (:func:`epoch_line`).

Imports Keras at its top, like :mod:`indvision.training.phases`, which fits with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras

from indvision import models
from indvision.console import duration, say
from indvision.training import records
from indvision.training.plan import Phase


def epoch_line(key: str, epoch: int, epochs: int, logs: dict[str, Any], seconds: float,
               mean_seconds: float) -> str:
    """The console's one line per epoch (Keras' own progress is off): the metrics, the epoch's
    time and the phase's remaining time at the mean epoch time so far — an upper bound, as a
    validation plateau may end the phase sooner."""
    parts = [f"{name} {float(logs[name]):.4f}"
             for name in ("loss", "accuracy", "val_loss", "val_accuracy")
             if logs.get(name) is not None]
    left = epochs - epoch - 1
    eta = f", at most {duration(left * mean_seconds)} left" if left else ""
    return (f"train: {key} epoch {epoch + 1}/{epochs}: {', '.join(parts)} "
            f"({duration(seconds)}{eta})")


class PhaseProgress(keras.callbacks.Callback):
    """After each epoch: record history, keep the best weights and stop early — all persisted
    in ``state.json`` so a resumed run knows them too.

    The best epoch is the one with the lowest validation loss (ties: the higher accuracy):
    on a validation set of a few dozen images one lucky call moves accuracy by points, the loss
    by little. ``patience`` epochs without a lower loss end the phase. A phase that validates
    every few epochs (a child's, :meth:`Phase.validation_epochs`) chooses among those it
    validated; the epochs between are recorded without validation metrics. With a ``start`` (the
    weights the phase began from, measured on validation: :func:`starting_point`) the member's
    last phase ends on its start when the best epoch makes more validation errors than the
    start did — fine-tuning that only hurts returns the linear probe. An earlier phase keeps
    its start file for the next phase to weigh.

    With ``recalibration`` = (classifier, unaugmented batches) for a from-scratch model,
    BatchNorm statistics are re-estimated on the batches before each validation, so validation
    — and the choice of the best epoch — sees the model as it will be used, not with moving
    averages that lag behind a short training.
    """

    def __init__(self, out: Path, state: dict[str, Any], phase: Phase, datasets: list[Any],
                 monitor_val: bool,
                 recalibration: tuple[Any, Any] = (None, None),
                 start: dict[str, Any] | None = None, classifier: Any = None) -> None:
        super().__init__()
        self.out, self.state, self.phase, self.datasets = out, state, phase, datasets
        self.classifier = classifier  # whose weights are kept (None: the model fitted)
        self.patience = phase.patience  # epochs without a lower val loss that end the phase
        self.monitor_val, self.recalibration = monitor_val, recalibration
        self.record = state["phases"].setdefault(
            phase.key, {"done": False, "epochs_run": 0, "best_epoch": None,
                        "best_val_accuracy": None, "best_val_loss": None,
                        "best_weights": None, "seconds": 0.0, "stopped_early": False,
                        "start": None, "kept_start": False})
        if start is not None:
            self.record["start"] = start
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
        seconds = time.perf_counter() - self.epoch_started
        record["seconds"] = round(record["seconds"] + seconds, 2)
        say(epoch_line(key, epoch, self.phase.epochs, logs, seconds,
                       record["seconds"] / record["epochs_run"]))
        if not self.monitor_val or "val_loss" in logs:  # a child validates every few epochs
            self._judge(epoch, logs)
        records.write_state(out, state)
        records.write_history(out, state)

    def _judge(self, epoch: int, logs: dict[str, Any]) -> None:
        """Keep the epoch's weights when it is the best so far (the state written before the
        previous best's file goes), or stop when ``patience`` epochs brought no lower loss."""
        out, record, key = self.out, self.record, self.phase.key
        prefix = "val_" if self.monitor_val else ""
        accuracy = float(logs.get(prefix + "accuracy", 0.0))
        loss = float(logs.get(prefix + "loss", 0.0))
        best = record["best_epoch"]
        if best is None or (-loss, accuracy) > (-record["best_val_loss"],
                                                record["best_val_accuracy"]):
            weights_name = f"{key}_best_e{epoch}.npz"
            kept = self.model if self.classifier is None else self.classifier
            records.save_arrays(out / weights_name, kept.get_weights())
            old = record["best_weights"]
            record.update(best_epoch=epoch, best_val_accuracy=accuracy,
                          best_val_loss=loss, best_weights=weights_name)
            records.write_state(out, self.state)
            if old and old != weights_name:
                (out / old).unlink(missing_ok=True)
        elif self.patience and epoch - best >= self.patience:
            record["stopped_early"] = True
            self.model.stop_training = True
            say(f"train: {key}: validation loss not lower for {self.patience} epochs, "
                f"stopping; best epoch {best + 1}")

    def on_test_begin(self, logs: dict | None = None) -> None:
        classifier, data = self.recalibration
        if data is not None:
            models.recalibrate_batchnorm(classifier, (data[i][0] for i in range(len(data))))

    def on_train_end(self, logs: dict | None = None) -> None:
        self._keep_start_if_better()
        self.record["done"] = True  # before BackupAndRestore removes its backup
        records.write_state(self.out, self.state)

    def _keep_start_if_better(self) -> None:
        """End on the start when the best epoch made more validation errors than it."""
        record, start = self.record, self.record.get("start")
        if not start or record.get("kept_start") or not self.phase.last:
            return  # before the last phase, the next one weighs the start (handed_on)
        if record["best_epoch"] is None or (record["best_val_accuracy"]
                                            < start["val_accuracy"] - 1e-9):
            say(f"train: {self.phase.key}: the best epoch's val accuracy "
                  f"{record['best_val_accuracy'] or 0:.4f} is below the start's "
                  f"{start['val_accuracy']:.4f}: keeping the start")
            if record["best_weights"]:
                (self.out / record["best_weights"]).unlink(missing_ok=True)
            record.update(best_epoch=-1, best_val_accuracy=start["val_accuracy"],
                          best_val_loss=start["val_loss"], best_weights=start["weights"],
                          kept_start=True)
        else:
            (self.out / start["weights"]).unlink(missing_ok=True)
