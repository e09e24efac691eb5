"""The memory bank: greedy k-centre coreset, the score normalisation, the map's upsampling."""

from __future__ import annotations

import numpy as np
import pytest

from indvision.anomaly.bank import greedy_coreset, normalise
from indvision.errors import IndvisionError
from indvision.heatmaps import upsample_map


def test_the_coreset_covers_every_cluster_a_random_sample_of_its_size_misses() -> None:
    rng = np.random.default_rng(0)
    # one big cluster of common patches and four rare ones, far apart, in 300 dimensions
    centres = rng.normal(0, 50, (5, 300))
    sizes = [996, 1, 1, 1, 1]
    points = np.concatenate([c + rng.normal(0, 0.1, (n, 300)) for c, n in zip(centres, sizes,
                                                                               strict=True)])
    owner = np.repeat(np.arange(5), sizes)
    picked = greedy_coreset(points, budget=5, seed=3)
    assert sorted(owner[picked]) == [0, 1, 2, 3, 4]  # every kind of patch, rare ones too
    sample = np.random.default_rng(3).choice(len(points), 5, replace=False)
    assert len(set(owner[sample])) < 5


def test_the_coreset_keeps_everything_within_budget_and_refuses_bad_input() -> None:
    points = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(greedy_coreset(points, budget=10), np.arange(6))
    assert len(set(greedy_coreset(points, budget=4).tolist())) == 4
    with pytest.raises(IndvisionError, match="budget must be at least 1"):
        greedy_coreset(points, budget=0)
    with pytest.raises(IndvisionError, match="non-empty"):
        greedy_coreset(np.zeros((0, 3)), budget=2)


def test_normalised_scores_put_the_threshold_at_one_half_and_keep_their_order() -> None:
    distances = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 100.0])
    scores = normalise(distances, threshold=2.0)
    assert scores[3] == pytest.approx(0.5)
    assert np.all(np.diff(scores) > 0) and scores[0] == 0 and scores[-1] < 1
    assert np.all((scores < 0.5) == (distances < 2.0))
    with pytest.raises(IndvisionError, match="positive"):
        normalise(distances, threshold=0.0)


def test_the_map_is_resized_to_the_input() -> None:
    grid = np.zeros((4, 5), np.float32)
    grid[1, 3] = 1.0
    full = upsample_map(grid, 40, 50)
    assert full.shape == (40, 50)
    y, x = np.unravel_index(np.argmax(full), full.shape)
    assert 10 <= y < 20 and 30 <= x < 40  # the hot cell stays where it was
    with pytest.raises(IndvisionError, match="one \\(h, w\\) map"):
        upsample_map(np.zeros((2, 4, 5)), 40, 50)
