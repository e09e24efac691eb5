"""TFLite float32 through Keras' LiteRT export (int8: :mod:`indvision.converters.tflite_int8`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.converters import INPUT_NAME, ConvertJob, converter_errors


def convert(model: Any, target: Path, job: ConvertJob) -> dict[str, Any]:
    """Write ``target`` with builtin ops only; reads no export options, adds no fields."""
    import tensorflow as tf

    spec = job.spec
    signature = [tf.TensorSpec((None, spec.height, spec.width, 3), tf.float32, name=INPUT_NAME)]
    with converter_errors("TFLite float", "tflite"), atomic.atomic_path(target) as tmp:
        model.export(str(tmp), format="litert", verbose=False, input_signature=signature,
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    return {}
