"""The anomaly model's threshold on raw patch distances, chosen on the validation split.

Two rules, both recorded in ``fit/fit_report.json`` and ``model.json``:

- **good quantile** (no defective validation image): the ``k``-th highest of the ``n`` good
  validation scores, ``k = floor(false_reject_target × (n + 1))``. A new good part scores above
  it with probability ``k / (n + 1)`` (order statistics, whatever the scores' distribution),
  at most the target (docs/results.md). Where ``n + 1 < 1 / target`` it is the highest score and
  a warning says how many more good images would do.
- **escape rate** (defective validation images exist): the classifiers' rule
  (:func:`indvision.calibration.calibrate`) on ``P(good) = 0.5 + 0.5 / (1 + raw)``, strictly
  decreasing in the raw distance, so its threshold maps back to a raw distance exactly.

An image is good when its raw worst-patch distance is at most the threshold; the model
normalises distances so it sits at 0.5 (:func:`indvision.anomaly.bank.normalise`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indvision import calibration
from indvision.errors import IndvisionError

GOOD_QUANTILE = "good quantile"
ESCAPE_RATE = "escape rate"


@dataclass(frozen=True)
class RawThreshold:
    """The chosen raw threshold, the rule that chose it, and the other rule's answer."""

    threshold: float
    rule: str
    good_quantile: float
    escape_rate: float | None = None
    calibration: dict[str, Any] | None = field(default=None)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"raw_threshold": self.threshold, "rule": self.rule,
                "by_rule": {GOOD_QUANTILE: self.good_quantile, ESCAPE_RATE: self.escape_rate},
                "calibration": self.calibration}


def good_quantile(good_raw: np.ndarray, false_reject_target: float) -> float:
    """The ``k``-th highest good score, ``k = max(1, floor(target × (n + 1)))`` (module doc)."""
    scores = np.sort(np.asarray(good_raw, dtype=np.float64))
    if scores.size == 0:
        raise IndvisionError("anomaly threshold: no good validation image to calibrate on")
    k = max(1, int(np.floor(false_reject_target * (scores.size + 1) + 1e-9)))
    return float(scores[scores.size - k])


def too_few_good(n_good: int, false_reject_target: float) -> str | None:
    """The warning for a validation set too small to promise ``false_reject_target``."""
    if false_reject_target * (n_good + 1) >= 1 - 1e-9:
        return None
    needed = int(np.ceil(1 / false_reject_target - 1e-9)) - 1
    return (f"fit: warning: {n_good} good validation images cannot promise "
            f"{100 * false_reject_target:g} % false rejects: the threshold at their highest "
            f"score promises about {100 / (n_good + 1):.1f} %; {needed} good validation images "
            "would do (add good images, or raise fit.false_reject_target)")


def as_good_probability(raw: np.ndarray) -> np.ndarray:
    """``0.5 + 0.5 / (1 + raw)``: raw distance → a P(good) in (0.5, 1], strictly decreasing."""
    return 0.5 + 0.5 / (1.0 + np.maximum(np.asarray(raw, dtype=np.float64), 0.0))


def from_good_probability(threshold: float) -> float:
    """The raw distance a P(good) threshold of :func:`as_good_probability` stands for."""
    return 1.0 / (2.0 * threshold - 1.0) - 1.0


def choose(raw: np.ndarray, is_defect: np.ndarray, names: Sequence[str],
           false_reject_target: float, escape_rate_target: float,
           max_false_reject_rate: float) -> RawThreshold:
    """The threshold for these validation scores by the rule in the module doc."""
    raw, is_defect = np.asarray(raw, dtype=np.float64), np.asarray(is_defect, dtype=bool)
    quantile = good_quantile(raw[~is_defect], false_reject_target)
    if not is_defect.any():
        return RawThreshold(quantile, GOOD_QUANTILE, quantile,
                            warning=too_few_good(int((~is_defect).sum()), false_reject_target))
    probabilities = as_good_probability(raw)
    scores = np.stack([probabilities, 1.0 - probabilities], axis=1)
    found = calibration.calibrate(scores, is_defect.astype(int), None, 0, escape_rate_target,
                                  max_false_reject_rate, names)
    if found.threshold <= 0.5:  # the target lets every defect pass: no escape-rate answer
        return RawThreshold(quantile, GOOD_QUANTILE, quantile, None, found.to_dict())
    escape = from_good_probability(found.threshold)
    warning = (found.warning(escape_rate_target, max_false_reject_rate, "fit",
                             lambda t: f"{from_good_probability(t):.4g} (raw distance)")
               if found.capped else None)
    return RawThreshold(escape, ESCAPE_RATE, quantile, escape, found.to_dict(), warning)

