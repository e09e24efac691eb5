"""Class-activation maps inside a classifier's graph: the bundle's second output.

A classifier here is backbone → global average pooling → dropout → dense softmax, so its
logits are the average over positions of the dense layer applied to each position's features
(CAM, Zhou et al. 2016). :func:`with_heatmap` returns the saved model with a second output,
``heatmap`` ``(B, h, w, C)``: the head's softmax applied to every position of the last
convolutional features — what each patch alone says of each class (0–1, the same scale on
every frame). No gradients: plain ops, so every exported file and the TF-free edge compute it.
A mirror-averaged model averages the map of the image and the mirrored map of its mirror, an
ensemble its members' maps — the same way their scores are averaged.

An anomaly model (:mod:`indvision.anomaly.model`) has its map already and is returned as it
is. Imports Keras at its top, like :mod:`indvision.layers`.
"""

from __future__ import annotations

import keras

from indvision import layers, models
from indvision.errors import IndvisionError

OUTPUT = "heatmap"


def has_map(model: keras.Model) -> bool:
    """Whether ``model`` already has a second output (a map)."""
    return len(model.outputs) > 1


def with_heatmap(model: keras.Model) -> keras.Model:
    """``model`` with outputs ``[probabilities, heatmap]`` (see the module doc). Raises
    :class:`IndvisionError` for a model of another structure (no map can be built)."""
    if has_map(model):
        return model
    image = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    heat = heat_model(model)(image)
    return keras.Model(image, [model(image), heat], name=f"{model.name}_with_heatmap")


def heat_model(model: keras.Model) -> keras.Model:
    """Image → the map of ``model``: a plain classifier's CAM, or the average its ensemble or
    mirror wrapper takes of what it wraps (nested in any order, as train builds them)."""
    names = {layer.name for layer in model.layers}
    image = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    if "ensemble_average" in names:
        members = [heat_model(m) for m in model.layers if isinstance(m, keras.Model)]
        heat = keras.layers.Average(name="heatmap_ensemble_average")([m(image) for m in members])
    elif "mirror_average" in names:
        inner = heat_model(next(m for m in model.layers if isinstance(m, keras.Model)))
        mirrored = inner(layers.MirrorLeftRight(name="heatmap_mirror_in")(image))
        back = layers.MirrorLeftRight(name="heatmap_mirror_out")(mirrored)
        heat = keras.layers.Average(name="heatmap_mirror_average")([inner(image), back])
    else:
        return class_activation(model)
    return keras.Model(image, heat, name=f"{model.name}_heat")


def class_activation(classifier: keras.Model) -> keras.Model:
    """Image → ``(B, h, w, C)``: the classifier's dense softmax head on each position of its
    backbone's last feature map (before the global average pooling)."""
    names = {layer.name for layer in classifier.layers}
    if not {models.BACKBONE_LAYER, models.HEAD_LAYER} <= names:
        raise IndvisionError(f"{classifier.name}: not an indvision classifier (no "
                             f"'{models.BACKBONE_LAYER}' and '{models.HEAD_LAYER}' layers), so "
                             "no class-activation map can be built for it")
    backbone = classifier.get_layer(models.BACKBONE_LAYER)
    if not isinstance(backbone.layers[-1], keras.layers.GlobalAveragePooling2D):
        raise IndvisionError(f"{classifier.name}: the backbone does not end in global average "
                             "pooling, so its head cannot be applied per position")
    features = keras.Model(backbone.input, backbone.layers[-2].output,
                           name=f"{classifier.name}_features")
    head = classifier.get_layer(models.HEAD_LAYER)
    # the dense head as a 1x1 convolution: the same numbers, and an op every runtime has
    # (OpenCV's dnn cannot run a dense layer on a 4-D tensor)
    per_position = keras.layers.Conv2D(head.units, 1, activation="softmax", dtype="float32",
                                       name=f"{classifier.name}_head_per_position")
    image = keras.Input(tuple(classifier.inputs[0].shape[1:]), name="image")
    x = image
    if any(layer.name == "preprocess" for layer in classifier.layers):
        x = classifier.get_layer("preprocess")(x)
    heat = per_position(features(x, training=False))
    kernel, bias = head.get_weights()
    per_position.set_weights([kernel[None, None], bias])
    return keras.Model(image, heat, name=f"{classifier.name}_cam")


def with_heatmap_if_possible(model: keras.Model) -> tuple[keras.Model, str | None]:
    """:func:`with_heatmap`, or ``model`` itself and the reason where no map can be built
    (a model of another structure: its bundle has no map output, and says so)."""
    try:
        return with_heatmap(model), None
    except IndvisionError as exc:
        return model, str(exc)
