"""Good-only anomaly models (issue 18): a PatchCore-style model fitted on good parts alone.

- :mod:`indvision.anomaly.bank` (numpy only): the memory bank of good patch features, reduced by
  a greedy k-centre coreset within a size budget, and the score normalisation the edge shares;
- :mod:`indvision.anomaly.model` (Keras): one model from image to score and anomaly map, with
  the bank a constant inside it, so export, verify and the edge treat it like a classifier.

Not yet wired into a pipeline: ``pipelines/anomaly.yaml`` and its stage are the next step.
"""
