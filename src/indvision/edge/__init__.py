"""The edge runtime: run an exported bundle with numpy, OpenCV and onnxruntime only.

``python -m indvision.edge <command> --help`` (:mod:`indvision.edge.cli`); in Python,
:class:`EdgeClassifier`. The runtime (:mod:`~indvision.edge.runtime`: bundle checks,
``predict``, ``predict_groups``), one module per command's work (``evaluate``, ``golden``,
``watching``, ``collect``, ``ray_predict``, ``info``), objects fused from their views
(``objects``), and the HTTP service (``service``, ``service_core``, ``service_routes``,
``hotswap``). The package never imports TensorFlow or Keras (a test imports every module in a
fresh interpreter and checks).
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
