"""A child starts from its parent: the parent's trained weights, the head grown for new classes.

A child's classes are the parent's, in order, then the new ones (:mod:`indvision.stages.ingest`),
so growing the head appends columns: the parent's are copied bit for bit (old indices keep their
meaning), each new class gets a seeded Glorot column and the mean of the old biases. After
training, the old classes' columns move ``train.child_head_mix`` of the way back to the
parent's (:func:`mix_old_columns`, weight-space averaging as in WiSE-FT), keeping the parent's
old decisions where the new class pulled a boundary. The parent's model is read once and
checked against the sha256 the child's ingest recorded (:func:`start_from_parent`).

:func:`grow_head` and :func:`mix_old_columns` are numpy only; the rest need a Keras model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from indvision import checked_model, models
from indvision.errors import IndvisionError

#: The train settings a child must share with its parent: the backbone's weights and the
#: features they compute only fit the same architecture at the same input size.
SHARED_SETTINGS = ("backbone", "alpha", "height", "width")


def grow_head(kernel: np.ndarray, bias: np.ndarray, n_classes: int,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The head for ``n_classes`` classes from a parent head (``kernel`` D × K, ``bias`` K):
    the K old columns unchanged, ``n_classes - K`` new Glorot-uniform columns, new biases the
    mean old bias."""
    features, old = kernel.shape
    if n_classes < old:
        raise IndvisionError(f"the child has {n_classes} classes, its parent {old}: a child "
                             "keeps every class of its parent")
    added = n_classes - old
    limit = np.sqrt(6.0 / (features + n_classes))
    fresh = np.random.default_rng(seed).uniform(-limit, limit, (features, added))
    grown_kernel = np.concatenate([kernel, fresh.astype(kernel.dtype)], axis=1)
    grown_bias = np.concatenate([bias, np.full(added, bias.mean(), dtype=bias.dtype)])
    return grown_kernel, grown_bias


def mix_old_columns(kernel: np.ndarray, bias: np.ndarray, parent_kernel: np.ndarray,
                    parent_bias: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """The child's head (``kernel`` D × N, ``bias`` N) with its first K columns — the parent's
    classes — ``share`` the parent's (``parent_kernel`` D × K) and ``1 − share`` its own; the
    new columns untouched. ``share`` 0 returns the child's head as it is."""
    if not 0.0 <= share <= 1.0:
        raise IndvisionError(f"child_head_mix must be between 0 and 1, got {share}")
    old = parent_kernel.shape[1]
    if kernel.shape[0] != parent_kernel.shape[0] or kernel.shape[1] < old:
        raise IndvisionError(f"the child's head {kernel.shape} does not extend its parent's "
                             f"{parent_kernel.shape}")
    if share == 0.0:
        return kernel, bias
    mixed_kernel, mixed_bias = kernel.copy(), bias.copy()
    mixed_kernel[:, :old] = ((1 - share) * kernel[:, :old] + share * parent_kernel
                             ).astype(kernel.dtype)
    mixed_bias[:old] = ((1 - share) * bias[:old] + share * parent_bias).astype(bias.dtype)
    return mixed_kernel, mixed_bias


def mismatches(child: dict[str, Any], parent: dict[str, Any]) -> list[str]:
    """The :data:`SHARED_SETTINGS` on which the child's train config differs from the
    parent's, in words (empty: compatible)."""
    return [f"{key} {child.get(key)!r} (the parent's is {parent.get(key)!r})"
            for key in SHARED_SETTINGS if child.get(key) != parent.get(key)]


def start_from_parent(model: Any, parent_model: Path, seed: int,
                      expected_sha256: str | None = None,
                      recorded_in: Path | None = None) -> int:
    """Load the parent's classifier into ``model`` (same architecture; ``model``'s head may
    have more classes) and return the number of classes added. Layers are matched by name.
    An ensemble parent hands member k to the child's member k (``model.name``), its first
    member to a member it does not have.

    The parent's file is read once and loaded from those bytes
    (:func:`indvision.checked_model.load_parent`): their sha256 must be ``expected_sha256``
    (recorded in ``recorded_in``; default: the parent's manifest) and, under trusted keys, the
    one the parent's signed ``model.json`` names."""
    saved = checked_model.load_parent(parent_model, expected_sha256, recorded_in)
    try:
        parent = models.find_submodel(saved, model.name)
    except KeyError:
        parent = models.classifier_of(saved)
    own = {layer.name: layer for layer in model.layers}
    for layer in parent.layers:
        if layer.name not in own:
            raise IndvisionError(f"{parent_model}: the parent's layer '{layer.name}' has no "
                                 "counterpart here: it was built by another indvision model")
        weights = layer.get_weights()
        if layer.name == models.HEAD_LAYER:
            weights = list(grow_head(weights[0], weights[1],
                                     own[layer.name].get_weights()[0].shape[1], seed))
        own[layer.name].set_weights(weights)
    return model.get_layer(models.HEAD_LAYER).get_weights()[0].shape[1] - \
        parent.get_layer(models.HEAD_LAYER).get_weights()[0].shape[1]


def mix_head_with_parent(model: Any, parent_head: tuple[np.ndarray, np.ndarray],
                         share: float) -> None:
    """Move ``model``'s old-class head columns ``share`` of the way to the parent's
    (``parent_head``: kernel and bias, as :func:`parent_head_of` read them at the start;
    :func:`mix_old_columns`)."""
    head = model.get_layer(models.HEAD_LAYER)
    kernel, bias = head.get_weights()
    head.set_weights(list(mix_old_columns(kernel, bias, *parent_head, share)))


def parent_head_of(model: Any, added: int) -> tuple[np.ndarray, np.ndarray]:
    """The parent's head as :func:`start_from_parent` left it in ``model``: its first columns,
    bit for bit the parent's (``added`` new ones after them). Read before training, so mixing
    needs no second load of the parent."""
    kernel, bias = model.get_layer(models.HEAD_LAYER).get_weights()
    old = kernel.shape[1] - added
    return kernel[:, :old].copy(), bias[:old].copy()
