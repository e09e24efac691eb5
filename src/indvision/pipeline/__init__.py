"""Run a pipeline: the library (:mod:`~indvision.pipeline.library`, :func:`run_pipeline`) and
its command line (:mod:`~indvision.pipeline.cli`, :func:`main`; ``python -m
indvision.pipeline``). Both are named here, so ``indvision.pipeline.run_pipeline`` and
``indvision.pipeline.main`` are the public entry points; :mod:`indvision.ray_folds` imports the
library module itself, and the command line imports ray_folds, so nothing imports back.
"""

from __future__ import annotations

from indvision.pipeline.cli import build_parser, main
from indvision.pipeline.library import NOT_PROMOTED, log, run_pipeline

__all__ = ["NOT_PROMOTED", "build_parser", "log", "main", "run_pipeline"]
