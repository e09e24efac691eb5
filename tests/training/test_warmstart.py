"""Growing the head for new classes: the parent's rows bit for bit, fresh rows beside them;
mixing a trained child's old rows back toward the parent's."""

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


def test_mixing_moves_only_the_old_columns_toward_the_parent() -> None:
    from indvision.training.warmstart import mix_old_columns

    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=5).astype(
        np.float32)
    parent_kernel, parent_bias = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(
        size=3).astype(np.float32)
    mixed_kernel, mixed_bias = mix_old_columns(kernel, bias, parent_kernel, parent_bias, 0.25)
    np.testing.assert_allclose(mixed_kernel[:, :3], 0.75 * kernel[:, :3] + 0.25 * parent_kernel,
                               rtol=1e-6)
    np.testing.assert_allclose(mixed_bias[:3], 0.75 * bias[:3] + 0.25 * parent_bias, rtol=1e-6)
    np.testing.assert_array_equal(mixed_kernel[:, 3:], kernel[:, 3:])  # new classes untouched
    np.testing.assert_array_equal(mixed_bias[3:], bias[3:])
    assert mixed_kernel.dtype == kernel.dtype and mixed_bias.dtype == bias.dtype
    same_kernel, same_bias = mix_old_columns(kernel, bias, parent_kernel, parent_bias, 0.0)
    np.testing.assert_array_equal(same_kernel, kernel)  # 0: the child's head, bit-exact
    np.testing.assert_array_equal(same_bias, bias)
    whole, _ = mix_old_columns(kernel, bias, parent_kernel, parent_bias, 1.0)
    np.testing.assert_array_equal(whole[:, :3], parent_kernel)


def test_mixing_refuses_a_share_outside_0_1_and_a_head_that_is_not_grown() -> None:
    from indvision.training.warmstart import mix_old_columns

    kernel, bias = np.zeros((8, 5), np.float32), np.zeros(5, np.float32)
    with pytest.raises(IndvisionError, match="between 0 and 1"):
        mix_old_columns(kernel, bias, np.zeros((8, 3)), np.zeros(3), 1.5)
    with pytest.raises(IndvisionError, match="does not extend its parent's"):
        mix_old_columns(kernel, bias, np.zeros((4, 3)), np.zeros(3), 0.5)
