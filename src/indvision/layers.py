"""Keras layers indvision puts in saved models; importing this module registers them.

Every ``model.keras`` that uses one needs this module imported before ``load_model``:
:func:`indvision.models.load_model` does that, and is how every stage loads a model.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="indvision")
class MirrorLeftRight(keras.layers.Layer):
    """The image mirrored left to right (``(batch, H, W, C)``, flips W).

    No weights; a plain tensor reverse that ONNX (via tf2onnx) and LiteRT both carry, so an
    exported model repeats it exactly on the device.
    """

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
