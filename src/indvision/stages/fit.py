"""Fit: a good-only anomaly model (:mod:`indvision.anomaly`) on the good training images.

Every good training image becomes patch features (:func:`indvision.anomaly.model.
patch_extractor`: the backbone's features at two depths, averaged over neighbours, projected
to ``projection_dim``), the outer ``border`` patches left out (they see the zero padding). The
memory bank keeps ``bank_size`` of them by greedy k-centre selection, from at most
``coreset_pool`` patches (a seeded share of each image's). Each validation image's raw score
is its worst patch's distance to the bank; the raw threshold is chosen on those
(:mod:`indvision.anomaly.threshold`). The model is saved with that threshold inside it (scores
normalised so it sits at 0.5) as ``model.keras``, with ``input_spec.json`` and
``fit_report.json``; evaluate, export and verify read it as they read a trained classifier
(:attr:`indvision.rundir.Run.model_stage`). The threshold is a fit setting, not evaluate's,
because it is a constant inside the graph.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indvision import atomic, decision, images
from indvision.console import say
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.evaluation.scoring import image_batches
from indvision.rundir import Run


@dataclass(frozen=True)
class Config:
    """The anomaly model's shape, its bank budget and how its threshold is chosen."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"  # local mirror first (INDVISION_WEIGHTS_DIR, ../shared/weights)
    height: int = 224  # at most: smaller training images are not upsampled (see input_size)
    width: int = 224
    resize: str = "area"
    neighbourhood: int = 3  # a patch is averaged over this many patches a side (odd)
    border: int = 2  # outer patches of the grid neither fitted nor judged (zero padding)
    projection_dim: int = 128  # fixed random projection of the patch features
    bank_size: int = 2000  # patches kept in the memory bank: the model's size and speed
    coreset_pool: int = 2_000_000  # at most this many training patches enter the selection
    batch_size: int = 32
    false_reject_target: float = 0.01  # no defective validation image: expected on new good parts
    escape_rate_target: float = 0.01  # defective validation images: the classifiers' rule ...
    max_false_reject_rate: float = 0.1  # ... and its cap on good validation images rejected

    def __post_init__(self) -> None:
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            raise ValueError(f"neighbourhood must be an odd number >= 1, got {self.neighbourhood}")
        for key in ("height", "width", "projection_dim", "bank_size", "coreset_pool",
                    "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.border < 0:
            raise ValueError(f"border must be at least 0 patches, got {self.border}")
        for key in ("false_reject_target", "escape_rate_target", "max_false_reject_rate"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be a fraction in [0, 1), got {getattr(self, key)}")
        _ = self.input_spec  # validates resize

    @property
    def input_spec(self) -> images.InputSpec:
        return images.InputSpec(self.height, self.width, self.resize)


#: The input is a multiple of this (MobileNetV2's block_6 has stride 8: whole patches).
SIZE_STEP = 8


def input_size(config: Config, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``(height, width)`` of the model input: the configured size, or the training images'
    median size where that is smaller, rounded down to a multiple of :data:`SIZE_STEP` —
    never upsampled. Upsampling adds no detail and blurs the patches the bank compares: the
    128 px synthetic parts at 224 px gave AUROC 0.887, at 128 px 0.962."""
    if not sizes:
        return config.height, config.width
    heights, widths = zip(*sizes, strict=True)
    native = [int(np.median(heights)), int(np.median(widths))]
    return tuple(max(SIZE_STEP * 4, min(wanted, SIZE_STEP * (side // SIZE_STEP)))
                 for wanted, side in zip((config.height, config.width), native, strict=True))


def check(config: Config, run: Run) -> None:
    """Before fitting: an anomaly model needs a good-only ingest and good training images."""
    record = decision.read_for_run(run)
    if record.good_class is None or len(record.classes) != 2:
        raise IndvisionError("fit needs a good-only ingest (ingest.good_only: true): the anomaly "
                             "model learns the good class alone")
    if not rows_of(read_splits(run.artifact("ingest", "splits")), "train"):
        raise IndvisionError("the ingest split has no good training images; add some")


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Fit the bank, choose the threshold on validation, save the model and its report."""
    from indvision import anomaly
    from indvision.anomaly import model as anomaly_model
    from indvision.anomaly import threshold as raw_threshold

    check(config, run_dir)
    record = decision.read_for_run(run_dir)
    rows = read_splits(run_dir.artifact("ingest", "splits"))
    train_rows, val_rows = rows_of(rows, "train"), rows_of(rows, "val")
    spec = _spec(config, train_rows)
    import keras

    keras.utils.set_random_seed(run_dir.seed)  # weights "none" initialise randomly: repeatable
    extractor = anomaly_model.patch_extractor(config.backbone, spec.height, spec.width,
                                              config.weights, config.neighbourhood,
                                              config.projection_dim, run_dir.seed)
    anomaly_model.check_border(tuple(extractor.output.shape[1:3]), config.border)
    bank, pool, grid, seconds = _bank(config, extractor, train_rows, spec, run_dir.seed)
    raw = anomaly_model.raw_model(extractor, bank, config.border)
    val_raw = _worst_patch(raw, [r["path"] for r in val_rows], spec, config.batch_size)
    chosen = raw_threshold.choose(
        val_raw, anomaly.is_defect([r["label"] for r in val_rows], record.good_class),
        [r["path"] for r in val_rows], config.false_reject_target, config.escape_rate_target,
        config.max_false_reject_rate)
    if chosen.warning:
        say(chosen.warning)
    if not chosen.threshold > 0:
        raise IndvisionError(f"fit: the raw threshold came out {chosen.threshold}; every good "
                             "validation image matches the bank exactly — add varied images")
    model = anomaly_model.build_anomaly_model(extractor, bank, chosen.threshold, config.border)
    out = run_dir.stage_dir("fit")
    with atomic.atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    report = {
        "backbone": config.backbone, "feature_layers": anomaly_model.FEATURE_LAYERS[
            config.backbone], "grid": list(grid), "border": config.border,
        "dims": int(pool.shape[1]),
        "train_images": len(train_rows), "pool_patches": len(pool), "bank_size": len(bank),
        "seconds": seconds,
        "threshold": chosen.to_dict(),
        "val": [{"path": r["path"], "label": r["label"], "raw": float(s)}
                for r, s in zip(val_rows, val_raw, strict=True)],
    }
    say(f"fit: threshold by the {chosen.rule} rule: raw distance {chosen.threshold:.4g} "
        "(scores are normalised so it sits at 0.5)")
    return {
        "model": out / "model.keras",
        "input_spec": atomic.write_json(out / "input_spec.json", spec.to_dict()),
        "report": atomic.write_json(out / "fit_report.json", report),
    }


def _spec(config: Config, train_rows: Sequence[dict[str, str]]) -> images.InputSpec:
    """The model's input: the configured size, or the training images' smaller median size."""
    height, width = input_size(config, [(int(r["height"]), int(r["width"])) for r in train_rows
                                        if r.get("height") and r.get("width")])
    if (height, width) != (config.height, config.width):
        say(f"fit: input {width}x{height}, the training images' median size (at most "
            f"{config.width}x{config.height}: images are not upsampled)")
    return images.InputSpec(height, width, config.resize)


def _bank(config: Config, extractor, train_rows: Sequence[dict[str, str]],
          spec: images.InputSpec, seed: int
          ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], dict[str, float]]:
    """The memory bank chosen from the training patches, the pool it was chosen from, the
    patch grid and the seconds each step took."""
    from indvision.anomaly import model as anomaly_model

    started = time.perf_counter()
    pool, grid = _pool(extractor, train_rows, spec, config, seed)
    extract_s = time.perf_counter() - started
    say(f"fit: {len(train_rows)} good images → {len(pool)} patches of {pool.shape[1]} "
        f"dimensions ({grid[0]}×{grid[1]} a image) in {extract_s:.1f} s; choosing "
        f"{min(config.bank_size, len(pool))} by greedy k-centre ...")
    started = time.perf_counter()
    bank = anomaly_model.build_bank(pool, config.bank_size, seed)
    coreset_s = time.perf_counter() - started
    say(f"fit: memory bank of {len(bank)} patches in {coreset_s:.1f} s")
    return bank, pool, grid, {"patches": round(extract_s, 1), "coreset": round(coreset_s, 1)}


def _pool(extractor, rows: Sequence[dict[str, str]], spec: images.InputSpec, config: Config,
          seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The training patches entering the coreset: every patch inside the border, or, past
    ``coreset_pool``, the same seeded random share of each image's."""
    from indvision.anomaly.model import interior

    grid = tuple(int(d) for d in extractor.output.shape[1:3])
    per_image = (grid[0] - 2 * config.border) * (grid[1] - 2 * config.border)
    keep = min(per_image, max(1, config.coreset_pool // max(len(rows), 1)))
    rng = np.random.default_rng([seed, 18])
    parts = []
    for batch in image_batches([r["path"] for r in rows], spec, config.batch_size):
        patches = interior(np.asarray(extractor.predict_on_batch(batch), dtype=np.float32),
                           config.border)
        for image in patches.reshape(len(batch), per_image, -1):
            parts.append(image if keep == per_image
                         else image[rng.choice(per_image, keep, replace=False)])
    return np.concatenate(parts), grid


def _worst_patch(raw, paths: Sequence[str], spec: images.InputSpec, size: int) -> np.ndarray:
    """Each image's raw score: its worst patch's distance to the bank."""
    if not paths:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(raw.predict_on_batch(b)).max(axis=(1, 2))
                           for b in image_batches(paths, spec, size)])
