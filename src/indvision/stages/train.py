"""Train: a classifier on the ingested splits, by transfer learning from a linear probe, resumable.

The head starts from a linear probe on the frozen backbone's features (``probe``; else a
``head`` phase), then ``finetune`` unfreezes the top of the backbone at a low learning rate; a
from-scratch backbone has one phase, ``full``. Grouped views add a last ``objects`` phase with
the any-view loss, the rule every later stage decides by. Phases are budgets of optimiser
steps, stop early on validation and keep their best epoch — or their start, when the best
epoch makes more validation errors. After every epoch the state is written atomically, so
``--resume`` loses at most the epoch in progress. ``mirror_average`` and ``ensemble`` average
scores inside the saved graph, so every later stage and the edge compute the same. The
reasons and measurements: docs/stages.md and docs/results.md.

Outputs: ``model.keras``, ``probe.keras`` (with a probe), ``input_spec.json``, ``history.csv``,
``curves.png``, ``train_info.json`` and ``tensorboard/``. This module holds the stage's
:func:`check` and :func:`run`; the work is :mod:`indvision.training`'s.
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


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Train (or resume training) and write the model and its records."""
    # Keras is imported here, with the modules that need it: validating a pipeline stays light.
    from indvision.training import devices, phases, ray_members, saving

    out = run_dir.stage_dir("train")
    state = records.read_state(out)
    resumed = bool(state["history"]) or any(p.get("done") for p in state["phases"].values())
    if resumed:
        say(f"train: resuming after {len(state['history'])} finished epoch(s)")
    prepared = prepare(config, run_dir)
    feed, parent = prepared.feed, prepared.parent
    on_ray = config.ray is not None and config.ensemble > 1
    with devices.scope(1 if on_ray else config.devices) as strategy:
        if strategy is not None:
            say(f"train: data-parallel on {config.devices} devices "
                f"({', '.join(strategy.extended.worker_devices)}), global batch "
                f"{config.batch_size}")
        if on_ray:
            members = ray_members.train_members(config, run_dir, prepared, out, state)
        else:
            members = [phases.train_member(config, feed, member, member_seed(run_dir.seed, member),
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
        seed=run_dir.seed,
        tensorboard=(Path(os.path.relpath(tensorboard, run_dir.root)).as_posix()
                     if config.tensorboard and tensorboard.is_dir() else None),
        parent=({"run_id": parent["run_id"], "classes_added": parent["classes_added"]}
                if parent else None))
    return saving.write_outputs(out, config, result)
