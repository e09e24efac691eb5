"""bench/head_mix.py: the trained head is recovered exactly from a saved, mixed one."""

from __future__ import annotations

import numpy as np
import pytest

from indvision.training.warmstart import mix_old_columns
from tests.bench.conftest import load_bench


@pytest.fixture(scope="module")
def head_mix():
    return load_bench("head_mix")


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 0.75])
def test_unmixing_recovers_the_trained_columns(head_mix, share: float) -> None:
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(8, 6)), rng.normal(size=6)
    parent_kernel, parent_bias = rng.normal(size=(8, 5)), rng.normal(size=5)
    saved_kernel, saved_bias = mix_old_columns(kernel, bias, parent_kernel, parent_bias, share)
    np.testing.assert_allclose(head_mix.unmixed(saved_kernel, parent_kernel, share), kernel,
                               atol=1e-12)
    np.testing.assert_allclose(head_mix.unmixed(saved_bias, parent_bias, share), bias,
                               atol=1e-12)
    assert np.array_equal(head_mix.unmixed(saved_kernel, parent_kernel, share)[:, 5:],
                          kernel[:, 5:])  # the new class's column is never mixed


def test_a_share_of_one_cannot_be_unmixed(head_mix) -> None:
    with pytest.raises(SystemExit, match="share of 1"):
        head_mix.unmixed(np.zeros((2, 3)), np.zeros((2, 2)), 1.0)
