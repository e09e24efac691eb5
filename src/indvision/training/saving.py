"""The saved model and its records: members averaged (``ensemble``) and each image averaged
with its mirror (``mirror_average``) inside one graph, the saved model's validation accuracy,
then ``model.keras``, ``input_spec.json``, ``history.csv``, ``curves.png`` and
``train_info.json``; the best-weights files and backups are removed once model.keras holds
the weights.

Imports Keras at its top (like :mod:`indvision.layers`): the train stage imports this module
inside its ``run``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from indvision import atomic, metrics, models
from indvision.console import say
from indvision.training import records
from indvision.training.batches import Feed
from indvision.training.phases import PROBE_HEAD, PROBE_MODEL, Member
from indvision.training.plan import Phase

if TYPE_CHECKING:
    from indvision.training.config import Config


@dataclass(frozen=True)
class TrainResult:
    """What a finished training saves: the model and every fact ``train_info.json`` records."""

    model: Any  # the saved model (see :func:`assemble`)
    source: models.WeightsSource
    state: dict[str, Any]
    phases: list[Phase]  # every member's, in order
    classes: list[str]
    n_train: int
    n_val: int
    class_weight: dict[int, float] | None
    augmented: bool
    resumed: bool
    recalibrated: int
    val_accuracy: float | None
    seed: int
    tensorboard: str | None  # the TensorBoard folder relative to the run folder, or None
    parent: dict[str, Any] | None = None  # a child's parent: run id, classes added

    @property
    def last_phase_on(self) -> str:
        """``objects`` when the last phase trained on objects (its val accuracy is per object),
        else ``images``."""
        return "objects" if self.phases and self.phases[-1].name == "objects" else "images"


def assemble(members: list[Member], config: Config) -> Any:
    """The model to save: one member, or the average of their scores; mirror averaged on
    ``config.mirror_average``."""
    model = (members[0].model if len(members) == 1
             else models.ensemble_averaged([m.model for m in members]))
    if config.ensemble > 1:
        say(f"train: the saved model averages the scores of {len(members)} members "
              "(ensemble)")
    if config.mirror_average:
        model = models.mirror_averaged(model)
        say("train: the saved model averages each image with its mirror (mirror_average)")
    return model


def validation_accuracy(model: Any, feed: Feed, last_phase: Phase | None) -> float | None:
    """The saved model's accuracy on the validation split (None without one): per image, or
    per object after an ``objects`` phase, decided as evaluate decides (arg-max of the
    least-good view)."""
    if feed.val_data is None:
        return None
    feed.val_data.set_epoch(0)
    probabilities = model.predict(feed.val_data, verbose=0)
    labels = feed.val.labels
    if last_phase is None or last_phase.name != "objects":
        return float(np.mean(np.argmax(probabilities, axis=1) == labels))
    assert feed.objects is not None
    truth, decided = metrics.decide_groups(probabilities, labels,
                                           [r["group"] for r in feed.val.rows],
                                           feed.objects.good_index)
    return float(np.mean(decided == truth))


def inference_copy(model: Any) -> Any:
    """The same network without optimizer state: what model.keras holds."""
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def write_outputs(out: Path, config: Config, result: TrainResult) -> dict[str, Path]:
    """Write the model and its records; the declared outputs of the stage."""
    with atomic.atomic_path(out / "model.keras") as tmp:
        inference_copy(result.model).save(tmp)
    outputs = {
        "model": out / "model.keras",
        "input_spec": atomic.write_json(out / "input_spec.json", config.input_spec.to_dict()),
        "history": records.write_history(out, result.state),
        "curves": records.write_curves(out, result.state),
    }
    if (out / PROBE_MODEL).is_file():
        outputs["probe"] = out / PROBE_MODEL
    outputs["info"] = atomic.write_json(out / "train_info.json", train_info(config, result))
    if result.tensorboard is not None:
        outputs["tensorboard"] = out / records.TENSORBOARD
    state = result.state
    for phase in result.phases:  # model.keras now holds the weights (see load_final_weights)
        name = state["phases"][phase.key].get("best_weights")
        if name:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "backup", ignore_errors=True)
    (out / PROBE_HEAD).unlink(missing_ok=True)  # probe.keras holds it
    accuracy = result.val_accuracy
    say(f"train: saved {outputs['model']} (val accuracy "
          f"{'n/a' if accuracy is None else f'{accuracy:.4f}'})")
    return outputs


def train_info(config: Config, result: TrainResult) -> dict[str, Any]:
    """``train_info.json``: backbone, weights file and sha256, per-phase epochs and seconds,
    validation accuracies, where the TensorBoard logs are."""
    state, phases, classes, source = result.state, result.phases, result.classes, result.source
    final = state["phases"][phases[-1].key] if phases else {}
    return {
        "backbone": config.backbone,
        "alpha": config.alpha,
        "input": {"height": config.height, "width": config.width},
        "weights": {"setting": config.weights, "kind": source.kind, "file": source.path,
                    "sha256": source.sha256},
        "classes": classes,
        "images": {"train": result.n_train, "val": result.n_val},
        "class_weight": ({classes[k]: round(v, 4) for k, v in result.class_weight.items()}
                         if result.class_weight else None),
        "augmentation": result.augmented,
        "last_phase_on": result.last_phase_on,  # "objects": its val accuracy is per object
        "mirror_average": config.mirror_average,
        "ensemble": config.ensemble,
        "devices": config.devices,  # data-parallel devices of one node (MirroredStrategy)
        # the linear probe the head started from (None: a head phase or a from-scratch model)
        "probe": probe_info(state, phases),
        "parent": result.parent,  # a child started from this run's weights (None: none)
        "phases": {p.key: {key: state["phases"][p.key].get(key) for key in
                           ("epochs_run", "best_epoch", "best_val_accuracy", "best_val_loss",
                            "seconds", "stopped_early", "start", "kept_start")}
                   | {"learning_rate": p.learning_rate, "max_epochs": p.epochs,
                      "patience_epochs": p.patience, "validate_every": p.validate_every}
                   for p in phases},
        "epochs_run": sum(state["phases"][p.key]["epochs_run"] for p in phases),
        "seconds": round(sum(state["phases"][p.key]["seconds"] for p in phases), 2),
        "best_val_accuracy": final.get("best_val_accuracy"),
        "val_accuracy": result.val_accuracy,  # of the saved model (after BatchNorm recalib.)
        "batchnorm_recalibrated_batches": result.recalibrated,
        "resumed": result.resumed,
        "seed": result.seed,
        "tensorboard": result.tensorboard,  # TensorBoard logs, one sub-folder per phase key
    }


def probe_info(state: dict[str, Any], phases: list[Phase]) -> dict[str, Any] | None:
    """The probe's fit (C and how it was chosen, train accuracy, seconds) and its validation
    numbers, as the first phase after it measured them."""
    probe = state.get("probe")
    if not probe:
        return None
    first = state["phases"].get(phases[0].key, {}) if phases else {}
    start = first.get("start") or {}
    return dict(probe, val_loss=start.get("val_loss"), val_accuracy=start.get("val_accuracy"),
                model=PROBE_MODEL)
