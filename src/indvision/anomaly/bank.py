"""The memory bank of good patches: a greedy k-centre coreset, and the score normalisation.

Every good training patch is a point; a test patch's anomaly is its distance to the nearest
good one, and keeping every patch makes scoring cost grow with the training set (300 parts at
56×56 patches are 940 800 points). The bank keeps ``budget`` of them chosen by greedy k-centre
selection (Sener & Savarese 2018, as PatchCore uses it): each pick is the point farthest from
those already picked, so the bank covers every kind of good patch, rare ones included, which a
random sample of the same size does not. Distances for the selection are measured on a random
Gaussian projection to ``projection_dim`` dimensions (Johnson–Lindenstrauss: distances kept
within a few per cent), which makes each step O(points × projection_dim).

Numpy only: the edge runtime imports :func:`normalise`.
"""

from __future__ import annotations

import numpy as np

from indvision.errors import IndvisionError


def greedy_coreset(features: np.ndarray, budget: int, seed: int = 0,
                   projection_dim: int = 128) -> np.ndarray:
    """Indices (in pick order) of ``budget`` rows of ``features`` (points × dims) chosen by
    greedy k-centre selection on a random projection, starting from a seeded random row.
    All rows when ``budget`` covers them."""
    points = np.asarray(features, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] == 0:
        raise IndvisionError(f"coreset: expected a non-empty (points, dims) array, got shape "
                             f"{points.shape}")
    if budget < 1:
        raise IndvisionError(f"coreset: the budget must be at least 1, got {budget}")
    n, dims = points.shape
    if budget >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if dims > projection_dim:
        projection = rng.standard_normal((dims, projection_dim)).astype(np.float32)
        points = points @ (projection / np.sqrt(projection_dim))
    squared = np.einsum("ij,ij->i", points, points)
    picked = np.empty(budget, dtype=np.int64)
    picked[0] = rng.integers(n)
    nearest = np.full(n, np.inf, dtype=np.float32)
    for step in range(budget):
        if step:
            picked[step] = int(np.argmax(nearest))
        centre = points[picked[step]]
        distance = squared - 2.0 * (points @ centre) + squared[picked[step]]
        np.minimum(nearest, distance, out=nearest)
    return picked


def normalise(distance: np.ndarray | float, threshold: float) -> np.ndarray:
    """Raw distances → [0, 1), monotone, with ``threshold`` at exactly 0.5: ``d / 2t`` up to
    the threshold, ``1 − t / 2d`` above it. A score keeps its order and the bundle's decision is
    ``score >= 0.5`` whatever the data's distance scale."""
    if not threshold > 0:
        raise IndvisionError(f"anomaly: the raw threshold must be positive, got {threshold}")
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    below = d / (2.0 * threshold)
    above = 1.0 - threshold / (2.0 * np.maximum(d, threshold))
    return np.where(d <= threshold, below, above)

