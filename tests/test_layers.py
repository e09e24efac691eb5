"""indvision's saved layers: registered under the names older model files carry, and a model
saved with the anomaly layers reloads through :func:`indvision.models.load_model` unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

#: What model files saved before the layers moved say: they must keep loading.
SAVED_NAMES = ["indvision>MirrorLeftRight", "indvision>NearestPatchDistance",
               "indvision>NormalisedScore", "indvision>BorderPad", "indvision>WorstPatch"]


def test_every_layer_keeps_the_name_saved_model_files_carry() -> None:
    from indvision import layers

    registered = [keras.saving.get_registered_name(cls) for cls in (
        layers.MirrorLeftRight, layers.NearestPatchDistance, layers.NormalisedScore,
        layers.BorderPad, layers.WorstPatch)]
    assert registered == SAVED_NAMES
    for name in SAVED_NAMES:
        assert keras.saving.get_registered_object(name) is not None


def test_a_saved_anomaly_graph_reloads_and_computes_the_same(tmp_path: Path) -> None:
    from indvision import layers, models

    image = keras.Input((6, 6, 4), name="image")
    nearest = layers.NearestPatchDistance(5, 4, floor=0.01, name="nearest_patch")
    distances = nearest(keras.layers.Cropping2D(1)(layers.MirrorLeftRight()(image)))
    nearest.set_bank(np.random.default_rng(0).normal(size=(5, 4)))
    scores = layers.NormalisedScore(1.5, name="normalised")(layers.BorderPad(1)(distances))
    model = keras.Model(image, [layers.WorstPatch(name="probabilities")(scores), scores])
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype(np.float32)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")

    loaded = models.load_model(tmp_path / "model.keras")
    for got, expected in zip(loaded.predict(x, verbose=0), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert loaded.get_layer("normalised").threshold == 1.5
    assert loaded.get_layer("nearest_patch").floor == pytest.approx(0.01)
