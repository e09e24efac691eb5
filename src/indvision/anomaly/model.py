"""One Keras model from image to anomaly score and map, the memory bank a constant inside it.

Image (0–255, NHWC) → the backbone's scaling → features at two depths (``FEATURE_LAYERS``),
each averaged over a ``neighbourhood`` window → the deeper resized to the shallower grid and
concatenated → a fixed random projection to ``projection_dim`` → the outer ``border`` patches cut
(:func:`interior`: they see the zero padding) → each patch's distance to its nearest bank patch
(:class:`NearestPatchDistance`), the border put back as zeros (:class:`BorderPad`) → normalised
so the raw threshold sits at 0.5 (:class:`NormalisedScore`). Outputs: ``probabilities`` ``(B,
2)`` ([P(good), P(anomaly)], the worst patch: the shape of every classifier bundle, so later
stages and the edge decide it alike) and ``map`` ``(B, h, w)`` on the patch grid.

Plain Keras ops only, so tf2onnx and LiteRT convert it with a dynamic batch. Imports Keras at
its top; its layers live in :mod:`indvision.layers`, where every saved layer is registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from indvision import models
from indvision.anomaly.bank import greedy_coreset
from indvision.errors import IndvisionError
from indvision.layers import BorderPad, NearestPatchDistance, NormalisedScore, WorstPatch

#: The two depths whose features make a patch, per backbone (shallow, high resolution first:
#: casting's small defects show there).
FEATURE_LAYERS: dict[str, tuple[str, str]] = {
    "mobilenet_v2": ("block_3_expand_relu", "block_6_expand_relu"),
}


#: The fitted model's distance floor, as a share of its raw threshold (normalised: 0.005).
FLOOR_SHARE = 0.01


def interior(grid_patches: np.ndarray, border: int) -> np.ndarray:
    """``(..., h, w, D)`` patches without the outer ``border`` rows and columns of the grid."""
    if border == 0:
        return grid_patches
    return grid_patches[..., border:-border, border:-border, :]


def check_border(grid: tuple[int, int], border: int) -> None:
    """The border must leave patches to judge: ``2 × border`` below each side of the grid."""
    if border < 0 or 2 * border >= min(grid):
        raise IndvisionError(f"anomaly: a border of {border} patches leaves nothing of the "
                             f"{grid[0]}×{grid[1]} patch grid to judge; use 0 to "
                             f"{(min(grid) - 1) // 2}")


def patch_extractor(backbone: str, height: int, width: int, weights: str,
                    neighbourhood: int = 3, projection_dim: int | None = 128,
                    seed: int = 0) -> keras.Model:
    """Image (0–255) → locally aware patch features ``(B, h, w, D)`` on the shallow layer's
    grid, from the backbone's ``FEATURE_LAYERS``, projected to ``projection_dim`` dimensions
    by a seeded Gaussian matrix (None, or a dimension at least the features', keeps them)."""
    if backbone not in FEATURE_LAYERS:
        raise IndvisionError(f"anomaly: backbone '{backbone}' has no feature layers; "
                             f"choose one of {sorted(FEATURE_LAYERS)}")
    if neighbourhood < 1 or neighbourhood % 2 == 0:
        raise IndvisionError(f"anomaly: the neighbourhood must be an odd number ≥ 1, got "
                             f"{neighbourhood}")
    net, _ = models.build_backbone(backbone, height, width, weights, setting="fit.weights")
    features = keras.Model(net.input, [net.get_layer(name).output
                                       for name in FEATURE_LAYERS[backbone]], name="features")
    features.trainable = False
    image = keras.Input((height, width, 3), name="image")
    scale, offset = models.get_backbone(backbone).rescale or (1.0, 0.0)
    maps = features(keras.layers.Rescaling(scale, offset)(image), training=False)
    pooled = [keras.layers.AveragePooling2D(neighbourhood, strides=1, padding="same")(m)
              if neighbourhood > 1 else m for m in maps]
    grid = pooled[0].shape[1:3]
    aligned = [pooled[0]] + [keras.layers.Resizing(grid[0], grid[1], interpolation="bilinear")(m)
                             for m in pooled[1:]]
    patches = keras.layers.Concatenate()(aligned)
    dims = patches.shape[-1]
    if projection_dim is not None and projection_dim < dims:
        # a 1x1 convolution, not a dense layer: the same numbers, and OpenCV's dnn runs it
        project = keras.layers.Conv2D(projection_dim, 1, use_bias=False, trainable=False,
                                      name="projection")
        patches = project(patches)
        matrix = np.random.default_rng(seed).standard_normal((dims, projection_dim))
        project.set_weights([(matrix / np.sqrt(projection_dim)).astype(np.float32)[None, None]])
    return keras.Model(image, patches, name="patches")


def good_patches(extractor: keras.Model, batches: Iterable[np.ndarray],
                 border: int = 0) -> np.ndarray:
    """Every patch feature of the good images in ``batches`` inside the grid's ``border``:
    ``(images × (h − 2·border) × (w − 2·border), D)``."""
    rows = [interior(np.asarray(extractor.predict_on_batch(batch), dtype=np.float32), border)
            for batch in batches]
    if not rows:
        raise IndvisionError("anomaly: no good image to fit the memory bank on")
    stacked = np.concatenate(rows)
    return stacked.reshape(-1, stacked.shape[-1])


def build_bank(patches: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """The bank: ``budget`` rows of ``patches`` by greedy k-centre selection."""
    return patches[greedy_coreset(patches, budget, seed)]


def _distances(extractor: keras.Model, bank: np.ndarray, border: int,
               floor: float = 0.0) -> Any:
    """The graph from the extractor's patches to each patch's raw distance on the whole grid
    (the ``border`` cut before the bank, put back as zeros after it)."""
    patches = extractor.output
    check_border(tuple(patches.shape[1:3]), border)
    if border:
        patches = keras.layers.Cropping2D(border, name="interior")(patches)
    nearest = NearestPatchDistance(bank.shape[0], bank.shape[1], floor, name="nearest_patch")
    distances = nearest(patches)
    nearest.set_bank(bank)
    return BorderPad(border, name="border")(distances) if border else distances


def build_anomaly_model(extractor: keras.Model, bank: np.ndarray, threshold: float,
                        border: int = 0) -> keras.Model:
    """The fitted model: outputs ``[probabilities (B, 2), map (B, h, w)]`` on the patch grid,
    normalised (the raw ``threshold`` at 0.5), the outer ``border`` patches 0 (not judged).
    The map stays on the grid: resizing it to the input is display work the runtime does
    (:func:`indvision.heatmaps.upsample_map`), and a resize inside the graph is where
    TensorFlow and ONNX disagree (0.4 % on a 4× bilinear resize, measured)."""
    if not threshold > 0:
        raise IndvisionError(f"anomaly: the raw threshold must be positive, got {threshold}")
    image = extractor.input
    distances = _distances(extractor, bank, border, FLOOR_SHARE * threshold)
    normalised = NormalisedScore(threshold, name="normalised")(distances)
    probabilities = WorstPatch(name="probabilities")(normalised)
    heatmap = keras.layers.Identity(name="map")(normalised)
    return keras.Model(image, [probabilities, heatmap], name="anomaly")


def raw_model(extractor: keras.Model, bank: np.ndarray, border: int = 0) -> keras.Model:
    """Image → each patch's raw distance to its nearest bank patch ``(B, h, w)``, the
    ``border`` 0: what the threshold is calibrated on, before it is known."""
    return keras.Model(extractor.input, _distances(extractor, bank, border), name="raw_anomaly")
