"""Train: a classifier on the ingested splits, by transfer learning from a linear probe, resumable.

The head starts from the **linear probe** (``probe``, on by default for a pretrained backbone):
a logistic regression on the frozen backbone's features of the unaugmented training images,
with the run's class weights and its strength chosen by grouped cross-validation, written into
the head's dense layer (:mod:`indvision.training.probe`) — fine-tuning begins where the
frozen-feature baseline ends (linear probe, then fine-tune: Kumar et al. 2022). The probe is
saved as ``probe.keras``, and evaluate measures it beside the final model. With ``probe: false``
a phase ``head`` trains the head from random instead (the backbone frozen, a higher learning
rate: the head alone fits on the pooled features of the unaugmented images, computed once —
:func:`indvision.training.phases.head_fit`; a child's head phase for new classes does the
same). Phase ``finetune``: the top of the backbone is unfrozen and everything trains at a low
learning rate, with the backbone's BatchNorm kept in inference mode (it is called with
``training=False`` inside the model, and its BatchNorm layers stay frozen) — the keras-io
fine-tuning recipe. A backbone trained from scratch (``small_cnn``) has one phase, ``full``,
and its BatchNorm statistics are re-estimated exactly at the end
(:func:`indvision.models.recalibrate_batchnorm`): after a short fit the moving averages lag
behind the weights, and inference mode would predict one class for everything.

Objects seen in several views (ingest ``group_regex``: a parcel's side and top photos) add a last
phase, ``objects`` (``object_steps``), on whole objects with the any-view loss
(:func:`indvision.models.any_view_loss`): a good object must look good in every view, a
defective one needs its defect in one view only — the rule evaluate, verify and the edge runtime
decide by. The image phases before it give every view its object's label, which teaches views
where the damage cannot be seen to call it damaged (and "damaged if any view is" then rejects
good objects); they are the warm start: trained on objects from the beginning, the network first
learns the cheap shortcut of hedging on one view type, which the any-view rule turns into "all
defective". Its validation accuracy is per object.

Schedules are budgets of optimiser steps (``head_steps``, ``finetune_steps``, ``object_steps``,
``patience_steps``); a phase runs ``ceil(steps / batches per epoch)`` epochs
(:func:`indvision.training.plan.epochs_for`), so 240 images get as many updates as 2000. Every
phase stops early on validation (patience without a lower val loss), keeps its best epoch's
weights (lowest val loss, ties to the higher accuracy: on a validation set of a few dozen
images one lucky call moves accuracy by points, the loss by little) — or the weights it started
from, measured on validation before its first epoch, when its best epoch makes more validation
errors than they did: fine-tuning that only hurts returns the probe. Classes are weighed
``balanced`` by default, everything is seeded by the run (and BatchNorm of a from-scratch model
is re-estimated before each validation, so validation sees the model as it will be used).

Images are read once through :func:`indvision.images.load` (decoded, cropped, resized) and
kept in memory as uint8; each epoch then only shuffles (seeded by epoch) and augments the
training batches with the augment stage's ``augmentation.json`` — validation is never
augmented.

Resuming: after every epoch the state (history rows, best epoch, best weights) is written
atomically and Keras' ``BackupAndRestore`` keeps the model and optimizer in ``train/backup``;
calling :func:`run` again on the same run (``--resume RUN_ID``) continues after the last
finished epoch, so an interruption (even SIGKILL) loses at most the epoch in progress.

With ``tensorboard`` (on by default) every fit also writes TensorBoard logs — epoch loss,
accuracy and learning rate, on training and validation — to ``train/tensorboard/<phase key>``
(``head``, ``finetune``, ``finetune_m2``, ``objects``, ``full``), flushed every epoch; a resumed
phase appends to its folder. View them with ``tensorboard --logdir <run>/train/tensorboard``
(the ``tensorboard`` package is needed only to view them, not to write them).

With ``mirror_average`` the saved model averages its scores over each image and the image
mirrored left to right (:func:`indvision.models.mirror_averaged`): test-time augmentation in
the graph itself, so evaluate, every exported file and the edge runtime compute the same
average with no extra code. It costs twice the inference and steadies knife-edge calls.
With ``ensemble`` N > 1 the phases above run N times, member k from seed ``run seed + k - 1``
(phases keyed ``finetune_m2`` … in the state and history, so resuming works inside any member),
and the saved model averages the members' scores (:func:`indvision.models.ensemble_averaged`).

Outputs: ``model.keras`` (the model convention of the contract), ``probe.keras`` (with a probe),
``input_spec.json``,
``history.csv`` (epoch, phase, loss, accuracy, val_loss, val_accuracy, lr), ``curves.png`` and
``train_info.json`` (backbone, weights file and sha256, seconds and epochs per phase, best
validation accuracy, the TensorBoard folder), and with ``tensorboard`` the folder
``tensorboard/`` (every event file listed with its sha256 in the manifest).

This module holds the configuration and the stage's :func:`run`; the work is done by
:mod:`indvision.training`: ``plan`` (phases, seeds, class weights), ``batches`` (the image
cache and the batches), ``phases`` (fitting, early stopping, resuming, TensorBoard),
``probe`` (the linear probe), ``records`` (state.json, history.csv, curves.png) and ``saving``
(the saved model and
train_info.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, decision, images, models
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.rundir import Run
from indvision.training import records
from indvision.training.plan import (  # noqa: F401 (the stage's public names)
    Phase,
    balanced_class_weights,
    member_seed,
    phases_for,
)
from indvision.training.records import HISTORY_COLUMNS, STATE  # noqa: F401

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@dataclass(frozen=True)
class Config:
    """Model, input size and training schedule."""

    backbone: str = "mobilenet_v2"  # a key of indvision.models.BACKBONES
    height: int = 160  # model input size; images are resized (after crop) to it
    width: int = 160
    resize: str = "area"  # "area" or "bilinear" (OpenCV), also on the device
    crop: tuple[float, float, float, float] | None = None  # region of interest x0,y0,x1,y1
    colour_window: tuple[float, float] | None = None  # follow the object: see images.InputSpec
    weights: str = "auto"  # auto (imagenet if pretrainable, else none), none, imagenet, PATH
    alpha: float = 1.0  # width multiplier (MobileNets, small_cnn)
    dropout: float = 0.2
    batch_size: int = 32
    # Start the head from the linear probe (a pretrained backbone): a logistic regression on
    # the frozen features of the training images, so fine-tuning begins where the
    # frozen-feature baseline ends; there is no separate head phase then (see
    # indvision.training.probe). False: a head phase of head_steps trains it from random.
    probe: bool = True
    # Budgets in optimiser steps, each phase's epochs = ceil(steps / batches per epoch): a
    # small set gets as many updates as a large one. Early stopping ends a phase sooner.
    head_steps: int = 300  # the head phase (probe off), or the only phase for small_cnn
    finetune_steps: int = 600  # top of the backbone unfrozen; 0 skips fine-tuning
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 2e-5  # keep low: 1e-4 collapsed MobileNetV2 on real data
    unfreeze_top_layers: int | None = None  # None: the backbone table's top blocks; N: last N
    class_weight: str = "balanced"  # or "none"
    # A phase stops after this many steps (rounded up to epochs) without a lower validation
    # loss; 0: never. The best epoch is the lowest validation loss, which one lucky call on a
    # small validation set cannot move as it moves accuracy.
    patience_steps: int = 200
    label_smoothing: float = 0.0
    workers: int = 2  # threads preparing batches (and decoding the image cache)
    # Objects seen in several views (a CSV group column or ingest.group_regex): a last phase,
    # "objects", of up to this many steps trains on whole objects, each defective when at
    # least one of its views shows the defect (multiple-instance learning), as evaluate,
    # verify and the edge runtime decide. The earlier phases give every view its object's
    # label, which teaches a view where the damage cannot be seen to call it damaged. Needs
    # ingest.good_class; skipped
    # without grouped views or without a good class in the dataset.
    object_steps: int = 0
    # Save the model averaged over each image and its left-right mirror (test-time
    # augmentation inside the graph: every exported file and the edge do the same, at twice the
    # inference cost). Only where a mirrored image keeps its class; see models.mirror_averaged.
    mirror_average: bool = False
    # Train this many members on the same data, each with its own seed (run seed, +1, ...:
    # head initialisation, batch order, augmentation), and save the average of their scores:
    # one model file whose inference costs that many passes. With little data, which epochs
    # and which shortcuts a network ends on vary from seed to seed; the average varies less.
    ensemble: int = 1
    # Train each model data-parallel on this many devices of this node
    # (tf.distribute.MirroredStrategy: the node's GPUs; on a CPU-only node, logical CPU devices,
    # which test the path but gain no speed). The global batch stays batch_size. Several
    # machines are refused: Keras 3 cannot fit one model across workers (keras-team/keras#20585).
    devices: int = 1
    # Train the ensemble members as Ray tasks (pip install 'indvision[scale]'): "local" starts
    # a Ray for the run, "auto" or ray://host:port joins a cluster (the run folder on a shared
    # filesystem). The pipeline's --ray sets it; null trains them here, one after the other.
    # Each task reserves task_cpus CPUs (TensorFlow's threads sized to them) and task_gpus GPUs.
    ray: str | None = None
    task_cpus: int = 1
    task_gpus: float = 0.0
    # A child (ingest.parent, --from) starts from its parent's trained weights, so it needs
    # fewer updates than a model started from ImageNet: a head phase (backbone frozen, at
    # head_learning_rate) only for the fresh head rows of new classes, then fine-tuning. Its
    # first whole-model phase can end on the parent itself when no epoch makes as few
    # validation errors. The backbone, alpha and input size must be the parent's.
    child_head_steps: int = 100
    child_finetune_steps: int = 300
    # A child validates every this many optimiser steps (in whole epochs, and on its last
    # epoch) instead of after every epoch: it starts from a trained model and moves little
    # between epochs. On NEU (README) every test decision was the same as validating every
    # epoch, and fine-tuning took 85-121 s against 127-142 s. The best epoch and early
    # stopping are chosen among the validated epochs.
    child_validation_steps: int = 60
    # A child with new classes: after training, its old classes' head columns end this share
    # the parent's and the rest its own (weight-space averaging of the two heads, as WiSE-FT
    # averages a fine-tuned model with its start); the backbone and the new columns stay the
    # child's. On NEU with a class held back (README) it kept every old test image in three
    # seeds where the unmixed child lost one in two; in six later seeds it kept two old test
    # images and cost the new class one (bench/head_mix.py). 0: the child's head as trained.
    child_head_mix: float = 0.5
    # Write TensorBoard logs of every fit (epoch loss, accuracy, learning rate and their
    # validation twins) to train/tensorboard/<phase key>; view with
    # ``tensorboard --logdir <run>/train/tensorboard``. Cheap: no graph, histograms or profile.
    tensorboard: bool = True

    def __post_init__(self) -> None:
        models.check_choice(self.backbone, self.alpha,
                            "none" if self.weights == "auto" else self.weights)
        _ = self.input_spec  # validates crop, colour_window and resize
        if not (32 <= self.height <= 1024 and 32 <= self.width <= 1024):
            raise ValueError("height and width must be between 32 and 1024 pixels")
        if (self.weights not in ("auto", "none", "imagenet")
                and not Path(self.weights).expanduser().is_file()):
            raise ValueError(f"weights: no such file {self.weights!r} (give auto, none, "
                                 "imagenet or the path of a weights file)")
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        if self.head_steps < 1 or self.finetune_steps < 0 or self.patience_steps < 0:
            raise ValueError("head_steps must be >= 1, finetune_steps and patience_steps >= 0")
        if self.child_head_steps < 0 or self.child_finetune_steps < 0:
            raise ValueError("child_head_steps and child_finetune_steps must be >= 0")
        if self.child_validation_steps < 1:
            raise ValueError("child_validation_steps must be at least 1 (1: every epoch)")
        if not 0.0 <= self.child_head_mix <= 1.0:
            raise ValueError(f"child_head_mix must be between 0 and 1, got {self.child_head_mix}")
        if self.head_learning_rate <= 0 or self.finetune_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', "
                             f"not {self.class_weight!r}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ValueError("label_smoothing and dropout must be in [0, 1)")
        if self.unfreeze_top_layers is not None and self.unfreeze_top_layers < 1:
            raise ValueError("unfreeze_top_layers must be a positive number of layers")
        if self.object_steps < 0:
            raise ValueError("object_steps must be 0 (off) or more")
        if not 1 <= self.ensemble <= 10:
            raise ValueError("ensemble must be between 1 (one model) and 10 members")
        if self.task_cpus < 1 or self.task_gpus < 0:
            raise ValueError("task_cpus must be at least 1 and task_gpus at least 0")
        if self.devices < 1 or self.batch_size % self.devices:
            raise ValueError(f"devices must be at least 1 and divide batch_size "
                             f"({self.batch_size}), got {self.devices}")

    @property
    def input_spec(self) -> images.InputSpec:
        return images.InputSpec(self.height, self.width, self.resize, self.crop,
                                self.colour_window)

    def resolved_weights(self) -> str:
        return models.default_weights(self.backbone) if self.weights == "auto" else self.weights



# ----------------------------------------------------------------------------- check


def check(config: Config, run: Run) -> None:
    """What can be known wrong once ingest has run, checked before anything trains (the
    pipeline calls this right after ingest): an objects phase without a good class is an
    error; a model input far from the images' size is said, as a warning."""
    from indvision.dataset import read_splits

    rows = [r for r in read_splits(run.artifact("ingest", "splits")) if r["split"] == "train"]
    if not rows:
        raise IndvisionError("the ingest split has no training images; add images")
    record = decision.Decision.from_dict(atomic.read_json(run.artifact("ingest",
                                                                       decision.ARTIFACT)))
    multi_view = record.grouped and max(Counter(r["group"] for r in rows).values()) > 1
    if config.object_steps and multi_view and record.good_index is None:
        raise IndvisionError(
            "train.object_steps needs the good class (an object is good only when every view "
            f"is), and none of the classes {', '.join(record.classes)} is named like one; set "
            "ingest.good_class to the class meaning no damage, or train.object_steps to 0")
    if run.has_artifact("ingest", "parent"):
        check_parent(config, atomic.read_json(run.artifact("ingest", "parent")))
    for warning in input_size_warnings(config, [(int(r["width"]), int(r["height"]))
                                                for r in rows if int(r["width"] or 0)]):
        say(f"train: warning: {warning}")


def check_parent(config: Config, parent: dict) -> None:
    """A child must share its parent's backbone, alpha and input size: its weights fit no
    other."""
    from indvision.training import warmstart

    different = warmstart.mismatches(dataclasses.asdict(config), parent.get("train") or {})
    if different:
        raise IndvisionError(f"the parent run {parent['run_id']} was trained with another "
                             f"model: train.{'; train.'.join(different)}; set them to the "
                             "parent's or start without --from")


def input_size_warnings(config: Config, sizes: list[tuple[int, int]]) -> list[str]:
    """Warnings when the model input is far from the images' (cropped) size: upscaled more than
    2× on both axes adds no detail and costs time; shrunk more than 8× on both can make small
    defects vanish."""
    x0, y0, x1, y1 = config.crop or (0.0, 0.0, 1.0, 1.0)
    keep_w, keep_h = config.colour_window or (1.0, 1.0)
    width = float(np.median([w for w, _ in sizes])) * (x1 - x0) * keep_w
    height = float(np.median([h for _, h in sizes])) * (y1 - y0) * keep_h
    scales = (config.width / width, config.height / height)
    region = "window" if config.colour_window else "crop" if config.crop else "image"
    fix = "set train.height and train.width (or train.crop)"
    if min(scales) > 2:  # every axis
        scale = min(scales)
        return [f"the median training {region} is {width:.0f}x{height:.0f} and the model input "
                f"{config.width}x{config.height}: images are upscaled {scale:.1f}×, which adds "
                f"no detail and costs time; {fix}"]
    if max(scales) < 1 / 8:
        scale = max(scales)
        return [f"the median training {region} is {width:.0f}x{height:.0f} and the model input "
                f"{config.width}x{config.height}: images are shrunk {1 / scale:.0f}×, small "
                f"defects may vanish; {fix}"]
    return []


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Prepared:
    """What every member trains on, rebuilt from the run folder alone (so a Ray task builds
    the same as the stage: :mod:`indvision.training.remote`)."""

    classes: list[str]
    n_train: int
    n_val: int
    augmentation: dict | None
    feed: Any
    weights: str
    parent: dict | None

    @property
    def parent_model(self) -> Path | None:
        return Path(self.parent["model"]) if self.parent else None


def prepare(config: Config, run: Run) -> Prepared:
    """Classes, splits, augmentation, the batches (images decoded once) and the parent."""
    from indvision.dataset import read_splits
    from indvision.training import batches

    classes = json.loads(run.artifact("ingest", "classes").read_text(encoding="utf-8"))
    rows = read_splits(run.artifact("ingest", "splits"))
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    if not train_rows:
        raise IndvisionError("train: the ingest split has no training images")
    augmentation = _augmentation(run)
    splits = batches.load_splits(config, classes, train_rows, val_rows, len(rows))
    good_index = _objects_good_index(config, run, classes, train_rows)
    feed = batches.Feed.build(config, len(classes), splits, augmentation, good_index)
    return Prepared(classes, len(train_rows), len(val_rows), augmentation, feed,
                    config.resolved_weights(), _parent(config, run))


def run(config: Config, run: Run) -> dict[str, Path]:
    """Train (or resume training) and write the model and its records."""
    # Keras is imported here, with the modules that need it: validating a pipeline stays light.
    from indvision.training import devices, phases, remote, saving

    out = run.stage_dir("train")
    state = records.read_state(out)
    resumed = bool(state["history"]) or any(p.get("done") for p in state["phases"].values())
    if resumed:
        say(f"train: resuming after {len(state['history'])} finished epoch(s)")
    prepared = prepare(config, run)
    feed, parent = prepared.feed, prepared.parent
    on_ray = config.ray is not None and config.ensemble > 1
    with devices.scope(1 if on_ray else config.devices) as strategy:
        if strategy is not None:
            say(f"train: data-parallel on {config.devices} devices "
                f"({', '.join(strategy.extended.worker_devices)}), global batch "
                f"{config.batch_size}")
        if on_ray:
            members = remote.train_members(config, run, prepared, out, state)
        else:
            members = [phases.train_member(config, feed, member, member_seed(run.seed, member),
                                           prepared.weights, out, state, prepared.parent_model)
                       for member in range(1, config.ensemble + 1)]
        model = saving.assemble(members, config)
    every_phase = [phase for member in members for phase in member.phases]
    tensorboard = out / records.TENSORBOARD
    result = saving.TrainResult(
        model=model, source=members[-1].source, state=state, phases=every_phase,
        classes=prepared.classes, n_train=prepared.n_train, n_val=prepared.n_val,
        class_weight=feed.class_weight, augmented=prepared.augmentation is not None,
        resumed=resumed,
        recalibrated=members[-1].recalibrated,
        val_accuracy=saving.validation_accuracy(model, feed,
                                                every_phase[-1] if every_phase else None),
        seed=run.seed,
        tensorboard=(Path(os.path.relpath(tensorboard, run.root)).as_posix()
                     if config.tensorboard and tensorboard.is_dir() else None),
        parent=({"run_id": parent["run_id"], "classes_added": parent["classes_added"]}
                if parent else None))
    return saving.write_outputs(out, config, result)


def _parent(config: Config, run: Run) -> dict | None:
    """A child's ``ingest/parent.json``, its model checked unchanged (None: no parent)."""
    if not run.has_artifact("ingest", "parent"):
        return None
    parent = atomic.read_json(run.artifact("ingest", "parent"))
    check_parent(config, parent)
    atomic.check_sha256(parent["model"], parent["model_sha256"],
                        run.artifact("ingest", "parent"))
    return parent


def _augmentation(run: Run) -> dict | None:
    """The augment stage's ``augmentation.json`` (None without the stage or transforms)."""
    if not run.has_artifact("augment", "augmentation"):
        say("train: no augment stage in this pipeline; training without augmentation")
        return None
    augmentation = json.loads(run.artifact("augment", "augmentation")
                              .read_text(encoding="utf-8"))
    return augmentation if augmentation.get("transform", {}).get("transforms") else None


def _objects_good_index(config: Config, run: Run, classes: list[str],
                        train_rows: list[dict[str, str]]) -> int | None:
    """The good class's index when the ``objects`` phase runs, else None (and why). Whether
    views are grouped and which class is good are ingest's facts (its decision record)."""
    if config.object_steps == 0:
        return None
    record = decision.Decision.from_dict(atomic.read_json(run.artifact("ingest",
                                                                       decision.ARTIFACT)))
    if not record.grouped:
        return None
    sizes = Counter(r["group"] for r in train_rows)
    if max(sizes.values()) < 2:
        say("train: every object has one view; no objects phase")
        return None
    if record.good_index is None:
        say("train: views are grouped but no ingest.good_class is among the classes "
              f"{classes}; no objects phase (every view keeps its object's label)")
        return None
    return record.good_index
