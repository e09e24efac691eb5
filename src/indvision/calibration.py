"""The good-class threshold, chosen on the validation split (evaluate's rule, also used by the
benches that decide a run's scores again).

The lowest threshold that keeps the escape rate (defective items passed as good) at or under
``escape_rate_target`` (:func:`indvision.metrics.threshold_for_escape_rate`), but never one that
rejects more than ``max_false_reject_rate`` of the good validation items
(:func:`indvision.metrics.false_reject_cap`): on a small split one mislabelled defect scoring
0.999 good would otherwise set a threshold above every good part. When the cap wins, the
threshold is the lowest one letting no more defects pass than the cap does (the escape-rate
rule again, with the unavoidable escapes as its target), and :class:`Calibration` names the
defective items that pass, the ones to look at first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import metrics
from indvision.formatting import percent


@dataclass(frozen=True)
class Calibration:
    """How the threshold was chosen (``metrics.json`` ``calibration``).

    ``escape_threshold`` is what the escape-rate target alone asks for, and
    ``false_rejects_at_escape_threshold`` what it would cost among the ``n_good`` good
    validation items; ``false_reject_cap`` is the highest threshold the false-reject rule
    allows (None: no cap). When the cap is lower it wins (``capped``): the threshold is then the
    lowest one passing no more defective items than the cap, and ``escaping`` names the
    defective validation items that pass as good at it."""

    threshold: float
    on: str  # "images" or "groups"
    escape_threshold: float
    false_rejects_at_escape_threshold: int
    n_good: int
    false_reject_cap: float | None = None
    escaping: tuple[str, ...] = ()

    @property
    def capped(self) -> bool:
        return self.threshold < self.escape_threshold

    @property
    def unit(self) -> str:
        return "objects" if self.on == "groups" else "images"

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "on": self.on, "capped": self.capped,
                "escape_threshold": self.escape_threshold,
                "false_rejects_at_escape_threshold": self.false_rejects_at_escape_threshold,
                "n_good": self.n_good, "false_reject_cap": self.false_reject_cap,
                "escaping": list(self.escaping)}

    def warning(self, escape_rate_target: float, max_false_reject_rate: float,
                stage: str = "evaluate",
                shown_as: Callable[[float], str] = lambda t: f"{t:.4f}") -> str:
        """The console line for a capped threshold, naming the first escaping items.
        ``stage`` owns the settings; ``shown_as`` writes a threshold in the unit its reader
        knows (the anomaly fit shows raw distances)."""
        shown = ", ".join(Path(n).name if self.on == "images" else n for n in self.escaping[:5])
        more = f" and {len(self.escaping) - 5} more" if len(self.escaping) > 5 else ""
        return (f"{stage}: warning: meeting the escape-rate target "
                f"{percent(escape_rate_target)} on validation would reject "
                f"{self.false_rejects_at_escape_threshold} of {self.n_good} good {self.unit} "
                f"(threshold {shown_as(self.escape_threshold)}); {stage}.max_false_reject_rate "
                f"{max_false_reject_rate:g} caps it at {shown_as(self.false_reject_cap)}, and "
                f"the threshold is {shown_as(self.threshold)}, passing no more defects than "
                f"the cap: {len(self.escaping)} defective validation {self.unit} pass as good "
                f"— check their labels: {shown}{more}")


def calibrate(val_scores: np.ndarray, val_labels: np.ndarray, val_groups: Sequence[str] | None,
              good_index: int, escape_rate_target: float, max_false_reject_rate: float = 1.0,
              val_names: Sequence[str] | None = None) -> Calibration:
    """The threshold by the rule in the module doc; ``val_names`` name the items (their paths).

    With grouped views the decision unit is the object (it passes only when every view does),
    and its label is the object's: a damaged parcel whose dent shows in one view only has
    another view that looks intact but is labelled damaged. Calibrating per image would push the
    threshold above that clean-looking view and reject intact objects wholesale; so both rates
    are held on the fused validation objects instead (named by their group), as they will be
    decided.
    """
    scores, labels = np.asarray(val_scores, dtype=np.float64), np.asarray(val_labels)
    names = list(val_names) if val_names is not None else [str(i) for i in range(len(labels))]
    on = "images"
    if val_groups is not None:
        names, _, scores = metrics.fuse_groups(scores, val_groups, good_index)
        labels, on = metrics.group_true_labels(labels, val_groups, names, good_index), "groups"
    labels = np.asarray(labels)
    escape = metrics.threshold_for_escape_rate(scores, labels, good_index, escape_rate_target)
    cap = metrics.false_reject_cap(scores, labels, good_index, max_false_reject_rate)
    good = scores[labels == good_index, good_index]
    threshold = escape
    if cap is not None and cap < escape:
        defective = scores[labels != good_index, good_index]
        unavoidable = int((defective >= cap).sum())  # escapes at the cap
        threshold = metrics.threshold_for_escape_rate(scores, labels, good_index,
                                                      unavoidable / max(defective.size, 1))
    passing = scores[:, good_index] >= threshold
    escaping = tuple(names[i] for i in np.flatnonzero(passing & (labels != good_index))
                     ) if threshold < escape else ()
    return Calibration(threshold, on, escape, int((good < escape).sum()), int(good.size), cap,
                       escaping)
