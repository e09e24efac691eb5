"""Every Keras layer indvision puts in saved models; importing this module registers them.

A ``model.keras`` that uses one loads only after this module is imported:
:func:`indvision.models.load_model` does that, and is how every stage loads a model. It imports
nothing from indvision, so anything may import it. Each layer is registered as
``indvision>ClassName`` (``PACKAGE`` and an explicit name): the name saved in every model file,
kept when a class moves, so older files keep loading.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

#: The registration package of every layer here (saved as ``indvision>Name`` in model files).
PACKAGE = "indvision"


@keras.saving.register_keras_serializable(package=PACKAGE, name="MirrorLeftRight")
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


# ----------------------------------------------------------------------------- anomaly model
# The anomaly model's layers (:mod:`indvision.anomaly.model` builds the graph from them).


@keras.saving.register_keras_serializable(package=PACKAGE, name="NearestPatchDistance")
class NearestPatchDistance(keras.layers.Layer):
    """Each patch's distance to its nearest row of the bank: ``(B, h, w, D)`` → ``(B, h, w)``.

    The bank is a non-trainable weight (a constant in every exported graph). Squared distances
    are expanded as ``|p|² − 2 p·m + |m|²`` so the work is one matmul, clipped at 0 before the
    square root. Patches and bank are first centred on the bank's mean (``centre``): the
    expansion cancels for a patch close to the bank, and uncentred ReLU features have ``|p|²``
    in the thousands, which made runtimes disagree by 0.5 % on near-good patches. The cross
    term ``p·m`` is a 1x1 convolution whose kernel is the bank. (The exact
    ``|p − m|`` of the nearest row needs ``argmin``, which Keras builds with a ``Bitcast``
    that ONNX does not have.) Distances below ``floor`` read as ``floor``: where a patch
    matches a bank patch almost exactly, the expansion's rounding (about 1e-7 of ``|p|²``)
    is all that is left and its square root differs between runtimes by more than the parity
    gate allows (2.6e-4 measured on a training image); the fitted model sets the floor to
    :data:`FLOOR_SHARE` of its threshold — a patch that close is a perfect match either way."""

    def __init__(self, bank_size: int, dims: int, floor: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bank_size, self.dims, self.floor = int(bank_size), int(dims), float(floor)

    def build(self, input_shape: Any) -> None:
        self.bank = self.add_weight(shape=(self.bank_size, self.dims), initializer="zeros",
                                    trainable=False, name="bank")
        self.centre = self.add_weight(shape=(self.dims,), initializer="zeros", trainable=False,
                                      name="centre")

    def set_bank(self, bank: np.ndarray) -> None:
        """Store ``bank`` (rows × dims) centred on its mean, and the mean."""
        bank = np.asarray(bank, dtype=np.float32)
        centre = bank.mean(axis=0)
        self.set_weights([bank - centre, centre])

    def call(self, patches: Any) -> Any:
        ops = keras.ops
        patches = patches - self.centre
        bank_squared = ops.sum(ops.square(self.bank), axis=-1)
        patch_squared = ops.sum(ops.square(patches), axis=-1, keepdims=True)
        # every patch against every bank row: a 1x1 convolution with the bank as its kernel
        # (a matmul on the 4-D patches is what OpenCV's dnn cannot run)
        kernel = ops.reshape(ops.transpose(self.bank), (1, 1, self.dims, self.bank_size))
        cross = ops.conv(patches, kernel)
        squared = patch_squared - 2.0 * cross + bank_squared
        return ops.sqrt(ops.maximum(ops.min(squared, axis=-1), self.floor ** 2))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bank_size": self.bank_size, "dims": self.dims,
                "floor": self.floor}


@keras.saving.register_keras_serializable(package=PACKAGE, name="NormalisedScore")
class NormalisedScore(keras.layers.Layer):
    """Raw distances → [0, 1) with the raw ``threshold`` at 0.5 (the same formula as
    :func:`indvision.anomaly.bank.normalise`): ``d / 2t`` below it, ``1 − t / 2d`` above."""

    def __init__(self, threshold: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not threshold > 0:
            raise ValueError(f"the raw threshold must be positive, got {threshold}")
        self.threshold = float(threshold)

    def call(self, distance: Any) -> Any:
        ops, t = keras.ops, self.threshold
        d = ops.maximum(distance, 0.0)
        return ops.where(d <= t, d / (2.0 * t), 1.0 - t / (2.0 * ops.maximum(d, t)))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=PACKAGE, name="BorderPad")
class BorderPad(keras.layers.Layer):
    """``(B, h, w)`` interior distances → ``(B, h + 2·border, w + 2·border)``, the border zero:
    the map keeps the patch grid of the whole input, and a zero never decides the worst
    patch (distances are ≥ 0)."""

    def __init__(self, border: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border = int(border)

    def call(self, distances: Any) -> Any:
        b = self.border
        return keras.ops.pad(distances, [[0, 0], [b, b], [b, b]])

    def compute_output_shape(self, input_shape: Any) -> Any:
        grow = 2 * self.border
        return (input_shape[0], *(None if d is None else d + grow for d in input_shape[1:]))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "border": self.border}


@keras.saving.register_keras_serializable(package=PACKAGE, name="WorstPatch")
class WorstPatch(keras.layers.Layer):
    """The image's probabilities from its worst (highest) patch: ``(B, h, w)`` → ``(B, 2)``,
    [1 − worst, worst] — P(good) and P(anomaly)."""

    def call(self, patch_scores: Any) -> Any:
        worst = keras.ops.max(patch_scores, axis=(1, 2))[:, None]
        return keras.ops.concatenate([1.0 - worst, worst], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], 2)
