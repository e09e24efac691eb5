"""Integer TFLite (uint8 in/out), calibrated on train images; badly quantised layers stay float.

Calibration uses ``calibration_images`` train images (export loads them into
``job.calibration``) plus one black and one white frame, so the input range is exactly 0..255
(scale 1, zero point 0: a uint8 pixel is fed unchanged, bright or dark frames are not clipped).
Selective quantisation: TFLite's quantisation debugger runs the calibrated model on
``int8_debug_images`` images, and every layer whose int8 output error (RMSE in quantisation
steps) is above ``int8_keep_float_above`` (0.7, TensorFlow's rule of thumb; typically
MobileNetV2's first depthwise conv) is denylisted: it runs in float between a dequantise and a
quantise op. ``model.json`` lists those layers (``float_layers``); null quantises every layer.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic
from indvision.console import say
from indvision.converters import ConvertJob, converter_errors
from indvision.errors import IndvisionError


def convert(model: Any, target: Path, job: ConvertJob) -> dict[str, Any]:
    """Write ``target``; returns ``{"float_layers": [...]}``, the layers kept float."""
    if job.calibration is None or not len(job.calibration):
        raise IndvisionError("int8 export needs calibration images; none were loaded")
    return {"float_layers": write_tflite_int8(model, target, job.calibration,
                                              job.config.int8_keep_float_above,
                                              job.config.int8_debug_images)}


def write_tflite_int8(model: Any, target: Path, calibration: np.ndarray,
                      keep_float_above: float | None, debug_images: int) -> list[str]:
    """Integer TFLite (uint8 in/out) calibrated on ``calibration``; layers whose int8 error is
    above ``keep_float_above`` stay float. Returns the names of the layers kept float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    extremes = np.stack([np.zeros_like(calibration[0]), np.full_like(calibration[0], 255)])
    samples = np.concatenate([extremes, calibration]).astype(np.float32)
    debug = calibration[:debug_images].astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if keep_float_above is not None:  # float kernels for the layers kept float
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with converter_errors("TFLite int8", "tflite_int8"):
        if keep_float_above is None:
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(converter.convert())
            return []
        with warnings.catch_warnings():  # the debugger's own noise: tf.lite.Interpreter inside
            warnings.filterwarnings("ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated")
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([image[None]] for image in debug))
            debugger.run()
        float_layers = _badly_quantised_layers(debugger, keep_float_above)
        blob = tflite_convert.mlir_quantize(
            debugger.calibrated_model, input_data_type=tf.uint8, output_data_type=tf.uint8,
            denylisted_nodes=float_layers or None)
    atomic.write_bytes(target, blob)
    names = [name.split(";")[0] for name in float_layers]  # TFLite joins fused ops' names
    if names:
        say(f"export: int8: {len(names)} layer(s) quantise badly and stay float: "
              f"{', '.join(names)}")
    return names


def _badly_quantised_layers(debugger: Any, limit: float) -> list[str]:
    """Layers whose int8 output RMSE, in quantisation steps, is above ``limit``."""
    import csv
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    chosen = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"])
        error = float(row["mean_squared_error"]) ** 0.5 / scale if scale > 0 else 0.0
        if error > limit:
            chosen.append(row["tensor_name"])
    return chosen
