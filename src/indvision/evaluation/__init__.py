"""The evaluation core every model kind shares: Keras scoring (:mod:`.scoring`), and the
decision metrics, quality gate, predictions CSV and output files (:mod:`.core`).

The evaluate stage (:mod:`indvision.stages.evaluate`, a classifier) and the anomaly path
(:mod:`indvision.anomaly.evaluation`) each plug their own scoring, threshold and report into
these; verify and export load and score Keras models through the same functions.
"""
