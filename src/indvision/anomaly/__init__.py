"""Good-only anomaly models: a PatchCore-style model fitted on good parts alone.

- :mod:`indvision.anomaly.bank` (numpy only): the memory bank of good patch features, reduced by
  a greedy k-centre coreset within a size budget, and the score normalisation the edge shares;
- :mod:`indvision.anomaly.model` (Keras): one model from image to probabilities and anomaly
  map, with the bank a constant inside it, so export, verify and the edge treat it like a
  classifier;
- :mod:`indvision.stages.fit` fits it in ``pipelines/anomaly.yaml``, after a good-only ingest
  (``ingest.good_only``: defect folders go to validation and test only).

An anomaly model's classes are ``[<good class>, ANOMALY]``; the dataset's other folders are
defect *types*, reported one by one but decided as one class. Numpy only here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ANOMALY = "anomaly"  # the second class of every anomaly model: anything not good


def model_classes(good_class: str) -> list[str]:
    """An anomaly model's classes, in its output order."""
    return [good_class, ANOMALY]


def is_defect(labels: Sequence[str], good_class: str) -> np.ndarray:
    """True for every label that is not the good class (a defect type, or ``anomaly``)."""
    return np.array([label != good_class for label in labels], dtype=bool)
