"""One small runner per runtime: numpy batch in, probabilities out.

Each module here (``onnxruntime``, ``litert``, ``opencv``) has one ``load(model, threads,
spin_wait, name) -> Runner`` that builds from the model's bytes (``name``, its file, only for
messages: the checked bytes are what runs, the file is never reopened);
:func:`indvision.formats.load_runner` picks the module by the runtime
name a format's row lists. Edge-safe: numpy, OpenCV, onnxruntime and ai_edge_litert only, each
imported when a runner is made — never TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: A loaded model: a batch ``N x H x W x 3`` (uint8 or float32, values 0..255) → ``N x C``
#: float32 probabilities.
Runner = Callable[[np.ndarray], np.ndarray]
#: A model with a map as its second output (an anomaly model): batch → (probabilities
#: ``N x C``, maps ``N x h x w``), both float32. A runtime module offers ``load_maps`` where it
#: can run one.
MapRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def as_batch(batch: np.ndarray) -> np.ndarray:
    """``batch`` as an array, refusing anything but ``N x H x W x 3``."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a batch N x H x W x 3, got shape {batch.shape}")
    return batch


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """A model's outputs as (probabilities, map or None), whatever order a converter gave
    them: probabilities are the ``N x C`` output, the map the other (``N x h x w`` for an
    anomaly model, ``N x h x w x C`` class-activation maps for a classifier)."""
    ranked = sorted(range(len(outputs)), key=lambda i: np.ndim(outputs[i]) != 2)
    probabilities = outputs[ranked[0]]
    rest = [outputs[i] for i in ranked[1:]]
    return probabilities, (rest[0] if rest else None)
