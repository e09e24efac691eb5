"""Class-activation maps inside the graph: the head on every position, averaged the way the
scores are (mirror, ensemble), and exact: the positions' log-maps average back to the scores."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def classifier():
    from indvision import models

    keras.utils.set_random_seed(0)
    return models.build_classifier("small_cnn", 3, 40, 40, "none")


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, 40, 40, 3)).astype("float32")


def test_the_map_is_the_head_on_every_position_and_averages_back_to_the_scores(
        classifier) -> None:
    from indvision import cam

    probabilities, heat = cam.with_heatmap(classifier).predict(_images(), verbose=0)
    assert heat.shape == (4, 5, 5, 3)  # small_cnn at 40 px: a 5 x 5 grid, one map per class
    np.testing.assert_allclose(heat.sum(axis=-1), 1.0, rtol=1e-5)
    # logits = mean over positions of the per-position logits; softmax drops each position's
    # normaliser, so the mean of the log-maps gives the scores back
    mean_log = np.log(heat).mean(axis=(1, 2))
    recovered = np.exp(mean_log - mean_log.max(axis=1, keepdims=True))
    recovered /= recovered.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(recovered, probabilities, atol=1e-5)
    np.testing.assert_allclose(probabilities, classifier.predict(_images(), verbose=0),
                               atol=1e-6)


def test_mirror_and_ensemble_maps_are_averaged_like_their_scores(classifier) -> None:
    from indvision import cam, models

    images = _images()
    plain = cam.with_heatmap(classifier)
    _, straight = plain.predict(images, verbose=0)
    _, of_mirror = plain.predict(images[:, :, ::-1], verbose=0)
    _, mirrored = cam.with_heatmap(models.mirror_averaged(classifier)).predict(images, verbose=0)
    np.testing.assert_allclose(mirrored, (straight + of_mirror[:, :, ::-1]) / 2, atol=1e-6)
    other = models.build_classifier("small_cnn", 3, 40, 40, "none", name="second")
    ensemble = models.ensemble_averaged([models.mirror_averaged(classifier),
                                         models.mirror_averaged(other)])
    _, second = cam.with_heatmap(models.mirror_averaged(other)).predict(images, verbose=0)
    _, both = cam.with_heatmap(ensemble).predict(images, verbose=0)
    np.testing.assert_allclose(both, (mirrored + second) / 2, atol=1e-6)


def test_a_model_with_a_map_already_is_left_as_it_is(classifier) -> None:
    from indvision import cam

    wrapped = cam.with_heatmap(classifier)
    assert cam.with_heatmap(wrapped) is wrapped and cam.has_map(wrapped)
