"""Deterministic synthetic image sets: the offline default data of indvision.

With no real data at hand, both pipelines train on images drawn here:

* ``defect``: 128x128 grey metal-surface textures (brushed / ground steel, stored as
  3-channel PNG) with six surface-defect classes, in the spirit of the NEU steel set.
* ``parcel``: 192x108 (16:9) colour frames of a cardboard box on a conveyor, with four
  damage classes.

Design rules, and why:

* **Determinism.** Every image is drawn from its own generator,
  ``np.random.default_rng([seed, class_index, index])``, so an image does not depend on
  how many others were drawn before it or in which order, and the same seed gives
  byte-identical PNG files (``cv2.imencode`` is deterministic). No global RNG state is
  touched.
* **Shapes, not statistics.** Lighting (gain, gradient, vignetting, gamma, colour cast),
  texture contrast, scale, rotation, position, background and sensor noise are drawn
  from the *same* ranges for every class, so per-class brightness and colour
  distributions overlap heavily; only the defect *shape* tells the classes apart (the
  tests check that a colour-histogram classifier stays far below a small CNN).
* **Atomic output.** A set is written into a temporary sibling folder and renamed into
  place, so an interrupted run never leaves a half-written tree; ``synth.json`` records
  the parameters so :func:`ensure` can reuse a matching set without regenerating it.

Modules: ``kinds`` (the table of kinds; no cv2/numpy), ``drawing`` (shared helpers),
``defect`` and ``parcel`` (one renderer each), ``images`` (:func:`render`), ``files``
(:func:`generate`, :func:`ensure`), ``cli``. The image modules are imported lazily, on first
use of :func:`render` / :func:`generate` / :func:`ensure`, so ``from indvision.synth import
KINDS`` stays cheap. Command line: ``python -m indvision.synth {defect,parcel} OUT_DIR
[--seed N] [--per-class N]``.
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
