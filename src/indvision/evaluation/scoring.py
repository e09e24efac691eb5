"""One way to run a Keras model over images: batch by batch, probabilities and optional maps.

Evaluate, the anomaly evaluation and verify all score through :func:`score`, so the images a
model sees, its batches and the check that its outputs are probabilities are the same
everywhere. Only one batch of images is decoded at a time when the inputs are file paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from indvision import images
from indvision.console import say
from indvision.errors import IndvisionError


def image_batches(inputs: Sequence[str] | np.ndarray, spec: images.InputSpec,
                  batch_size: int) -> Iterator[np.ndarray]:
    """float32 batches of image files (each batch decoded when it is reached,
    :func:`indvision.images.load`) or of an N x H x W x 3 image array."""
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        batch = (chunk if isinstance(chunk, np.ndarray)
                 else np.stack([images.load(path, spec) for path in chunk]))
        yield batch.astype(np.float32)


def score(model: Any, inputs: Sequence[str] | np.ndarray, spec: images.InputSpec,
          batch_size: int, split: str | None = None, maps: bool = False
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (N x C, float64) of image files (or of an N x H x W x 3 uint8 array) and,
    with ``maps`` and a model with a map output, its maps (float32; else None).

    ``split`` names the images in evaluate's progress lines (None: quiet). Raises when the
    outputs are not probabilities (each row must sum to 1).
    """
    n_classes = model.outputs[0].shape[-1]
    with_maps = maps and len(model.outputs) > 1
    if not len(inputs):
        return np.zeros((0, n_classes)), (
            np.zeros((0, *model.outputs[1].shape[1:]), dtype=np.float32) if with_maps else None)
    if split is not None:
        say(f"evaluate: scoring {len(inputs)} {split} images")
    probs, heat = [], []
    for start, batch in zip(range(0, len(inputs), batch_size),
                            image_batches(inputs, spec, batch_size), strict=True):
        out = model.predict_on_batch(batch)
        if len(model.outputs) > 1:
            out, out_maps = out[0], out[1]
            if with_maps:
                heat.append(np.asarray(out_maps, dtype=np.float32))
        probs.append(np.asarray(out))
        done = start + len(batch)
        if split is not None and (start // batch_size) % 20 == 19 and done < len(inputs):
            say(f"evaluate: scored {done}/{len(inputs)} {split} images")
    scores = np.concatenate(probs).astype(np.float64)
    if (not np.isfinite(scores).all() or (scores < -1e-6).any()
            or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
        raise IndvisionError("the model's outputs are not probabilities (each row must sum to "
                             "1): the model convention needs a softmax last layer; re-run train")
    return scores, (np.concatenate(heat) if with_maps else None)


def score_images(model: Any, paths: Sequence[str], spec: images.InputSpec, batch_size: int,
                 split: str | None = "") -> np.ndarray:
    """The probabilities of :func:`score` alone."""
    return score(model, paths, spec, batch_size, split)[0]
