"""Train: a classifier on the ingested splits, by two-phase transfer learning, resumable.

Phase ``head``: the pretrained backbone is frozen and only the new head learns (a higher
learning rate). Phase ``finetune``: the top of the backbone is unfrozen and everything trains
at a low learning rate, with the backbone's BatchNorm kept in inference mode (it is called
with ``training=False`` inside the model, and its BatchNorm layers stay frozen) — the keras-io
fine-tuning recipe. A backbone trained from scratch (``small_cnn``) has one phase, ``full``,
and its BatchNorm statistics are re-estimated exactly at the end
(:func:`indvision.models.recalibrate_batchnorm`): after a short fit the moving averages lag
behind the weights, and inference mode would predict one class for everything.

Objects seen in several views (ingest ``group_regex``: a parcel's side and top photos) add a last
phase, ``objects`` (``object_epochs``), on whole objects with the any-view loss
(:func:`indvision.models.any_view_loss`): a good object must look good in every view, a
defective one needs its defect in one view only — the rule evaluate, verify and the edge runtime
decide by. The image phases before it give every view its object's label, which teaches views
where the damage cannot be seen to call it damaged (and "damaged if any view is" then rejects
good objects); they are the warm start: trained on objects from the beginning, the network first
learns the cheap shortcut of hedging on one view type, which the any-view rule turns into "all
defective". Its validation accuracy is per object.

Every phase stops early on validation (``patience`` epochs without a better val accuracy or
val loss), keeps its best epoch's weights (highest val accuracy, ties to the lower val loss),
weighs classes ``balanced`` by default and is seeded by the run (and BatchNorm of a
from-scratch model is re-estimated before each validation, so validation sees the model as it
will be used).

Images are read once through :func:`indvision.images.load` (decoded, cropped, resized) and
kept in memory as uint8; each epoch then only shuffles (seeded by epoch) and augments the
training batches with the augment stage's ``augmentation.json`` — validation is never
augmented.

Resuming: after every epoch the state (history rows, best epoch, best weights) is written
atomically and Keras' ``BackupAndRestore`` keeps the model and optimizer in ``train/backup``;
calling :func:`run` again on the same run (``--resume RUN_ID``) continues after the last
finished epoch, so an interruption (even SIGKILL) loses at most the epoch in progress.

With ``mirror_average`` the saved model averages its scores over each image and the image
mirrored left to right (:func:`indvision.models.mirror_averaged`): test-time augmentation in
the graph itself, so evaluate, every exported file and the edge runtime compute the same
average with no extra code. It costs twice the inference and steadies knife-edge calls.
With ``ensemble`` N > 1 the phases above run N times, member k from seed ``run seed + k - 1``
(phases keyed ``finetune_m2`` … in the state and history, so resuming works inside any member),
and the saved model averages the members' scores (:func:`indvision.models.ensemble_averaged`).

Outputs: ``model.keras`` (the model convention of the contract), ``input_spec.json``,
``history.csv`` (epoch, phase, loss, accuracy, val_loss, val_accuracy, lr), ``curves.png`` and
``train_info.json`` (backbone, weights file and sha256, seconds and epochs per phase, best
validation accuracy).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, images, metrics, models
from indvision.errors import IndvisionError
from indvision.rundir import Run

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

STATE = "state.json"
HISTORY_COLUMNS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr")
CACHE_LIMIT_BYTES = 3 << 30  # decoded images above this are re-read from disk every batch


@dataclass(frozen=True)
class Config:
    """Model, input size and training schedule."""

    backbone: str = "mobilenet_v2"  # a key of indvision.models.BACKBONES
    height: int = 160  # model input size; images are resized (after crop) to it
    width: int = 160
    resize: str = "area"  # "area" or "bilinear" (OpenCV), also on the device
    crop: tuple[float, float, float, float] | None = None  # region of interest x0,y0,x1,y1
    colour_window: tuple[float, float] | None = None  # follow the object: see images.InputSpec
    weights: str = "auto"  # auto (imagenet if pretrainable, else none), none, imagenet, PATH
    alpha: float = 1.0  # width multiplier (MobileNets, small_cnn)
    dropout: float = 0.2
    batch_size: int = 32
    head_epochs: int = 8  # phase 1 (head only), or the only phase for small_cnn
    finetune_epochs: int = 10  # phase 2 (top of the backbone unfrozen); 0 skips it
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 2e-5  # keep low: 1e-4 collapsed MobileNetV2 on real data
    unfreeze_top_layers: int | None = None  # None: the backbone table's top blocks; N: last N
    class_weight: str = "balanced"  # or "none"
    patience: int = 4  # epochs without val improvement before a phase stops; 0: never
    label_smoothing: float = 0.0
    workers: int = 2  # threads preparing batches (and decoding the image cache)
    # Objects seen in several views (ingest.group_regex): a last phase, "objects", of up to
    # this many epochs trains on whole objects, each defective when at least one of its views
    # shows the defect (multiple-instance learning), as evaluate, verify and the edge runtime
    # decide. The earlier phases give every view its object's label, which teaches a view
    # where the damage cannot be seen to call it damaged. Needs good_class (same meaning as
    # evaluate's); skipped without grouped views or without a good class in the dataset.
    object_epochs: int = 0
    good_class: tuple[str, ...] | str | None = None
    # Save the model averaged over each image and its left-right mirror (test-time
    # augmentation inside the graph: every exported file and the edge do the same, at twice the
    # inference cost). Only where a mirrored image keeps its class; see models.mirror_averaged.
    mirror_average: bool = False
    # Train this many members on the same data, each with its own seed (run seed, +1, ...:
    # head initialisation, batch order, augmentation), and save the average of their scores:
    # one model file whose inference costs that many passes. With little data, which epochs
    # and which shortcuts a network ends on vary from seed to seed; the average varies less.
    ensemble: int = 1

    def __post_init__(self) -> None:
        models.check_choice(self.backbone, self.alpha,
                            "none" if self.weights == "auto" else self.weights)
        _ = self.input_spec  # validates crop, colour_window and resize
        if not (32 <= self.height <= 1024 and 32 <= self.width <= 1024):
            raise ValueError("height and width must be between 32 and 1024 pixels")
        if (self.weights not in ("auto", "none", "imagenet")
                and not Path(self.weights).expanduser().is_file()):
            raise ValueError(f"weights: no such file {self.weights!r} (give auto, none, "
                                 "imagenet or the path of a weights file)")
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        if self.head_epochs < 1 or self.finetune_epochs < 0 or self.patience < 0:
            raise ValueError("head_epochs must be >= 1, finetune_epochs and patience >= 0")
        if self.head_learning_rate <= 0 or self.finetune_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', "
                             f"not {self.class_weight!r}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ValueError("label_smoothing and dropout must be in [0, 1)")
        if self.unfreeze_top_layers is not None and self.unfreeze_top_layers < 1:
            raise ValueError("unfreeze_top_layers must be a positive number of layers")
        if self.object_epochs < 0:
            raise ValueError("object_epochs must be 0 (off) or more")
        if not 1 <= self.ensemble <= 10:
            raise ValueError("ensemble must be between 1 (one model) and 10 members")
        names = (self.good_class,) if isinstance(self.good_class, str) else self.good_class
        if names is not None and (not names or any(not isinstance(n, str) or not n.strip()
                                                   for n in names)):
            raise ValueError(f"good_class must be a class name or a list of candidate names, "
                             f"got {self.good_class!r}")

    @property
    def input_spec(self) -> images.InputSpec:
        return images.InputSpec(self.height, self.width, self.resize, self.crop,
                                self.colour_window)

    def resolved_weights(self) -> str:
        return models.default_weights(self.backbone) if self.weights == "auto" else self.weights


@dataclass(frozen=True)
class Phase:
    """One phase of one ensemble member. ``name`` says what trains (head, finetune, full,
    objects); ``key`` names it in the state, the history and the files (``finetune_m2``)."""

    name: str
    epochs: int
    learning_rate: float
    member: int = 1

    @property
    def key(self) -> str:
        return self.name if self.member == 1 else f"{self.name}_m{self.member}"


def phases_for(config: Config, objects: bool = False, member: int = 1) -> list[Phase]:
    """``full`` for a from-scratch backbone; ``head`` (+ ``finetune``) for a pretrained one;
    then ``objects`` (the any-view loss) when ``objects`` and ``object_epochs`` ask for it, at
    the last phase's learning rate."""
    if not models.get_backbone(config.backbone).pretrainable:
        phases = [Phase("full", config.head_epochs, config.head_learning_rate, member)]
    else:
        phases = [Phase("head", config.head_epochs, config.head_learning_rate, member)]
        if config.finetune_epochs > 0:
            phases.append(Phase("finetune", config.finetune_epochs,
                                config.finetune_learning_rate, member))
    if objects and config.object_epochs > 0:
        phases.append(Phase("objects", config.object_epochs, phases[-1].learning_rate, member))
    return phases


def member_seed(run_seed: int, member: int) -> int:
    """Ensemble member ``member`` (from 1) trains with this seed; member 1 with the run's."""
    return run_seed + member - 1


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced": n_samples / (n_classes * count(class))."""
    counts = Counter(int(v) for v in labels)
    return {c: len(labels) / (n_classes * counts[c]) for c in range(n_classes) if counts[c]}


# ----------------------------------------------------------------------------- data


def load_images(paths: list[str], spec: images.InputSpec, workers: int) -> np.ndarray:
    """Decode and prepare every image once (threads: OpenCV releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(paths), spec.height, spec.width, 3), np.uint8)

    def fill(index: int) -> None:
        out[index] = images.load(paths[index], spec)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


def _make_batches_classes() -> tuple[type, type]:
    """The PyDataset subclasses (defined lazily: Keras is imported only when training)."""
    import keras

    class ImageBatches(keras.utils.PyDataset):
        """Batches of (float32 0..255 images, one-hot labels) from cached uint8 arrays.

        ``shuffle``: a new seeded permutation per epoch (:meth:`set_epoch`); the last partial
        batch is dropped so BatchNorm never sees a batch of one. ``augmentation`` (an
        ``A.to_dict`` mapping) is applied per image, each batch seeded by (seed, epoch, batch)
        so results do not depend on which worker thread prepares it.
        """

        def __init__(self, pixels: np.ndarray | None, paths: list[str], labels: np.ndarray,
                     n_classes: int, spec: images.InputSpec, batch_size: int, *,
                     shuffle: bool = False, augmentation: dict | None = None, seed: int = 0,
                     workers: int = 1) -> None:
            super().__init__(workers=workers, use_multiprocessing=False,
                             max_queue_size=max(4, 2 * workers))
            self.pixels, self.paths, self.labels = pixels, paths, labels
            self.n_classes, self.spec, self.batch_size = n_classes, spec, batch_size
            self.shuffle, self.augmentation, self.seed = shuffle, augmentation, seed
            self._local = threading.local()
            self.set_epoch(0)

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
            from indvision.stages.augment import apply

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

    class GroupBatches(ImageBatches):
        """Batches of objects for the any-view loss: views ``(objects, V, H, W, 3)``, targets
        ``(objects, V, classes)`` — the object's one-hot label on each real view, zeros on the
        padding of objects with fewer than V views — and balanced per-object weights.

        ``members`` lists each object's image rows; ``labels`` are per object; ``batch_size``
        counts objects.
        """

        def __init__(self, pixels: np.ndarray | None, paths: list[str],
                     members: list[list[int]], labels: np.ndarray, n_classes: int,
                     spec: images.InputSpec, batch_size: int, *,
                     object_weights: np.ndarray | None = None, **kwargs: Any) -> None:
            self.members = members
            self.views = max(len(m) for m in members)
            self.object_weights = (np.ones(len(members), np.float32) if object_weights is None
                                   else np.asarray(object_weights, np.float32))
            super().__init__(pixels, paths, labels, n_classes, spec, batch_size, **kwargs)

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

    return ImageBatches, GroupBatches


# ----------------------------------------------------------------------------- state


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE
    if not path.is_file():
        return {"phases": {}, "history": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"train: warning: cannot read {path} ({exc}); training starts from epoch 1",
              flush=True)
        return {"phases": {}, "history": []}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    atomic.write_json(out / STATE, state)


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> Path:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, *arrays)
    return path


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _make_progress_callback(out: Path, state: dict[str, Any], phase: Phase,
                            datasets: list[Any], patience: int, monitor_val: bool,
                            recalibration: tuple[Any, Any] = (None, None)) -> Any:
    """A callback that, after each epoch, records history, keeps the best weights and stops
    early — all persisted in ``state.json`` so a resumed run knows them too.

    With ``recalibration`` = (classifier, unaugmented batches) for a from-scratch model,
    BatchNorm statistics are re-estimated on the batches before each validation, so validation
    — and the choice of the best epoch — sees the model as it will be used, not with moving
    averages that lag behind a short training.
    """
    import keras

    class PhaseProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.record = state["phases"].setdefault(
                phase.key, {"done": False, "epochs_run": 0, "best_epoch": None,
                             "best_val_accuracy": None, "best_val_loss": None,
                             "best_weights": None, "seconds": 0.0, "stopped_early": False})
            self.first_epoch: int | None = None
            self.epoch_started = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            for dataset in datasets:
                dataset.set_epoch(epoch)
            if self.first_epoch is None:  # after BackupAndRestore: forget redone epochs
                self.first_epoch = epoch
                state["history"] = [r for r in state["history"]
                                    if r["phase"] != phase.key or r["epoch_in_phase"] < epoch]
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            state["history"].append({
                "phase": phase.key, "epoch_in_phase": epoch,
                "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
                "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_accuracy"),
                "lr": lr,
            })
            record = self.record
            record["epochs_run"] = epoch + 1
            record["seconds"] = round(record["seconds"] + time.perf_counter()
                                      - self.epoch_started, 2)
            prefix = "val_" if monitor_val else ""
            accuracy = float(logs.get(prefix + "accuracy", 0.0))
            loss = float(logs.get(prefix + "loss", 0.0))
            # Best epoch: highest accuracy, ties broken by lower loss. Patience counts epochs
            # since the last improvement of either, so a phase whose loss still falls while
            # a small validation set's accuracy plateaus keeps learning.
            if record.get("lowest_val_loss") is None or loss < record["lowest_val_loss"]:
                record.update(lowest_val_loss=loss, lowest_val_loss_epoch=epoch)
            best = record["best_epoch"]
            if best is None or (accuracy, -loss) > (record["best_val_accuracy"],
                                                    -record["best_val_loss"]):
                weights_name = f"{phase.key}_best_e{epoch}.npz"
                _save_arrays(out / weights_name, self.model.get_weights())
                old = record["best_weights"]
                record.update(best_epoch=epoch, best_val_accuracy=accuracy,
                              best_val_loss=loss, best_weights=weights_name)
                _write_state(out, state)
                if old and old != weights_name:
                    (out / old).unlink(missing_ok=True)
            else:
                last_improvement = max(best, record["lowest_val_loss_epoch"])
                if patience and epoch - last_improvement >= patience:
                    record["stopped_early"] = True
                    self.model.stop_training = True
                    print(f"train: {phase.key}: no improvement for {patience} epochs, "
                          f"stopping; best epoch {best + 1}", flush=True)
                _write_state(out, state)
            _write_history(out, state)

        def on_test_begin(self, logs: dict | None = None) -> None:
            classifier, data = recalibration
            if data is not None:
                models.recalibrate_batchnorm(classifier,
                                             (data[i][0] for i in range(len(data))))

        def on_train_end(self, logs: dict | None = None) -> None:
            self.record["done"] = True  # before BackupAndRestore removes its backup
            _write_state(out, state)

    return PhaseProgress()


def _history_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """History rows with a global 1-based epoch number, in phase order."""
    rows = []
    for epoch, row in enumerate(state["history"], start=1):
        rows.append({"epoch": epoch, **{k: row.get(k) for k in HISTORY_COLUMNS[1:]}})
    return rows


def _write_history(out: Path, state: dict[str, Any]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _history_rows(state):
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    return atomic.write_text(out / "history.csv", buffer.getvalue())


def _write_curves(out: Path, state: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = _history_rows(state)
    epochs = [r["epoch"] for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [np.nan if r[prefix + metric] is None else r[prefix + metric] for r in rows]
            axis.plot(epochs, values, style, marker="o", markersize=3,
                      label=f"{'validation' if prefix else 'train'} {metric}")
        for index in range(1, len(rows)):
            if rows[index]["phase"] != rows[index - 1]["phase"]:
                axis.axvline(epochs[index] - 0.5, color="grey", linewidth=0.8)
                axis.text(epochs[index] - 0.4, axis.get_ylim()[1], rows[index]["phase"],
                          fontsize=8, va="top", color="grey")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic.atomic_path(out / "curves.png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return out / "curves.png"


# ----------------------------------------------------------------------------- run


def run(config: Config, run: Run) -> dict[str, Path]:
    """Train (or resume training) and write the model and its records."""
    import keras

    from indvision.dataset import read_splits

    out = run.stage_dir("train")
    spec = config.input_spec
    classes = json.loads(run.artifact("ingest", "classes").read_text(encoding="utf-8"))
    rows = read_splits(run.artifact("ingest", "splits"))
    index = {label: i for i, label in enumerate(classes)}
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    if not train_rows:
        raise IndvisionError("train: the ingest split has no training images")
    augmentation = None
    if run.has_artifact("augment", "augmentation"):
        augmentation = json.loads(run.artifact("augment", "augmentation")
                                  .read_text(encoding="utf-8"))
        if not augmentation.get("transform", {}).get("transforms"):
            augmentation = None
    else:
        print("train: no augment stage in this pipeline; training without augmentation",
              flush=True)

    state = _read_state(out)
    resumed = bool(state["history"]) or any(p.get("done") for p in state["phases"].values())
    if resumed:
        print(f"train: resuming after {len(state['history'])} finished epoch(s)", flush=True)

    weights = config.resolved_weights()
    started = time.perf_counter()
    train_labels = np.array([index[r["label"]] for r in train_rows])
    val_labels = np.array([index[r["label"]] for r in val_rows], dtype=int)
    train_paths = [r["path"] for r in train_rows]
    val_paths = [r["path"] for r in val_rows]
    cache = (len(rows) * spec.height * spec.width * 3) <= CACHE_LIMIT_BYTES
    if cache:
        print(f"train: decoding {len(train_paths) + len(val_paths)} images at "
              f"{spec.width}x{spec.height} into memory", flush=True)
        train_pixels = load_images(train_paths, spec, config.workers)
        val_pixels = load_images(val_paths, spec, config.workers) if val_paths else None
        print(f"train: images ready in {time.perf_counter() - started:.1f} s", flush=True)
    else:
        train_pixels = val_pixels = None
    image_batches, group_batches = _make_batches_classes()
    val_data = (image_batches(val_pixels, val_paths, val_labels, len(classes), spec,
                              config.batch_size, workers=1) if val_paths else None)
    class_weight = (balanced_class_weights(train_labels, len(classes))
                    if config.class_weight == "balanced" else None)
    good_index = _objects_good_index(config, run, classes, train_rows)
    # A from-scratch backbone's BatchNorm statistics are re-estimated on these unaugmented
    # training batches before every validation and at the end.
    from_scratch = not models.get_backbone(config.backbone).pretrainable
    plain_train = (image_batches(train_pixels, train_paths, train_labels, len(classes), spec,
                                 config.batch_size) if from_scratch else None)

    if good_index is not None:  # the objects phase's grouping, the same for every member
        train_members, train_objects = objects_of(train_rows, train_labels, good_index)
        object_weights = balanced_class_weights(train_objects, len(classes))
        per_batch = max(2, config.batch_size // max(len(m) for m in train_members))
        object_val = None
        if val_paths:
            val_members, val_objects = objects_of(val_rows, val_labels, good_index)
            object_val = group_batches(val_pixels, val_paths, val_members, val_objects,
                                       len(classes), spec, per_batch, workers=1)

    members: list[Any] = []
    phases: list[Phase] = []
    recalibrated = 0
    for member in range(1, config.ensemble + 1):
        seed = member_seed(run.seed, member)
        if config.ensemble > 1:
            print(f"train: ensemble member {member} of {config.ensemble} (seed {seed})",
                  flush=True)
        keras.utils.set_random_seed(seed)
        model, source = models.build_classifier_with_source(
            config.backbone, len(classes), config.height, config.width, weights, config.alpha,
            config.dropout, name=_member_name(config, member))
        train_data = image_batches(train_pixels, train_paths, train_labels, len(classes), spec,
                                   config.batch_size, shuffle=True, augmentation=augmentation,
                                   seed=seed, workers=config.workers)
        object_data: tuple[Any, Any, Any] | None = None  # (trainer, train, val) of "objects"
        if good_index is not None:
            object_train = group_batches(
                train_pixels, train_paths, train_members, train_objects, len(classes), spec,
                per_batch,
                object_weights=(np.array([object_weights[int(c)] for c in train_objects])
                                if config.class_weight == "balanced" else None),
                shuffle=True, augmentation=augmentation, seed=seed, workers=config.workers)
            object_data = (models.object_trainer(model, object_train.views), object_train,
                           object_val)

        member_phases = phases_for(config, objects=good_index is not None, member=member)
        for number, phase in enumerate(member_phases):
            record = state["phases"].get(phase.key, {})
            if record.get("done"):
                print(f"train: phase {phase.key} finished earlier "
                      f"({record['epochs_run']} epochs)", flush=True)
                continue
            if number > 0:  # start from the previous phase's best weights
                previous = state["phases"][member_phases[number - 1].key]
                model.set_weights(_load_arrays(out / previous["best_weights"]))
            if phase.name == "objects":
                trainer, phase_train, phase_val = object_data
                print(f"train: objects: any-view loss on {len(phase_train.members)} objects of "
                      f"up to {phase_train.views} views: a defective object needs its defect "
                      "in one view only", flush=True)
                _fit_phase(model, trainer, config, phase, out, state, phase_train, phase_val,
                           None, good_index, plain_train)
            else:
                _fit_phase(model, model, config, phase, out, state, train_data, val_data,
                           class_weight, None, plain_train)
            if number > 0:  # the previous phase's weights are not needed any more
                (out / str(state["phases"][member_phases[number - 1].key]["best_weights"])
                 ).unlink(missing_ok=True)

        _load_final_weights(model, out, state["phases"][member_phases[-1].key])
        if plain_train is not None:
            recalibrated = models.recalibrate_batchnorm(
                model, (plain_train[i][0] for i in range(len(plain_train))))
        members.append(model)
        phases.extend(member_phases)

    model = members[0] if len(members) == 1 else models.ensemble_averaged(members)
    if config.ensemble > 1:
        print(f"train: the saved model averages the scores of {len(members)} members "
              "(ensemble)", flush=True)
    if config.mirror_average:
        model = models.mirror_averaged(model)
        print("train: the saved model averages each image with its mirror (mirror_average)",
              flush=True)
    val_accuracy = None
    if val_data is not None:
        val_data.set_epoch(0)
        probabilities = model.predict(val_data, verbose=0)
        if phases[-1].name != "objects":
            val_accuracy = float(np.mean(np.argmax(probabilities, axis=1) == val_labels))
        else:  # per object, decided as evaluate decides (arg-max of the least-good view)
            truth, decided = metrics.decide_groups(probabilities, val_labels,
                                                   [r["group"] for r in val_rows], good_index)
            val_accuracy = float(np.mean(decided == truth))
    return _write_outputs(out, config, run, model, source, state, phases, classes,
                          len(train_rows), len(val_rows), class_weight, augmentation is not None,
                          resumed, recalibrated, val_accuracy,
                          "objects" if phases[-1].name == "objects" else "images")


def _objects_good_index(config: Config, run: Run, classes: list[str],
                        train_rows: list[dict[str, str]]) -> int | None:
    """The good class's index when the ``objects`` phase runs, else None (and why)."""
    if config.object_epochs == 0:
        return None
    report = json.loads(run.artifact("ingest", "report").read_text(encoding="utf-8"))
    if not report.get("group_regex"):
        return None
    sizes = Counter(r["group"] for r in train_rows)
    if max(sizes.values()) < 2:
        print("train: every object has one view; no objects phase", flush=True)
        return None
    good = metrics.resolve_good_class(config.good_class, classes, key="train.good_class")
    if good is None:
        print("train: views are grouped but no train.good_class is among the classes "
              f"{classes}; no objects phase (every view keeps its object's label)", flush=True)
        return None
    return classes.index(good)


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


def _member_name(config: Config, member: int) -> str:
    """Each ensemble member's model name (unique inside the saved ensemble)."""
    name = f"indvision_{config.backbone}"
    return name if member == 1 else f"{name}_m{member}"


def _load_final_weights(model: Any, out: Path, record: dict[str, Any]) -> None:
    """The last phase's best weights; after a crash between writing the outputs and the
    manifest, the saved model.keras holds them (its best-weights file is already gone)."""
    best = out / str(record.get("best_weights"))
    if best.is_file():
        model.set_weights(_load_arrays(best))
    elif (out / "model.keras").is_file():
        saved = models.find_submodel(models.load_model(out / "model.keras"), model.name)
        model.set_weights(saved.get_weights())
    else:
        raise IndvisionError(f"{out}: training state is incomplete ({best.name} is missing); "
                             "start a new run")


def _fit_phase(model: Any, trainer: Any, config: Config, phase: Phase, out: Path,
               state: dict[str, Any], train_data: Any, val_data: Any,
               class_weight: dict[int, float] | None, good_index: int | None,
               recalibration_data: Any = None) -> None:
    """Fit one phase. ``model`` is the classifier (frozen/unfrozen here); ``trainer`` is what
    is fitted: the classifier itself, or its any-view wrapper (``good_index`` set)."""
    import keras

    if phase.name == "head":
        models.freeze_backbone(model)
    elif phase.name == "finetune" or (phase.name == "objects"
                                      and models.get_backbone(config.backbone).pretrainable):
        unfrozen = models.unfreeze_top(model, config.backbone, config.unfreeze_top_layers)
        print(f"train: {phase.key}: {unfrozen} backbone layers unfrozen (BatchNorm stays "
              "frozen)", flush=True)
    if good_index is None:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        accuracy: Any = "accuracy"
    else:
        loss = models.any_view_loss(good_index, config.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(models.any_view_accuracy(good_index),
                                                   name="accuracy")
    trainer.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss=loss,
                    metrics=[accuracy])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"train: phase {phase.key}: up to {phase.epochs} epochs at learning rate "
          f"{phase.learning_rate:g}, {trainable:,} trainable parameters, "
          f"{len(train_data)} batches/epoch", flush=True)
    progress = _make_progress_callback(out, state, phase, [train_data], config.patience,
                                       monitor_val=val_data is not None,
                                       recalibration=(model, recalibration_data))
    backup = keras.callbacks.BackupAndRestore(backup_dir=str(out / "backup" / phase.key),
                                              double_checkpoint=True)
    trainer.fit(train_data, validation_data=val_data, epochs=phase.epochs,
                class_weight=class_weight, callbacks=[progress, backup], verbose=2)
    shutil.rmtree(out / "backup" / phase.key, ignore_errors=True)
    record = state["phases"][phase.key]
    record["done"] = True
    _write_state(out, state)
    print(f"train: phase {phase.key} done: {record['epochs_run']} epochs in "
          f"{record['seconds']:.0f} s, best epoch {record['best_epoch'] + 1} "
          f"(val accuracy {record['best_val_accuracy']:.4f})", flush=True)


def _inference_copy(model: Any) -> Any:
    """The same network without optimizer state: what model.keras holds."""
    import keras

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def _write_outputs(out: Path, config: Config, run: Run, model: Any,
                   source: models.WeightsSource, state: dict[str, Any], phases: list[Phase],
                   classes: list[str], n_train: int, n_val: int,
                   class_weight: dict[int, float] | None, augmented: bool, resumed: bool,
                   recalibrated: int, val_accuracy: float | None,
                   loss_kind: str) -> dict[str, Path]:
    with atomic.atomic_path(out / "model.keras") as tmp:
        _inference_copy(model).save(tmp)
    outputs = {
        "model": out / "model.keras",
        "input_spec": atomic.write_json(out / "input_spec.json", config.input_spec.to_dict()),
        "history": _write_history(out, state),
        "curves": _write_curves(out, state),
    }
    final = state["phases"][phases[-1].key]
    info = {
        "backbone": config.backbone,
        "alpha": config.alpha,
        "input": {"height": config.height, "width": config.width},
        "weights": {"setting": config.weights, "kind": source.kind, "file": source.path,
                    "sha256": source.sha256},
        "classes": classes,
        "images": {"train": n_train, "val": n_val},
        "class_weight": ({classes[k]: round(v, 4) for k, v in class_weight.items()}
                         if class_weight else None),
        "augmentation": augmented,
        "last_phase_on": loss_kind,  # "objects": its val accuracy is per object
        "mirror_average": config.mirror_average,
        "ensemble": config.ensemble,
        "phases": {p.key: {key: state["phases"][p.key].get(key) for key in
                            ("epochs_run", "best_epoch", "best_val_accuracy", "best_val_loss",
                             "seconds", "stopped_early")} | {"learning_rate": p.learning_rate,
                                                              "max_epochs": p.epochs}
                   for p in phases},
        "epochs_run": sum(state["phases"][p.key]["epochs_run"] for p in phases),
        "seconds": round(sum(state["phases"][p.key]["seconds"] for p in phases), 2),
        "best_val_accuracy": final["best_val_accuracy"],
        "val_accuracy": val_accuracy,  # of the saved model (after BatchNorm recalibration)
        "batchnorm_recalibrated_batches": recalibrated,
        "resumed": resumed,
        "seed": run.seed,
    }
    outputs["info"] = atomic.write_json(out / "train_info.json", info)
    for phase in phases:  # model.keras now holds the weights (see _load_final_weights)
        name = state["phases"][phase.key].get("best_weights")
        if name:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "backup", ignore_errors=True)
    print(f"train: saved {outputs['model']} (val accuracy "
          f"{'n/a' if val_accuracy is None else f'{val_accuracy:.4f}'})", flush=True)
    return outputs
