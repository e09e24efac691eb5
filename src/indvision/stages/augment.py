"""Augment: the training-time image augmentation, declared in the pipeline and checked early.

The pipeline lists albumentations transforms by their own names and parameters
(``- Affine: {rotate: [-15, 15], p: 0.7}``); :func:`indvision.augmentation.build_compose`
turns the list into an ``A.Compose``, an unknown name failing with a "did you mean", a bad value
with one line naming the transform. The stage writes the Compose in albumentations' own
serialisation (``augmentation.json``), which train loads back for training batches only, and
``preview.png``: per class, one training image and augmented versions of it, so a person can
see whether the augmentation keeps the defect visible. Augmentation runs on images already
decoded, cropped and resized by :mod:`indvision.images`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, images
from indvision.augmentation import (  # noqa: F401 (re-exported: the stage's public names)
    accepted_parameters,
    albumentations_module,
    apply,
    build_compose,
    load_augmentation,
    split_item,
    transform_classes,
    value_error_line,
)
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.rundir import Run

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PREVIEW_HEIGHT = 96  # thumbnail height of the preview grid (width follows the images' aspect)
_LABEL_WIDTH = 120  # at least; wider when a class name needs it


def _default_transforms() -> list:
    return [
        {"HorizontalFlip": {"p": 0.5}},
        {"Affine": {"rotate": [-10, 10], "scale": [0.9, 1.1],
                    "translate_percent": [-0.05, 0.05], "border_mode": 4, "p": 0.7}},
        {"RandomBrightnessContrast": {"brightness_limit": 0.15, "contrast_limit": 0.15,
                                      "p": 0.5}},
    ]


@dataclass(frozen=True)
class Config:
    """Which albumentations transforms training uses, and how big a preview to draw."""

    # Each item: {TransformName: {param: value}} (albumentations 2.x names), or a bare name.
    transforms: list = field(default_factory=_default_transforms)
    preview_per_class: int = 6  # augmented samples beside each class's original

    def __post_init__(self) -> None:
        for index, item in enumerate(self.transforms):
            split_item(item, f"transforms[{index}]", ValueError)
        if not 0 <= self.preview_per_class <= 32:
            raise ValueError("preview_per_class must be between 0 and 32")


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Validate the transforms, write ``augmentation.json`` and ``preview.png``."""
    A = albumentations_module()
    compose = build_compose(config.transforms, seed=run_dir.seed)
    out = run_dir.stage_dir("augment")
    try:
        serialised = A.to_dict(compose)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise IndvisionError(f"augment.transforms: albumentations cannot serialise this list "
                             f"({value_error_line(exc)}); remove that transform") from None
    outputs = {"augmentation": atomic.write_json(out / "augmentation.json", serialised)}
    names = [type(t).__name__ for t in compose.transforms]
    say(f"augment: {len(names)} transform(s): {', '.join(names) or 'none'}")

    from indvision.dataset import read_splits

    rows = read_splits(run_dir.artifact("ingest", "splits"))
    classes = json.loads(run_dir.artifact("ingest", "classes").read_text(encoding="utf-8"))
    grid = preview_grid(compose, rows, classes, config.preview_per_class, run_dir.seed)
    outputs["preview"] = atomic.write_bytes(out / "preview.png", _encode_png(grid))
    return outputs


def preview_grid(compose: Any, rows: list[dict[str, str]], classes: list[str], per_class: int,
                 seed: int) -> np.ndarray:
    """RGB grid: per class a row of its class name, one train image, ``per_class`` augmented."""
    import cv2

    train = [r for r in rows if r["split"] == "train"] or rows
    ratios = [int(r["width"]) / max(1, int(r["height"])) for r in train if r.get("height")]
    aspect = float(np.median(ratios)) if ratios else 1.0
    width = max(16, round(PREVIEW_HEIGHT * aspect))
    spec = images.InputSpec(height=PREVIEW_HEIGHT, width=width)
    rng = np.random.default_rng(seed)
    compose.set_random_seed(seed)
    gap = 4
    tiles_per_row = 1 + per_class
    names = [label if len(label) <= 24 else label[:23] + "~" for label in classes]
    label_width = max([_LABEL_WIDTH] + [cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
                                        [0][0] + 12 for n in names])
    canvas = np.full((len(classes) * (PREVIEW_HEIGHT + gap) + gap,
                      label_width + tiles_per_row * (width + gap) + gap, 3), 255, np.uint8)
    for row_index, label in enumerate(classes):
        y = gap + row_index * (PREVIEW_HEIGHT + gap)
        cv2.putText(canvas, names[row_index], (6, y + PREVIEW_HEIGHT // 2 + 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        members = [r for r in train if r["label"] == label]
        if not members:
            continue
        original = images.load(members[int(rng.integers(len(members)))]["path"], spec)
        tiles = [original] + [apply(compose, original) for _ in range(per_class)]
        for col, tile in enumerate(tiles):
            if tile.shape[:2] != original.shape[:2]:  # a crop-style transform changed the size
                tile = images.prepare(tile, spec)
            x = label_width + gap + col * (width + gap)
            canvas[y : y + PREVIEW_HEIGHT, x : x + width] = tile
    return canvas


def _encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise IndvisionError("augment: could not encode preview.png")
    return buffer.tobytes()
