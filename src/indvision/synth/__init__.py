"""Deterministic synthetic image sets: the offline default data of indvision.

``defect``: 128x128 grey metal-surface textures with six surface-defect classes (in the spirit
of NEU); ``parcel``: 192x108 colour frames of a box on a conveyor with four damage classes.
Every image has its own generator (``default_rng([seed, class_index, index])``), so a seed
gives byte-identical files in any order. Lighting, texture, pose and noise are drawn from the
same ranges for every class: only the defect's *shape* tells classes apart (a test checks that a
colour histogram cannot). A set is written to a temporary folder and renamed into place, and
``synth.json`` lets :func:`ensure` reuse a matching set.

Modules: ``kinds`` (the table; no cv2/numpy), ``drawing``, ``defect``, ``parcel``, ``images``
(:func:`render`), ``files`` (:func:`generate`, :func:`ensure`), ``cli``; the image modules are
imported on first use, so ``from indvision.synth import KINDS`` stays cheap. Command line:
``python -m indvision.synth {defect,parcel} OUT_DIR [--seed N] [--per-class N]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from indvision.synth.kinds import GENERATOR_VERSION, IMAGE_SIZES, KINDS, check_kind

if TYPE_CHECKING:
    from indvision.synth.cli import main
    from indvision.synth.files import ensure, generate
    from indvision.synth.images import render

__all__ = [
    "GENERATOR_VERSION",
    "IMAGE_SIZES",
    "KINDS",
    "check_kind",
    "ensure",
    "generate",
    "main",
    "render",
]

# public name -> the submodule that defines it (imported on first use: it loads cv2/numpy)
_LAZY = {"render": "images", "generate": "files", "ensure": "files", "main": "cli"}
_SUBMODULES = {"cli", "defect", "drawing", "files", "images", "kinds", "parcel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
