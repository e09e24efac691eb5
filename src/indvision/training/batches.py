"""Data feeding for training: the image cache and the Keras ``PyDataset`` batches.

Images are read once through :func:`indvision.images.load` (decoded, cropped, resized) and kept
in memory as uint8 (:func:`load_images`; above :data:`CACHE_LIMIT_BYTES` they are re-read from
disk every batch). Each epoch then only shuffles (seeded by epoch) and augments the training
batches — validation is never augmented. :class:`ImageBatches` feeds images,
:class:`GroupBatches` whole objects (every view of one object) for the any-view loss, and
:class:`Feed` holds what every ensemble member is fed from.

Imports Keras at its top (like :mod:`indvision.layers`): the train stage imports this module
inside its ``run``, so validating a pipeline stays free of TensorFlow.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from indvision import images, metrics, models
from indvision.console import say
from indvision.training.plan import balanced_class_weights

if TYPE_CHECKING:
    from indvision.training.config import Config

CACHE_LIMIT_BYTES = 3 << 30  # decoded images above this are re-read from disk every batch


def load_images(paths: list[str], spec: images.InputSpec, workers: int) -> np.ndarray:
    """Decode and prepare every image once (threads: OpenCV releases the GIL)."""
    out = np.empty((len(paths), spec.height, spec.width, 3), np.uint8)

    def fill(index: int) -> None:
        out[index] = images.load(paths[index], spec)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


@dataclass(frozen=True)
class Split:
    """One split's ingest rows, label indices and (when cached) decoded pixels."""

    rows: list[dict[str, str]]
    labels: np.ndarray
    pixels: np.ndarray | None

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.rows]


class SeededBatches(keras.utils.PyDataset):
    """The order every batch feed shares: ``shuffle`` gives a new seeded permutation per epoch
    (:meth:`set_epoch`) and drops the last partial batch, so BatchNorm never sees a batch of
    one and a step budget means the same epochs whatever is fed. Subclasses set ``labels``,
    ``batch_size``, ``shuffle`` and ``seed``, then call ``set_epoch(0)``."""

    labels: np.ndarray
    batch_size: int
    shuffle: bool
    seed: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        n = len(self.labels)
        self.order = (np.random.default_rng([self.seed, epoch]).permutation(n)
                      if self.shuffle else np.arange(n))

    def __len__(self) -> int:
        n = len(self.labels)
        if self.shuffle and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)


class ImageBatches(SeededBatches):
    """Batches of (float32 0..255 images, one-hot labels) of a split, from its cached uint8
    pixels (or read from disk when ``split.pixels`` is None).

    ``shuffle``: a new seeded permutation per epoch (:meth:`set_epoch`); the last partial
    batch is dropped so BatchNorm never sees a batch of one. ``augmentation`` (an
    ``A.to_dict`` mapping) is applied per image, each batch seeded by (seed, epoch, batch)
    so results do not depend on which worker thread prepares it.
    """

    def __init__(self, split: Split, n_classes: int, spec: images.InputSpec, batch_size: int,
                 *, shuffle: bool = False, augmentation: dict | None = None, seed: int = 0,
                 workers: int = 1) -> None:
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max(4, 2 * workers))
        self.pixels, self.paths, self.labels = split.pixels, split.paths, split.labels
        self.n_classes, self.spec, self.batch_size = n_classes, spec, batch_size
        self.shuffle, self.augmentation, self.seed = shuffle, augmentation, seed
        self._local = threading.local()
        self.set_epoch(0)

    def _compose(self) -> Any:
        compose = getattr(self._local, "compose", None)
        if compose is None:
            import albumentations as A

            compose = self._local.compose = A.from_dict(self.augmentation)
        return compose

    def _prepared(self, rows: np.ndarray, index: int) -> np.ndarray:
        """The images of ``rows`` (uint8), augmented when training, seeded by batch."""
        if self.pixels is not None:
            batch = self.pixels[rows]
        else:
            batch = np.stack([images.load(self.paths[i], self.spec) for i in rows])
        if self.augmentation is None:
            return batch
        from indvision.augmentation import apply

        compose = self._compose()
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index])
                   .generate_state(1)[0])
        compose.set_random_seed(seed)
        augmented = []
        for image in batch:
            out = apply(compose, image)
            if out.shape != image.shape:  # a crop-style transform: back to model size
                out = images.prepare(out, images.InputSpec(self.spec.height,
                                                           self.spec.width,
                                                           self.spec.resize))
            augmented.append(out)
        return np.stack(augmented)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self._prepared(rows, index).astype(np.float32)
        y = np.eye(self.n_classes, dtype=np.float32)[self.labels[rows]]
        return x, y


class FeatureBatches(SeededBatches):
    """Batches of (pooled backbone features, one-hot labels): what a ``head`` phase fits on,
    the backbone being frozen (:func:`indvision.training.phases.head_fit`), in the same
    seeded order as :class:`ImageBatches`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_classes: int,
                 batch_size: int, *, shuffle: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.features = np.asarray(features, np.float32)
        self.labels, self.n_classes, self.batch_size = labels, n_classes, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.set_epoch(0)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.features[rows], np.eye(self.n_classes, dtype=np.float32)[self.labels[rows]]


class GroupBatches(ImageBatches):
    """Batches of objects for the any-view loss: views ``(objects, V, H, W, 3)``, targets
    ``(objects, V, classes)`` — the object's one-hot label on each real view, zeros on the
    padding of objects with fewer than V views — and balanced per-object weights.

    ``members`` lists each object's image rows (in ``split``); ``labels`` are per object
    (``split.labels``, per image, are not used); ``batch_size`` counts objects.
    """

    def __init__(self, split: Split, members: list[list[int]], labels: np.ndarray,
                 n_classes: int, spec: images.InputSpec, batch_size: int, *,
                 object_weights: np.ndarray | None = None, **kwargs: Any) -> None:
        self.members = members
        self.views = max(len(m) for m in members)
        self.object_weights = (np.ones(len(members), np.float32) if object_weights is None
                               else np.asarray(object_weights, np.float32))
        # the split's images, labelled per object: order and length count objects
        super().__init__(replace(split, labels=labels), n_classes, spec, batch_size, **kwargs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        objects = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        h, w, views = self.spec.height, self.spec.width, self.views
        rows = np.array([r for o in objects for r in self.members[o]], dtype=int)
        prepared = self._prepared(rows, index)
        x = np.zeros((len(objects), views, h, w, 3), np.float32)
        y = np.zeros((len(objects), views, self.n_classes), np.float32)
        position = 0
        for slot, obj in enumerate(objects):
            count = len(self.members[obj])
            x[slot, :count] = prepared[position : position + count]
            y[slot, :count, self.labels[obj]] = 1.0
            position += count
        return x, y, self.object_weights[objects]


def objects_of(rows: list[dict[str, str]], labels: np.ndarray,
               good_index: int) -> tuple[list[list[int]], np.ndarray]:
    """Group image rows into objects (by the ingest ``group`` column, first-seen order):
    each object's row indices and its label (defective when any view is labelled so)."""
    groups = [r["group"] for r in rows]
    members: dict[str, list[int]] = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    names = list(members)
    return ([members[n] for n in names],
            metrics.group_true_labels(labels, groups, names, good_index))


# ----------------------------------------------------------------------------- what a run feeds


def load_splits(config: Config, classes: list[str], train_rows: list[dict[str, str]],
                val_rows: list[dict[str, str]], n_rows: int) -> tuple[Split, Split]:
    """The train and validation splits, decoded into memory when all ``n_rows`` images of the
    ingest split fit under :data:`CACHE_LIMIT_BYTES`."""
    spec = config.input_spec
    index = {label: i for i, label in enumerate(classes)}
    train_labels = np.array([index[r["label"]] for r in train_rows])
    val_labels = np.array([index[r["label"]] for r in val_rows], dtype=int)
    train_pixels = val_pixels = None
    if n_rows * spec.height * spec.width * 3 <= CACHE_LIMIT_BYTES:
        started = time.perf_counter()
        say(f"train: decoding {len(train_rows) + len(val_rows)} images at "
              f"{spec.width}x{spec.height} into memory")
        train_pixels = load_images([r["path"] for r in train_rows], spec, config.workers)
        val_pixels = (load_images([r["path"] for r in val_rows], spec, config.workers)
                      if val_rows else None)
        say(f"train: images ready in {time.perf_counter() - started:.1f} s")
    return Split(train_rows, train_labels, train_pixels), Split(val_rows, val_labels, val_pixels)


@dataclass(frozen=True)
class Objects:
    """The ``objects`` phase's grouping, the same for every member: each training object's
    image rows, its label and weight, objects per batch, the validation objects and the good
    class the any-view loss is built on."""

    good_index: int
    members: list[list[int]]
    labels: np.ndarray
    weights: np.ndarray | None  # balanced per object, or None (class_weight "none")
    per_batch: int
    val: GroupBatches | None


@dataclass(frozen=True)
class Feed:
    """What every ensemble member's phases are fed from. ``plain_train`` (a from-scratch
    backbone only): unaugmented training batches on which BatchNorm statistics are re-estimated
    before every validation and at the end."""

    config: Config
    n_classes: int
    train: Split
    val: Split
    augmentation: dict | None
    class_weight: dict[int, float] | None
    val_data: ImageBatches | None
    plain_train: ImageBatches | None
    objects: Objects | None

    @classmethod
    def build(cls, config: Config, n_classes: int, splits: tuple[Split, Split],
              augmentation: dict | None, good_index: int | None) -> Feed:
        """``good_index``: the good class when the ``objects`` phase runs, else None."""
        train, val = splits
        spec, size = config.input_spec, config.batch_size
        val_data = ImageBatches(val, n_classes, spec, size, workers=1) if val.rows else None
        class_weight = (balanced_class_weights(train.labels, n_classes)
                        if config.class_weight == "balanced" else None)
        from_scratch = not models.get_backbone(config.backbone).pretrainable
        plain_train = ImageBatches(train, n_classes, spec, size) if from_scratch else None
        objects = None
        if good_index is not None:
            members, labels = objects_of(train.rows, train.labels, good_index)
            weights = balanced_class_weights(labels, n_classes)
            per_batch = max(2, size // max(len(m) for m in members))
            object_val = None
            if val.rows:
                val_members, val_objects = objects_of(val.rows, val.labels, good_index)
                object_val = GroupBatches(val, val_members, val_objects, n_classes, spec,
                                          per_batch, workers=1)
            objects = Objects(good_index, members, labels,
                              (np.array([weights[int(c)] for c in labels])
                               if config.class_weight == "balanced" else None),
                              per_batch, object_val)
        return cls(config, n_classes, train, val, augmentation, class_weight, val_data,
                   plain_train, objects)

    def train_batches(self, seed: int) -> ImageBatches:
        """One member's shuffled, augmented training images."""
        config = self.config
        return ImageBatches(self.train, self.n_classes, config.input_spec, config.batch_size,
                            shuffle=True, augmentation=self.augmentation, seed=seed,
                            workers=config.workers)

    def object_batches(self, seed: int) -> GroupBatches:
        """One member's shuffled, augmented training objects (needs :attr:`objects`)."""
        config, objects = self.config, self.objects
        assert objects is not None
        return GroupBatches(self.train, objects.members, objects.labels, self.n_classes,
                            config.input_spec, objects.per_batch, object_weights=objects.weights,
                            shuffle=True, augmentation=self.augmentation, seed=seed,
                            workers=config.workers)
