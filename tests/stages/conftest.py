"""Runs that reach export: ingest, train (small_cnn, 40 px) and evaluate, all the real stages.

The runs are built once per test session (export is the slow part) and cached under pytest's
session temp folder, so tests in other folders (tests/edge/) that import these fixtures
reuse them. Treat them as read-only: a test that changes files works on :func:`copy_run`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from indvision import dataset, images
from indvision.rundir import Run
from indvision.stages import ingest
from tests.conftest import evaluate_tiny, make_tree, train_tiny

PIPELINE = "tiny"
IMAGE_SIZE = 40  # the tree's images are 48 px: the spec makes every path resize
ESCAPE_RATE_TARGET = 0.1


def copy_run(source_root: Path, exports: Path) -> Run:
    """Copy a run folder to ``exports/<pipeline>/<run_id>`` and open it (tests change copies)."""
    target = exports / source_root.parent.name / source_root.name
    shutil.copytree(source_root, target)
    return Run.open(target)


def split_images(run: Run, split: str, spec: images.InputSpec) -> tuple[np.ndarray, np.ndarray,
                                                                         list[str]]:
    """Images (uint8), label indices and paths of one split, loaded as the model sees them."""
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    rows = [r for r in dataset.read_splits(run.artifact("ingest", "splits")) if r["split"] == split]
    batch = np.stack([images.load(r["path"], spec) for r in rows])
    return batch, np.array([classes.index(r["label"]) for r in rows]), [r["path"] for r in rows]


def build_trained_run(base: Path, **train_settings) -> Path:
    """Ingest a tiny tree, train a tiny small_cnn and evaluate it; returns the run root.
    ``train_settings`` go to the train stage's config (e.g. ``mirror_average=True``)."""
    tree = make_tree(base / "data", per_class=30)
    run = Run.create(base / "exports", PIPELINE, seed=0,
                     config={"name": PIPELINE, "stages": {"ingest": {"source": str(tree)}}},
                     config_hash="stand-in-config-hash")
    run.start_stage("ingest")
    outputs = ingest.run(ingest.Config(source=str(tree), good_class="ok"), run)
    run.finish_stage("ingest", outputs, 0.0)
    train_tiny(run, **train_settings)
    evaluate_tiny(run, escape_rate_target=ESCAPE_RATE_TARGET)
    return run.root


def cached(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """Build once per session under the session temp folder (a DONE marker guards it)."""
    base = factory.getbasetemp() / f"indvision-{name}"
    marker = base / "DONE"
    if marker.is_file():
        return Path(marker.read_text(encoding="utf-8"))
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    root = build(base)
    marker.write_text(str(root), encoding="utf-8")
    return root


def export_copy(base: Path, source_root: Path) -> Path:
    """A copy of ``source_root`` with the export stage run on it (all formats)."""
    from indvision.stages import export

    run = copy_run(source_root, base / "exports")
    run.start_stage("export")
    started = time.perf_counter()
    outputs = export.run(export.Config(), run)
    run.finish_stage("export", outputs, time.perf_counter() - started)
    return run.root


def verify_copy(base: Path, source_root: Path) -> Path:
    """A copy of ``source_root`` (exported) with the verify stage run on it."""
    from indvision.stages import verify

    run = copy_run(source_root, base / "exports")
    run.start_stage("verify")
    run.finish_stage("verify", verify.run(verify.Config(), run), 0.0)
    return run.root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a run that has ingest, train and evaluate (tiny, real stages). Read-only."""
    return cached(tmp_path_factory, "trained", build_trained_run)


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Path:
    """Root of a copy of the trained run with ``bundle/`` exported in every format. Read-only."""
    return cached(tmp_path_factory, "exported",
                  lambda base: export_copy(base, trained_run))


@pytest.fixture(scope="session")
def verified_run(tmp_path_factory: pytest.TempPathFactory, exported_run: Path) -> Path:
    """Root of a copy of the exported run after verify (default gates). Read-only."""
    return cached(tmp_path_factory, "verified", lambda base: verify_copy(base, exported_run))
