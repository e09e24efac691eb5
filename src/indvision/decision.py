"""The decision record: what a model's scores mean, made once and read by everything after.

A run decides by three facts, each made in exactly one stage and then carried as an artifact:

- **good class** (``ok``, ``intact``; or none: arg-max decisions) — a fact about the labels,
  resolved by *ingest* from its ``good_class`` setting against the dataset's classes;
- **grouping** — which images are views of one object (``group_by``: ``"regex"`` on the file
  name, ``"column"`` from a CSV ``group`` column, or None), found by *ingest*;
- **threshold** on P(good) — calibrated by *evaluate* on the validation split.

Ingest writes ``ingest/decision.json`` (no threshold yet); evaluate adds the threshold and writes
``evaluate/decision.json``; export copies the newest into ``model.json`` ``decision``; train (the
objects phase), verify, ``bench/`` and :mod:`indvision.edge` read it. Nobody re-derives a fact
from a setting. This module is numpy-only: the edge runtime imports it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, metrics
from indvision.errors import IndvisionError

#: How views are grouped into objects: by a regex on the file name, or by a CSV ``group`` column.
GROUP_BY = ("regex", "column")
#: Where a run's current decision record is: evaluate's (with the threshold), else ingest's.
RECORDING_STAGES = ("evaluate", "ingest")
ARTIFACT = "decision"


def group_key(path: str | Path, group_regex: str | None, label: str | None = None,
              fallback: str | None = None) -> str | None:
    """The object an image file belongs to: ``group_regex``'s first group (or its whole match)
    searched on the file name, as ``label/key`` when the image's label is known (a class
    folder's numbering is its own: ``ok/0001_top.jpg`` and ``dent/0001_top.jpg`` are two
    objects); ``fallback`` when there is no regex or no match.

    The one rule for naming objects by file name: ingest, evaluate, verify, the edge runtime and
    the benches all call it, so a file lands in the same object everywhere. (A CSV ``group``
    column names objects itself, across labels.)
    """
    if not group_regex:
        return fallback
    match = re.search(group_regex, Path(path).name)
    if not match:
        return fallback
    key = match.group(1) if match.groups() else match.group(0)
    return f"{label}/{key}" if label else key


def most_common_views(groups: Sequence[str]) -> int | None:
    """The number of views most objects have (ties: the larger), or None without images."""
    if not groups:
        return None
    sizes = Counter(Counter(groups).values())
    best = max(sizes.values())
    return max(size for size, count in sizes.items() if count == best)


@dataclass(frozen=True)
class Decision:
    """How scores become labels, and which images are decided together as one object."""

    classes: tuple[str, ...]
    good_class: str | None = None
    threshold: float | None = None
    group_by: str | None = None  # None, "regex" or "column" (see GROUP_BY)
    group_regex: str | None = None
    views_per_object: int | None = None  # most objects' view count (the edge's watch uses it)
    escape_rate_target: float | None = None
    threshold_calibrated_on: str | None = None  # "images" or "groups"

    def __post_init__(self) -> None:
        if self.good_class is not None and self.good_class not in self.classes:
            raise ValueError(f"good class {self.good_class!r} is not one of {list(self.classes)}")
        if self.group_by is not None and self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY} or None, not {self.group_by!r}")

    @property
    def good_index(self) -> int | None:
        """Index of the good class, or None for arg-max decisions."""
        return None if self.good_class is None else self.classes.index(self.good_class)

    @property
    def grouped(self) -> bool:
        """Whether images are decided per object (several views, any defective one rejects)."""
        return self.group_by is not None

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Class index per row of probabilities (:func:`indvision.metrics.decide`)."""
        return metrics.decide(scores, self.good_index, self.threshold)

    def decide_objects(self, scores: np.ndarray, labels: Sequence[int],
                       groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per object (first-seen order): its true class and its decision on fused views."""
        return metrics.decide_groups(scores, labels, groups, self.good_index, self.threshold)

    def groups_of(self, rows: Sequence[Mapping[str, str]]) -> list[str] | None:
        """The object of each ``splits.csv`` row when decisions are per object, else None."""
        return [r["group"] for r in rows] if self.grouped else None

    def with_threshold(self, threshold: float | None, calibrated_on: str | None,
                       escape_rate_target: float | None) -> Decision:
        """This record with evaluate's calibrated threshold."""
        return dataclasses.replace(self, threshold=threshold,
                                   threshold_calibrated_on=calibrated_on,
                                   escape_rate_target=escape_rate_target)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as written to ``decision.json`` and ``model.json``."""
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], classes: Sequence[str] | None = None) -> Decision:
        """Read a record; ``classes`` fills in for records without them (``model.json`` keeps
        classes beside the decision). Bundles written before ``group_by`` existed decided per
        object exactly when they had a ``group_regex``."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["classes"] = tuple(known.get("classes") or classes or ())
        if "group_by" not in data and data.get("group_regex"):
            known["group_by"] = "regex"
        return cls(**known)


def read_for_run(run: Any) -> Decision:
    """A run's decision record as it stands: evaluate's (with the calibrated threshold) when
    evaluate ran, else ingest's (good class and grouping; arg-max until a threshold exists)."""
    for stage in RECORDING_STAGES:
        if run.has_artifact(stage, ARTIFACT):
            return Decision.from_dict(atomic.read_json(run.artifact(stage, ARTIFACT)))
    raise IndvisionError(f"{run.root}: no decision record (ingest/decision.json); this run was "
                         "made by an older indvision — start a new run")
