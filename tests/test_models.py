"""The backbone table and build_classifier: every backbone builds, weights load from files and
from the offline mirror, and a missing ImageNet download fails fast with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indvision import models
from indvision.errors import IndvisionError
from tests.conftest import needs_shared

keras = pytest.importorskip("keras")

SHARED_WEIGHTS_NAME = "mobilenetv2_1.00_160_notop.weights.h5"


def _images(n: int = 2, size: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_every_backbone_builds_and_outputs_probabilities(name: str) -> None:
    row = models.BACKBONES[name]
    model = models.build_classifier(name, n_classes=3, height=48, width=48, weights="none")
    assert model.input.shape == (None, 48, 48, 3)
    assert model.input.dtype == "float32"
    probabilities = model.predict(_images(), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()
    backbone = models.backbone_of(model)
    layer_names = [layer.name for layer in backbone.layers]
    if row.top_from is not None:  # the table's "top" exists in what Keras builds
        assert row.top_from in layer_names
    # The table's preprocessing is a layer inside the model, or built into the backbone.
    outer = [layer.name for layer in model.layers]
    assert ("preprocess" in outer) == (row.rescale is not None)
    if row.rescale is None:
        assert any(type(layer).__name__ == "Rescaling" for layer in backbone.layers)


def test_unfreeze_top_keeps_batchnorm_frozen() -> None:
    model = models.build_classifier("mobilenet_v2", 3, 48, 48, "none", alpha=0.35)
    models.freeze_backbone(model)
    assert not models.backbone_of(model).trainable_weights
    unfrozen = models.unfreeze_top(model, "mobilenet_v2")
    backbone = models.backbone_of(model)
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert unfrozen == len(trainable) > 0
    assert all(type(layer).__name__ != "BatchNormalization" for layer in trainable)
    names = [layer.name for layer in backbone.layers]
    start = names.index("block_13_expand")
    assert all(names.index(layer.name) >= start for layer in trainable)
    assert models.unfreeze_top(model, "mobilenet_v2", top_layers=5) <= 5


def test_weights_from_a_path_load_and_change_the_output(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    donor = models.build_classifier("small_cnn", 3, 32, 32, "none")
    path = tmp_path / "donor.weights.h5"
    models.backbone_of(donor).save_weights(path)

    keras.utils.set_random_seed(2)
    fresh = models.build_classifier("small_cnn", 3, 32, 32, "none")
    keras.utils.set_random_seed(2)  # same head initialisation as `fresh`: only the backbone differs
    loaded, source = models.build_classifier_with_source("small_cnn", 3, 32, 32, str(path))

    assert source.kind == "file" and source.path == str(path.resolve())
    assert source.sha256 and len(source.sha256) == 64
    for got, want in zip(models.backbone_of(loaded).get_weights(),
                         models.backbone_of(donor).get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    x = _images(size=32)
    assert not np.allclose(loaded.predict(x, verbose=0), fresh.predict(x, verbose=0))


def test_mirror_averaged_scores_are_the_mean_of_both_passes_and_survive_a_reload(
        tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    classifier = models.build_classifier("small_cnn", 3, 32, 40, "none")
    averaged = models.mirror_averaged(classifier)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 40, 3)).astype("float32")
    expected = (classifier.predict(x, verbose=0) + classifier.predict(x[:, :, ::-1], verbose=0)) / 2
    got = averaged.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(averaged.predict(x[:, :, ::-1], verbose=0), got, atol=1e-6)
    assert not np.allclose(classifier.predict(x, verbose=0), got)  # the flip does something

    path = tmp_path / "model.keras"
    averaged.save(path)
    np.testing.assert_allclose(models.load_model(path).predict(x, verbose=0), got, atol=1e-6)
    # a saved mirror-averaged model is also a weights source: its backbone is found inside
    keras.utils.set_random_seed(4)
    reused, _ = models.build_classifier_with_source("small_cnn", 3, 32, 40, str(path))
    for mine, theirs in zip(models.backbone_of(reused).get_weights(),
                            models.backbone_of(classifier).get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_an_ensemble_scores_the_mean_of_its_members_and_survives_a_reload(
        tmp_path: Path) -> None:
    keras.utils.set_random_seed(5)
    first = models.build_classifier("small_cnn", 3, 32, 40, "none")
    second = models.build_classifier("small_cnn", 3, 32, 40, "none", name="second")
    with pytest.raises(ValueError, match="distinct names"):
        models.ensemble_averaged([first, first])
    ensemble = models.ensemble_averaged([first, second])
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 40, 3)).astype("float32")
    expected = (first.predict(x, verbose=0) + second.predict(x, verbose=0)) / 2
    got = ensemble.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(first.predict(x, verbose=0), got)  # the second member counts

    path = tmp_path / "ensemble.keras"
    models.mirror_averaged(ensemble).save(path)  # nested twice: mirror around the ensemble
    loaded = models.load_model(path)
    mirrored = (got + ensemble.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), mirrored, atol=1e-6)
    assert models.classifier_of(loaded).name == first.name  # the first member, found inside
    assert models.find_submodel(loaded, "second").count_params() == second.count_params()
    with pytest.raises(KeyError, match="no model named 'third'"):
        models.find_submodel(loaded, "third")


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    donor = models.build_classifier("small_cnn", 3, 32, 32, "none", alpha=1.0)
    path = tmp_path / "wide.weights.h5"
    models.backbone_of(donor).save_weights(path)
    with pytest.raises(IndvisionError, match=r"wide\.weights\.h5.*do not fit backbone small_cnn"):
        models.build_classifier("small_cnn", 3, 32, 32, str(path), alpha=0.5)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(IndvisionError, match=r"junk\.weights\.h5"):
        models.build_classifier("small_cnn", 3, 32, 32, str(junk))
    with pytest.raises(IndvisionError, match="no such file"):
        models.build_classifier("small_cnn", 3, 32, 32, str(tmp_path / "missing.weights.h5"))


def test_shared_mobilenetv2_weights_load_at_96px(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = needs_shared("weights", SHARED_WEIGHTS_NAME)
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, str(shared.parent))
    model, source = models.build_classifier_with_source("mobilenet_v2", 4, 96, 96, "imagenet")
    assert source.kind == "imagenet-local" and Path(source.path) == shared
    reference = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False,
                                               weights=None)
    reference.load_weights(str(shared))
    for got, want in zip(models.backbone_of(model).get_weights(), reference.get_weights(),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    probabilities = model.predict(_images(size=96), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_local_mirror_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "mobilenetv2_0.50_128_notop.weights.h5").write_bytes(b"x")
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, f"{first}{__import__('os').pathsep}{second}")
    found = models.find_local_imagenet("mobilenet_v2", alpha=0.5, size=128)
    assert found == second / "mobilenetv2_0.50_128_notop.weights.h5"
    (first / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5").write_bytes(b"x")
    assert models.find_local_imagenet("mobilenet_v2", alpha=0.5, size=128).parent == first
    assert models.find_local_imagenet("mobilenet_v2", alpha=1.0, size=128,
                                      dirs=[first, second]) is None
    assert models.find_local_imagenet("small_cnn") is None  # nothing pretrained to find


def test_offline_imagenet_fails_fast_naming_the_weights_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras.src.utils.file_utils as file_utils

    from indvision import config

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, str(empty))
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path / "no_project")  # no ../shared/weights
    assert models.find_local_imagenet("mobilenet_v3_small", 1.0, 32) is None

    def offline_get_file(fname, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline_get_file)
    with pytest.raises(IndvisionError) as caught:
        models.build_classifier("mobilenet_v3_small", 3, 32, 32, "imagenet")
    message = str(caught.value)
    assert "offline" in message
    assert "--set train.weights=PATH" in message and "weights: PATH" in message
    assert models.WEIGHTS_DIR_ENV in message
    assert "\n" not in message
    with pytest.raises(IndvisionError) as caught:  # the anomaly fit stage names its own key
        models.build_backbone("mobilenet_v3_small", 32, 32, "imagenet", setting="fit.weights")
    assert "--set fit.weights=PATH" in str(caught.value) and "under fit:" in str(caught.value)


def test_efficientnet_local_imagenet_adds_keras_stddev_scaling() -> None:
    backbone, _ = models.build_backbone("efficientnet_b0", 32, 32, "none")
    norm = next(layer for layer in backbone.layers if type(layer).__name__ == "Normalization")
    norm.adapt_variance.assign(np.full(norm.adapt_variance.shape, 2.0, "float32"))
    norm.finalize_state()
    models._fold_imagenet_stddev(backbone, models.BACKBONES["efficientnet_b0"]
                                 .imagenet_variance_scale)
    np.testing.assert_allclose(np.asarray(norm.adapt_variance).ravel(),
                               2.0 * np.array([0.229, 0.224, 0.225]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(norm.variance).ravel(),
                               2.0 * np.array([0.229, 0.224, 0.225]), rtol=1e-6)


def test_check_choice_rejects_bad_settings_without_keras() -> None:
    with pytest.raises(ValueError, match="did you mean 'mobilenet_v2'"):
        models.check_choice("mobilenet_2", 1.0, "none")
    with pytest.raises(ValueError, match=r"alpha 0\.3"):
        models.check_choice("mobilenet_v2", 0.3, "none")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        models.check_choice("small_cnn", 1.0, "imagenet")
    assert models.default_weights("small_cnn") == "none"
    assert models.default_weights("mobilenet_v2") == "imagenet"


def test_recalibrate_batchnorm_uses_the_exact_batch_average() -> None:
    model = models.build_classifier("small_cnn", 2, 32, 32, "none", alpha=0.25)
    batches = [_images(4, 32, seed) for seed in range(3)]
    assert models.recalibrate_batchnorm(model, batches) == 3
    first_bn = models.backbone_of(model).get_layer("block1_bn1")
    conv = models.backbone_of(model).get_layer("block1_conv1")
    means = [np.asarray(conv(b / 255.0)).mean(axis=(0, 1, 2)) for b in batches]
    np.testing.assert_allclose(np.asarray(first_bn.moving_mean), np.mean(means, axis=0),
                               rtol=1e-4, atol=1e-5)
    assert first_bn.momentum == 0.9  # restored


def _object_targets() -> tuple[np.ndarray, np.ndarray]:
    """Three objects of up to two views, good class 1: a good one, a defective one and a
    defective one with a single (padded) view."""
    targets = np.zeros((3, 2, 2), np.float32)
    targets[0, :, 1] = 1.0
    targets[1, :, 0] = 1.0
    targets[2, 0, 0] = 1.0  # view 2 is padding
    predictions = np.array([[[0.1, 0.9], [0.3, 0.7]],
                            [[0.8, 0.2], [0.1, 0.9]],
                            [[0.6, 0.4], [0.5, 0.5]]], np.float32)
    return targets, predictions


def test_any_view_loss_needs_every_view_good_but_one_view_defective() -> None:
    targets, predictions = _object_targets()
    loss = np.asarray(models.any_view_loss(1)(keras.ops.convert_to_tensor(targets),
                                              keras.ops.convert_to_tensor(predictions)))
    expected = [-np.log(0.7),  # good: its worst view decides
                -np.log(0.8),  # defective: only its best-matching view counts
                -np.log(0.6)]  # padding is ignored
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    smoothed = np.asarray(models.any_view_loss(1, 0.2)(keras.ops.convert_to_tensor(targets),
                                                       keras.ops.convert_to_tensor(predictions)))
    np.testing.assert_allclose(smoothed[2], -(0.9 * np.log(0.6) + 0.1 * np.log(0.4)), rtol=1e-5)


def test_any_view_accuracy_decides_as_evaluate_fuses() -> None:
    targets, predictions = _object_targets()
    predictions[0, 1] = (0.6, 0.4)  # a good object with one bad-looking view is rejected
    accuracy = models.any_view_accuracy(1)(keras.ops.convert_to_tensor(targets),
                                           keras.ops.convert_to_tensor(predictions))
    np.testing.assert_array_equal(np.asarray(accuracy), [0.0, 1.0, 1.0])


def test_object_trainer_runs_the_classifier_on_each_view_and_shares_its_weights() -> None:
    classifier = models.build_classifier("small_cnn", 2, 32, 32, "none", alpha=0.25)
    classifier.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    trainer = models.object_trainer(classifier, views=2)
    assert [w.shape for w in trainer.get_weights()] == [w.shape for w in
                                                       classifier.get_weights()]
    views = _images(6, 32).reshape(3, 2, 32, 32, 3)
    np.testing.assert_allclose(np.asarray(trainer(views))[:, 1],
                               np.asarray(classifier(views[:, 1])), rtol=1e-5, atol=1e-6)
    trainer.compile(optimizer="adam", loss=models.any_view_loss(1),
                    metrics=[keras.metrics.MeanMetricWrapper(models.any_view_accuracy(1),
                                                             name="accuracy")])
    targets, _ = _object_targets()
    logs = trainer.evaluate(views, targets, verbose=0, return_dict=True)
    assert logs["loss"] > 0  # the classifier's earlier compile does not shadow these
