"""Growing the head for new classes: the parent's rows bit for bit, fresh rows beside them."""

from __future__ import annotations

import numpy as np
import pytest

from indvision.errors import IndvisionError
from indvision.training.warmstart import grow_head, mismatches


def test_growing_keeps_the_old_columns_bit_exact_and_adds_fresh_ones() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1280, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    grown_kernel, grown_bias = grow_head(kernel, bias, 6, seed=3)
    assert grown_kernel.shape == (1280, 6) and grown_bias.shape == (6,)
    assert grown_kernel.dtype == kernel.dtype and grown_bias.dtype == bias.dtype
    assert np.array_equal(grown_kernel[:, :5], kernel)  # bit for bit: old indices keep meaning
    assert np.array_equal(grown_bias[:5], bias)
    limit = np.sqrt(6.0 / (1280 + 6))
    assert np.abs(grown_kernel[:, 5]).max() <= limit and grown_kernel[:, 5].std() > limit / 4
    assert grown_bias[5] == pytest.approx(bias.mean())
    again, _ = grow_head(kernel, bias, 6, seed=3)
    assert np.array_equal(again, grown_kernel)  # seeded by the run


def test_no_new_class_changes_nothing_and_fewer_classes_is_refused() -> None:
    kernel, bias = np.ones((8, 3), np.float32), np.zeros(3, np.float32)
    same_kernel, same_bias = grow_head(kernel, bias, 3, seed=0)
    assert np.array_equal(same_kernel, kernel) and np.array_equal(same_bias, bias)
    with pytest.raises(IndvisionError, match="keeps every class of its parent"):
        grow_head(kernel, bias, 2, seed=0)


def test_a_child_must_share_the_parents_backbone_and_input_size() -> None:
    parent = {"backbone": "mobilenet_v2", "alpha": 1.0, "height": 160, "width": 160}
    assert mismatches(dict(parent, dropout=0.5), parent) == []
    found = mismatches(dict(parent, height=224), parent)
    assert found == ["height 224 (the parent's is 160)"]
