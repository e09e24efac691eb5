"""Draw one synthetic image: the dispatch from kind to its renderer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from indvision.errors import IndvisionError
from indvision.synth.defect import render_defect
from indvision.synth.kinds import check_kind
from indvision.synth.parcel import render_parcel

_RENDER: dict[str, Callable[[str, np.random.Generator], np.ndarray]] = {
    "defect": render_defect,
    "parcel": render_parcel,
}


def classes_of(kind: str) -> tuple[str, ...]:
    """Class names of ``kind``; an unknown kind is the user's one-line IndvisionError."""
    try:
        return check_kind(kind)
    except ValueError as exc:
        raise IndvisionError(str(exc)) from None


def render(kind: str, class_name: str, index: int, *, seed: int = 0) -> np.ndarray:
    """Draw one image (H x W x 3 uint8, BGR as cv2 uses) of ``class_name``.

    The image depends only on (kind, seed, class index, index), never on what else was
    drawn, so sets can be generated in any order (or in parallel) with identical results.
    """
    classes = classes_of(kind)
    if class_name not in classes:
        raise ValueError(f"unknown class {class_name!r} for kind {kind!r}; valid: {classes}")
    rng = np.random.default_rng([seed, classes.index(class_name), index])
    return _RENDER[kind](class_name, rng)
