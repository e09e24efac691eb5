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

This module holds the stage's :func:`check` and :func:`run`; the configuration is
:class:`indvision.training.config.Config` (named ``Config`` here, for the stage table), and the
work is done by :mod:`indvision.training`: ``prepare`` (what every member trains on), ``plan``
(phases, seeds, class weights), ``batches`` (the image cache and the batches), ``phases``
(fitting, early stopping, resuming, TensorBoard), ``probe`` (the linear probe), ``records``
(state.json, history.csv, curves.png) and ``saving`` (the saved model and train_info.json).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from indvision import atomic, decision
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.rundir import Run
from indvision.training import records
from indvision.training.config import Config
from indvision.training.plan import (  # noqa: F401 (the stage's public names)
    Phase,
    balanced_class_weights,
    member_seed,
    phases_for,
)
from indvision.training.prepare import Prepared, check_parent, prepare  # noqa: F401
from indvision.training.records import HISTORY_COLUMNS, STATE  # noqa: F401

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


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
