"""The anomaly model: one Keras graph from image to score and map, the bank a constant inside,
matching a numpy nearest-neighbour search and its own ONNX export at any batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

BORDER = 2  # patches at each edge of the 16 × 16 grid (64 px) that are not judged


def _images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((n, size, size, 3), 128.0, np.float32)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    from indvision.anomaly.model import (
        build_anomaly_model,
        build_bank,
        good_patches,
        patch_extractor,
    )

    keras.utils.set_random_seed(0)
    extractor = patch_extractor("mobilenet_v2", 64, 64, "none", projection_dim=None)
    patches = good_patches(extractor, [_images(4, 64, 1)], border=BORDER)
    bank = build_bank(patches, budget=200, seed=0)
    model = build_anomaly_model(extractor, bank, threshold=float(np.median(
        np.linalg.norm(patches[:50] - patches[:50].mean(0), axis=1))), border=BORDER)
    return extractor, bank, model


@pytest.mark.slow
def test_scores_and_maps_are_the_nearest_good_patch_distance_normalised(fitted) -> None:
    from indvision.anomaly.bank import normalise
    from indvision.anomaly.model import interior

    extractor, bank, model = fitted
    images = _images(3, 64, 2)
    images[2, 20:40, 20:40] = 255.0  # a bright blotch: the worst patches
    probabilities, maps = model.predict(images, verbose=0)
    patches = interior(extractor.predict(images, verbose=0), BORDER)
    distance = np.sqrt(((patches[..., None, :] - bank) ** 2).sum(-1)).min(-1)  # brute force
    threshold = model.get_layer("normalised").threshold
    inside = maps[:, BORDER:-BORDER, BORDER:-BORDER]
    np.testing.assert_allclose(inside, normalise(distance, threshold), rtol=1e-3, atol=1e-5)
    assert maps.sum() == pytest.approx(inside.sum())  # the border is 0: not judged
    np.testing.assert_allclose(probabilities[:, 1], maps.max(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert maps.shape == (3, 16, 16)  # the whole input's grid
    assert probabilities[2, 1] > probabilities[:2, 1].max()
    y, x = np.unravel_index(np.argmax(maps[2]), maps.shape[1:])
    cell = 64 / maps.shape[1]
    assert 20 - cell <= y * cell <= 40 and 20 - cell <= x * cell <= 40  # the peak is the blotch


@pytest.mark.slow
def test_the_onnx_export_matches_keras_with_a_dynamic_batch(fitted, tmp_path: Path) -> None:
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    _, _, model = fitted
    signature = (tf.TensorSpec((None, 64, 64, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    (tmp_path / "anomaly.onnx").write_bytes(proto.SerializeToString())
    session = ort.InferenceSession(str(tmp_path / "anomaly.onnx"),
                                   providers=["CPUExecutionProvider"])
    for n in (1, 3):
        images = _images(n, 64, 5 + n)
        probabilities, maps = model.predict(images, verbose=0)
        got_probabilities, got_maps = session.run(None, {"image": images})  # in this order
        np.testing.assert_allclose(got_probabilities, probabilities, rtol=1e-4)
        np.testing.assert_allclose(got_maps, maps, rtol=1e-4, atol=1e-6)


def test_the_projection_is_seeded_and_keeps_distances_roughly() -> None:
    from indvision.anomaly.model import patch_extractor

    a = patch_extractor("mobilenet_v2", 64, 64, "none", projection_dim=32, seed=4)
    b = patch_extractor("mobilenet_v2", 64, 64, "none", projection_dim=32, seed=4)
    np.testing.assert_array_equal(a.get_layer("projection").get_weights()[0],
                                  b.get_layer("projection").get_weights()[0])
    assert a.get_layer("projection").get_weights()[0].shape[:2] == (1, 1)  # a 1x1 convolution
    assert a.output.shape[-1] == 32


def test_a_border_must_leave_patches_to_judge() -> None:
    from indvision.anomaly.model import check_border
    from indvision.errors import IndvisionError

    check_border((16, 16), 0)
    check_border((16, 12), 5)  # 2 columns left
    for bad in (6, -1):
        with pytest.raises(IndvisionError, match=f"border of {bad} patches leaves nothing"):
            check_border((16, 12), bad)
