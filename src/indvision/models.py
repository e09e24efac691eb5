"""Every Keras model indvision trains: the backbone with its weights, the classifier around it,
its mirror and ensemble averages, loading, freezing and the any-view loss.

The backbones and where their weights are found are the table in :mod:`indvision.backbones`
(named here too). The model convention (CONTRIBUTING.md, "the contract"): input float32
``(batch, H, W, 3)`` RGB in 0..255, output softmax probabilities; all scaling lives inside the
model, so the exported files need no preprocessing code on the device.

Weights: ``"none"`` (random); a path — a ``.weights.h5``/legacy ``.h5`` weights file, or a whole
model (``.keras``) whose backbone is copied; ``"imagenet"`` — a local mirror file, else Keras'
own download, which fails fast with a fix when offline. Keras is imported inside functions:
config validation imports this module and stays light.
"""

from __future__ import annotations

import urllib.error
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indvision import atomic
from indvision.backbones import (  # noqa: F401  (also named here: callers say models.X)
    BACKBONES,
    WEIGHTS_DIR_ENV,
    Backbone,
    WeightsSource,
    check_choice,
    default_weights,
    find_local_imagenet,
    get_backbone,
    imagenet_file_names,
    offline_message,
    weight_dirs,
)
from indvision.console import say
from indvision.errors import IndvisionError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

BACKBONE_LAYER = "backbone"  # name of the backbone sub-model inside every classifier
HEAD_INPUT_LAYER = "head_dropout"  # the head's first layer: its input is the pooled features
HEAD_LAYER = "probabilities"  # the head's dense softmax (the linear probe's weights go here)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _small_cnn(height: int, width: int, alpha: float) -> keras.Model:
    """A from-scratch CNN: four double-conv blocks with BatchNorm, then global average pooling.

    BatchNorm momentum is 0.9 (Keras' default is 0.99): with a few hundred images an epoch is
    only tens of steps, and at 0.99 the moving statistics would still be near their initial
    values after an epoch, so inference-mode predictions collapse onto one class. Train also
    recalibrates the statistics after fitting (:func:`recalibrate_batchnorm`).
    """
    import keras
    from keras import layers

    inputs = keras.Input((height, width, 3), name="scaled_image")
    x = inputs
    for block, base in enumerate((16, 32, 64, 128), start=1):
        filters = max(8, round(base * alpha))
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 4:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


def _keras_backbone(row: Backbone, height: int, width: int, alpha: float,
                    weights: str | None) -> keras.Model:
    import keras

    kwargs = dict(row.constructor_kwargs)
    if row.constructor in ("MobileNetV2", "MobileNetV3Small"):
        kwargs["alpha"] = alpha
    constructor = getattr(keras.applications, str(row.constructor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input shape not in [96..224]" and similar chatter
        return constructor(input_shape=(height, width, 3), include_top=False, weights=weights,
                           pooling="avg", name=BACKBONE_LAYER, **kwargs)


def build_backbone(backbone: str, height: int, width: int, weights: str = "none",
                   alpha: float = 1.0, setting: str = "train.weights"
                   ) -> tuple[keras.Model, WeightsSource]:
    """The backbone alone (input: its own scaled image; output: pooled features), and where its
    weights came from. Raises :class:`IndvisionError`, naming ``setting`` (the stage's weights
    key), for weights that cannot be found or do not fit."""
    row = get_backbone(backbone)
    try:
        check_choice(backbone, alpha, "none")
    except ValueError as exc:
        raise IndvisionError(f"{setting.split('.')[0]}: {exc}") from None
    if weights == "none":
        model = (_small_cnn(height, width, alpha) if row.constructor is None
                 else _keras_backbone(row, height, width, alpha, None))
        return model, WeightsSource("none")
    if weights == "imagenet":
        if not row.pretrainable:
            raise IndvisionError(f"{setting}: {backbone} has no ImageNet weights; "
                                 "use weights: none or a weights file")
        local = find_local_imagenet(backbone, alpha, height)
        if local is not None:
            model = _keras_backbone(row, height, width, alpha, None)
            load_backbone_weights(model, local, backbone, alpha)
            if row.imagenet_variance_scale is not None:
                _fold_imagenet_stddev(model, row.imagenet_variance_scale)
            return model, WeightsSource("imagenet-local", str(local), atomic.sha256_file(local))
        try:
            model = _keras_backbone(row, height, width, alpha, "imagenet")
        except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...")
            if "URL fetch failure" in str(exc) or isinstance(
                    exc, (OSError, urllib.error.URLError, TimeoutError)):
                raise IndvisionError(offline_message(backbone, alpha, height, _first_line(exc),
                                                     setting)) from None
            raise IndvisionError(f"{setting}: imagenet weights for {backbone} failed to "
                                 f"load: {_first_line(exc)}") from None
        return model, WeightsSource("imagenet-keras")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise IndvisionError(f"{setting}: no such file {path}; give 'none', 'imagenet' or "
                             "the path of a weights file")
    model = (_small_cnn(height, width, alpha) if row.constructor is None
             else _keras_backbone(row, height, width, alpha, None))
    load_backbone_weights(model, path, backbone, alpha)
    return model, WeightsSource("file", str(path.resolve()), atomic.sha256_file(path))


def load_backbone_weights(model: keras.Model, path: Path, backbone: str, alpha: float) -> None:
    """Load a weights file (or a whole saved model's backbone) into ``model``, or fail clearly.

    ``.weights.h5`` and legacy ``.h5`` weights go through ``load_weights``; a ``.keras`` (or a
    whole-model ``.h5``) is loaded and its ``backbone`` layer (or the model itself) copied.
    """
    say(f"models: loading {backbone} weights from {path}")
    fix = (f"use weights saved from {backbone} (alpha {alpha}) with include_top=False, "
           "or weights: none")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nested-container chatter from older Keras files
            if path.suffix == ".keras":
                _copy_from_saved_model(model, path)
            else:
                try:
                    model.load_weights(str(path))
                except ValueError:
                    if path.name.endswith(".weights.h5"):
                        raise
                    _copy_from_saved_model(model, path)  # a whole model saved as .h5
    except IndvisionError:
        raise
    except Exception as exc:
        raise IndvisionError(f"{path}: these weights do not fit backbone {backbone} "
                             f"({_first_line(exc)}); {fix}") from None


def _copy_from_saved_model(model: keras.Model, path: Path) -> None:
    saved = classifier_of(load_model(path))  # a mirror-averaged model holds the classifier
    try:
        source = backbone_of(saved)
    except ValueError:
        source = saved
    values = source.get_weights()
    expected = [tuple(w.shape) for w in model.weights]
    if [tuple(v.shape) for v in values] != expected:
        raise ValueError(f"the saved model's weights ({len(values)} arrays) do not match the "
                         f"backbone's ({len(expected)} arrays) in number or shape")
    model.set_weights(values)


def _fold_imagenet_stddev(model: keras.Model, stddev: tuple[float, ...]) -> None:
    """EfficientNet built with ``weights=None`` lacks Keras' ImageNet-only 1/sqrt(std) scaling;
    dividing by sqrt(std) after normalising equals normalising with variance * std."""
    import numpy as np

    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            variance = np.asarray(layer.adapt_variance)
            layer.adapt_variance.assign(variance * np.asarray(stddev, variance.dtype))
            layer.finalize_state()
            return


def build_classifier_with_source(
    backbone: str,
    n_classes: int,
    height: int,
    width: int,
    weights: str = "none",
    alpha: float = 1.0,
    dropout: float = 0.2,
    name: str | None = None,
) -> tuple[keras.Model, WeightsSource]:
    """:func:`build_classifier`, also returning where the backbone's weights came from;
    ``name`` names the model (default ``indvision_<backbone>``)."""
    import keras
    from keras import layers

    if n_classes < 2:
        raise IndvisionError(f"a classifier needs at least 2 classes, got {n_classes}")
    row = get_backbone(backbone)
    base, source = build_backbone(backbone, height, width, weights, alpha)
    say(f"models: {backbone} (alpha {alpha}) at {height}x{width}, weights: "
          f"{source.describe()}")
    inputs = keras.Input((height, width, 3), dtype="float32", name="image")
    x = inputs
    if row.rescale is not None:
        scale, offset = row.rescale
        x = layers.Rescaling(scale, offset=offset, name="preprocess")(x)
    # A pretrained backbone is called with training=False: its BatchNorm stays in inference
    # mode even when its top is unfrozen for fine-tuning (the keras-io recipe). A from-scratch
    # backbone's BatchNorm must learn its statistics, so it follows the training flag.
    x = base(x, training=False) if row.pretrainable else base(x)
    x = layers.Dropout(dropout, name=HEAD_INPUT_LAYER)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32",
                           name=HEAD_LAYER)(x)
    model = keras.Model(inputs, outputs, name=name or f"indvision_{backbone}")
    return model, source


def build_classifier(
    backbone: str,
    n_classes: int,
    height: int,
    width: int,
    weights: str = "none",
    alpha: float = 1.0,
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """A classifier: float32 RGB 0..255 ``(batch, height, width, 3)`` → softmax probabilities.

    ``weights`` is ``"none"``, ``"imagenet"`` (local mirror first, see the module docstring) or
    a path. The backbone is the layer named ``backbone``; the head is dropout + dense softmax.
    """
    return build_classifier_with_source(backbone, n_classes, height, width, weights, alpha,
                                        dropout, name)[0]


def mirror_averaged(classifier: keras.Model) -> keras.Model:
    """The classifier's scores averaged over the image and its left-right mirror.

    Test-time augmentation inside the model: two passes, one output, still probabilities. It
    steadies the decisions that sit on a knife edge (on NEU steel a 0.38 / 0.33 call between two
    classes went right with it) at twice the inference cost. Because it is part of the saved
    graph, evaluate, every exported file and the edge runtime all compute the same average.
    Only for data where a mirrored image keeps its class (the training augmentation should
    flip too).
    """
    import keras

    from indvision import layers

    inputs = keras.Input(shape=tuple(classifier.inputs[0].shape[1:]), name="image")
    straight = classifier(inputs)
    mirrored = classifier(layers.MirrorLeftRight(name="mirror")(inputs))
    outputs = keras.layers.Average(name="mirror_average")([straight, mirrored])
    return keras.Model(inputs, outputs, name=f"{classifier.name}_mirror_averaged")


def ensemble_averaged(members: list[keras.Model]) -> keras.Model:
    """One model whose scores are the average of ``members``' (same input, same classes).

    The members keep their own names (they must differ) and weights; like
    :func:`mirror_averaged`, the average is part of the saved graph, so every exported file
    and the edge runtime compute it, at the cost of one pass per member.
    """
    import keras

    if len({m.name for m in members}) != len(members):
        raise ValueError("ensemble members need distinct names")
    inputs = keras.Input(shape=tuple(members[0].inputs[0].shape[1:]), name="image")
    outputs = keras.layers.Average(name="ensemble_average")([m(inputs) for m in members])
    return keras.Model(inputs, outputs, name=f"{members[0].name}_ensemble{len(members)}")


def classifier_of(model: keras.Model) -> keras.Model:
    """The trainable classifier in a saved model: itself, or (depth first) the first one
    nested in it — what a mirror-averaged model runs twice, an ensemble's first member."""
    for candidate in (model, *_all_layers(model)):
        if any(inner.name == BACKBONE_LAYER for inner in getattr(candidate, "layers", [])):
            return candidate
    return model


def find_submodel(model: keras.Model, name: str) -> keras.Model:
    """The model called ``name``: ``model`` itself or one nested in it (depth first)."""
    for candidate in (model, *_all_layers(model)):
        if candidate.name == name:
            return candidate
    raise KeyError(f"no model named {name!r} in {model.name!r}")


def load_model(path: str | Path) -> keras.Model:
    """``keras.models.load_model`` for inference (no optimizer), with indvision's own layers
    registered first, so a mirror-averaged model loads like any other."""
    import keras

    from indvision import layers  # noqa: F401  (registers every indvision layer)

    return keras.models.load_model(str(path), compile=False)


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model of a classifier built here."""
    return model.get_layer(BACKBONE_LAYER)


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1 of transfer learning: only the head trains."""
    backbone_of(model).trainable = False


def unfreeze_top(model: keras.Model, backbone: str, top_layers: int | None = None) -> int:
    """Phase 2: unfreeze the backbone's top (BatchNorm layers stay frozen); returns how many
    layers became trainable.

    ``top_layers=None`` unfreezes from the table's ``top_from`` layer to the end; ``N``
    unfreezes the last N layers.
    """
    base = backbone_of(model)
    layers_list = base.layers
    if top_layers is None:
        start_name = get_backbone(backbone).top_from
        names = [layer.name for layer in layers_list]
        start = names.index(start_name) if start_name in names else 0
    else:
        start = max(0, len(layers_list) - top_layers)
    base.trainable = True
    unfrozen = 0
    for index, layer in enumerate(layers_list):
        is_bn = type(layer).__name__ == "BatchNormalization"
        layer.trainable = index >= start and not is_bn
        unfrozen += int(layer.trainable and bool(layer.weights))
    return unfrozen


def recalibrate_batchnorm(model: keras.Model, batches: Iterable[Any]) -> int:
    """Re-estimate trainable BatchNorm layers' moving statistics as the exact average over
    ``batches`` (inputs only), with the weights as they are now; returns the batch count.

    After a short from-scratch fit the moving averages lag far behind the weights; this
    makes inference mode match what the network learned. Frozen BatchNorm is untouched.
    """
    bn_layers = [layer for layer in _all_layers(model)
                 if type(layer).__name__ == "BatchNormalization" and layer.trainable]
    if not bn_layers:
        return 0
    saved = [layer.momentum for layer in bn_layers]
    seen = 0
    try:
        for batch in batches:
            for layer in bn_layers:  # moving = moving * k/(k+1) + batch/(k+1): a running mean
                layer.momentum = seen / (seen + 1)
            model(batch, training=True)
            seen += 1
        return seen
    finally:
        for layer, momentum in zip(bn_layers, saved, strict=True):
            layer.momentum = momentum


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


# ----------------------------------------------------------------------------- any-view training


def object_trainer(classifier: keras.Model, views: int) -> keras.Model:
    """A training wrapper that runs ``classifier`` on every view of a batch of objects:
    ``(objects, views, H, W, 3)`` → ``(objects, views, classes)``.

    It holds no weights of its own (``get_weights`` lists the classifier's, in order); only
    the classifier is saved and exported. The classifier is called once per view as a direct
    sub-model (not inside ``TimeDistributed``), so Keras leaves out the metrics it was
    compiled with earlier: they would shadow the wrapper's own ``loss`` and ``accuracy``.
    """
    import keras

    height, width = classifier.input_shape[1:3]
    inputs = keras.Input((views, height, width, 3), name="views")
    outputs = keras.ops.stack([classifier(inputs[:, view]) for view in range(views)], axis=1)
    return keras.Model(inputs, outputs, name="object_trainer")


def any_view_loss(good_index: int, label_smoothing: float = 0.0) -> Any:
    """Multiple-instance cross-entropy on ``(objects, views, classes)`` predictions: the
    cross-entropy of the object's decision as :func:`indvision.metrics.fuse_groups` makes it.

    A good object must look good in every view: the cross-entropy of its worst view (the one
    that decides whether it passes). A defective object needs its defect in at least one view:
    the cross-entropy of its best-matching view, so a view where the damage cannot be seen is
    not forced to "see" it. Both sides weigh one view per object, so neither class is favoured.
    Targets carry the object's one-hot label on real views and zeros on padding.
    """
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        valid = ops.sum(y_true, axis=-1)  # (objects, views): 1 real view, 0 padding
        n_classes = ops.shape(y_true)[-1]
        target = (y_true * (1.0 - label_smoothing)
                  + label_smoothing / ops.cast(n_classes, y_true.dtype) * valid[..., None])
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        per_view = -ops.sum(target * log_p, axis=-1)
        worst_ce = ops.max(ops.where(valid > 0, per_view, 0.0), axis=-1)
        best_ce = ops.min(ops.where(valid > 0, per_view, 1e9), axis=-1)
        good = ops.max(y_true[..., good_index], axis=-1)
        return good * worst_ce + (1.0 - good) * best_ce

    loss.__name__ = "any_view_loss"
    return loss


def any_view_accuracy(good_index: int) -> Any:
    """Accuracy of the object decision evaluate makes: the object takes the prediction of its
    least-good real view (:func:`indvision.metrics.fuse_groups`), arg-max."""
    from keras import ops

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        valid = ops.sum(y_true, axis=-1)
        good_score = ops.where(valid > 0, y_pred[..., good_index], 2.0)
        pick = ops.argmin(good_score, axis=-1)
        chosen = ops.take_along_axis(y_pred, pick[:, None, None], axis=1)[:, 0]
        true = ops.argmax(ops.sum(y_true, axis=1), axis=-1)
        return ops.cast(ops.argmax(chosen, axis=-1) == true, "float32")

    accuracy.__name__ = "accuracy"
    return accuracy
