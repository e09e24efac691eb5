"""Shared by the tests of :mod:`indvision.edge`: the session's verified tiny bundle (built once
by tests/stages/conftest.py, read-only), a classifier on it, a fresh evaluation tree, views of
three objects, and helpers to run the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic
from indvision.edge import EdgeClassifier
from tests.conftest import PROJECT_ROOT, draw_tiny, make_tree

# Session-built runs shared with tests/stages/ (built once, cached on disk).
from tests.stages.conftest import exported_run, trained_run, verified_run  # noqa: F401

VIEWS_REGEX = r"^(\d+)_"  # 0_side.png, 0_top.png: views of object "0"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indvision.edge", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def write_views(folder: Path, parts: int = 3) -> list[Path]:
    """Two views per object (``<part>_top.png`` ok, ``<part>_side.png`` ok/spot/scratch)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, label in zip(range(parts), ("ok", "spot", "scratch") * parts, strict=False):
        for view, view_label in (("top", "ok"), ("side", label)):
            image = draw_tiny(view_label, np.random.default_rng([part, len(view)]))
            cv2.imwrite(str(folder / f"{part}_{view}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return sorted(folder.iterdir())


def grouped_bundle(bundle: Path, target: Path, **decision: object) -> Path:
    """A copy of ``bundle`` whose ``model.json`` decision gets ``decision`` (e.g. a group
    regex), re-recorded by its owner: the sidecar is rewritten, and the copy sits outside the
    run folder (no manifest beside it), so the edge runtime accepts it."""
    import shutil

    copy = Path(shutil.copytree(bundle, target))
    meta = read_json(copy / "model.json")
    meta["decision"].update(decision)
    atomic.write_json(copy / "model.json", meta)
    atomic.write_sha256_sidecar(copy / "model.json")
    return copy


@pytest.fixture(scope="module")
def bundle(verified_run: Path) -> Path:  # noqa: F811
    return verified_run / "bundle"


@pytest.fixture(scope="module")
def classifier(bundle: Path) -> EdgeClassifier:
    return EdgeClassifier(bundle)


@pytest.fixture(scope="module")
def eval_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh images (another seed than training) in the bundle's class folders."""
    return make_tree(tmp_path_factory.mktemp("edge") / "eval", per_class=8, seed=7)
