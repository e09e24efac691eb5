"""Keras layers indvision puts in saved models; importing this module registers them.

Every ``model.keras`` that uses one needs this module imported before ``load_model``:
:func:`indvision.models.load_model` does that, and is how every stage loads a model. The
anomaly model's layers live beside it (:mod:`indvision.anomaly.model`) and are registered here
too, at the end of this module.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="indvision")
class MirrorLeftRight(keras.layers.Layer):
    """The image mirrored left to right (``(batch, H, W, C)``, flips W).

    No weights. Written as a slice with step -1, not ``keras.ops.flip``: tf2onnx exports a
    reverse as ``ReverseSequence``, which OpenCV's dnn cannot load, and this slice as ``Slice``,
    which onnxruntime, OpenCV and LiteRT all run — so an exported model repeats it exactly on
    every runtime. The registered name and config are unchanged: older ``model.keras`` files
    load and compute the same.
    """

    def call(self, inputs: Any) -> Any:
        return inputs[:, :, ::-1, :]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


from indvision.anomaly import model as _anomaly_layers  # noqa: E402, F401  (registers them)
