"""What every member trains on, rebuilt from the run folder alone: classes, splits,
augmentation, the batches and the parent — so the stage and a Ray task
(:mod:`indvision.training.ray_members`) build the same.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indvision import atomic, decision
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.rundir import Run
from indvision.training.config import Config


@dataclass(frozen=True)
class ParentModel:
    """The parent's model as the child's ingest recorded it: warm start reads the file once
    and refuses it unless its sha256 is ``sha256`` (recorded in ``recorded_in``)."""

    path: Path
    sha256: str
    recorded_in: Path


@dataclass(frozen=True)
class Prepared:
    """What every member trains on, rebuilt from the run folder alone (so a Ray task builds
    the same as the stage: :mod:`indvision.training.ray_members`)."""

    classes: list[str]
    n_train: int
    n_val: int
    augmentation: dict | None
    feed: Any
    weights: str
    parent: dict | None
    parent_record: Path | None = None  # the child's ingest/parent.json

    @property
    def parent_model(self) -> ParentModel | None:
        if not self.parent or self.parent_record is None:
            return None
        return ParentModel(Path(self.parent["model"]), self.parent["model_sha256"],
                           self.parent_record)


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
    record = run.artifact("ingest", "parent") if run.has_artifact("ingest", "parent") else None
    return Prepared(classes, len(train_rows), len(val_rows), augmentation, feed,
                    config.resolved_weights(), _parent(config, record), record)


def check_parent(config: Config, parent: dict) -> None:
    """A child must share its parent's backbone, alpha and input size: its weights fit no
    other."""
    from indvision.training import warmstart

    different = warmstart.mismatches(dataclasses.asdict(config), parent.get("train") or {})
    if different:
        raise IndvisionError(f"the parent run {parent['run_id']} was trained with another "
                             f"model: train.{'; train.'.join(different)}; set them to the "
                             "parent's or start without --from")


def _parent(config: Config, record: Path | None) -> dict | None:
    """A child's ``ingest/parent.json`` (None: no parent), its model the same as the child's.
    Its bytes are checked against the record where they are read, by warm start
    (:class:`ParentModel`)."""
    if record is None:
        return None
    parent = atomic.read_json(record)
    check_parent(config, parent)
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
