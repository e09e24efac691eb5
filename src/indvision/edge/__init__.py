"""The edge runtime: run an exported bundle with numpy, OpenCV and onnxruntime only.

``python -m indvision.edge predict|evaluate|watch ...`` (usage: :mod:`indvision.edge.cli`, or
``--help``); in Python, :class:`EdgeClassifier`. One module per concern:

- :mod:`~indvision.edge.runtime` — :class:`EdgeClassifier` (bundle checks, ``predict``,
  ``predict_groups``), :func:`resolve_bundle`, :func:`check_model_json`,
  :func:`predict_files` / :func:`predict_objects` (what ``predict`` prints);
- :mod:`~indvision.edge.objects` — views of one object fused into one result (pure: no model);
- :mod:`~indvision.edge.evaluate` — a folder-per-class tree scored (``evaluate``);
- :mod:`~indvision.edge.golden` — golden files, the regression guard (``--golden``);
- :mod:`~indvision.edge.watching` — folders being filled, video files, cameras (``watch``);
- :mod:`~indvision.edge.cli` — the command line.

The package never imports TensorFlow or Keras (a test imports every module in a fresh
interpreter and checks).
"""

from indvision.edge.cli import build_parser, main
from indvision.edge.evaluate import TreePredictions, evaluate_tree, predict_tree
from indvision.edge.golden import (
    GOLDEN_FORMAT,
    MAX_LISTED,
    SAME_MODEL_TOLERANCE,
    check_floors,
    compare_golden,
    golden_record,
    golden_summary,
    read_golden,
)
from indvision.edge.objects import ObjectRule, PendingObjects, fuse_objects, object_rule
from indvision.edge.runtime import (
    LATEST,
    EdgeClassifier,
    ImageInput,
    as_rgb_uint8,
    check_model_json,
    image_files,
    predict_files,
    predict_objects,
    resolve_bundle,
    score_files,
)
from indvision.edge.watching import watch

__all__ = [
    "GOLDEN_FORMAT", "LATEST", "MAX_LISTED", "SAME_MODEL_TOLERANCE", "EdgeClassifier",
    "ImageInput", "ObjectRule", "PendingObjects", "TreePredictions", "as_rgb_uint8",
    "build_parser", "check_floors", "check_model_json", "compare_golden", "evaluate_tree",
    "fuse_objects", "golden_record", "golden_summary", "image_files", "main", "object_rule",
    "predict_files", "predict_objects", "predict_tree", "read_golden", "resolve_bundle",
    "score_files", "watch",
]
