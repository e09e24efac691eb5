"""Shared fixtures: tiny, learnable image trees made on the fly, and run-folder helpers.

Real image sets are read from ``../shared/data`` (beside the checkout) by the tests that need
them; those tests skip with a reason where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenetv2_1.00_160_notop.weights.h5"

TINY_CLASSES = ("ok", "scratch", "spot")
#: Fixtures that train a real model (directly or through the fixtures they build on): every
#: test using one is marked ``slow``, so ``pytest -m "not slow"`` trains nothing.
TRAINING_FIXTURES = frozenset({"trained_run", "fresh_trained_run", "grouped_trained_run",
                               "full_run", "real_run", "train_args", "parent_run",
                               "grown_child", "fitted_anomaly_run", "anomaly_full_run"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that trains through a fixture (see TRAINING_FIXTURES)."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_training_unless_slow(request: pytest.FixtureRequest,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``slow`` that reaches the train stage fails, saying so: the marker is
    what ``-m "not slow"`` trusts, and an unmarked training test would make it lie."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import functools

    from indvision.stages import train

    @functools.wraps(train.run)  # keeps the signature the contract test reads
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} trains a model (train.run) but is not "
                             "marked slow: add @pytest.mark.slow or use a TRAINING_FIXTURES one")

    monkeypatch.setattr(train, "run", refuse)


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's record of accepted bundles (indvision.edge.accepted) lives in a fresh tmp
    folder: no test reads or writes the home folder's, nor sees another test's."""
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("INDVISION_STATE_DIR", str(folder))
    return folder


def draw_tiny(label: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One tiny RGB image whose class is a shape: plain (ok), a line (scratch), a disk (spot)."""
    base = rng.integers(90, 170)
    image = np.clip(rng.normal(base, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    if label == "scratch":
        x0, x1 = rng.integers(0, size, 2)
        cv2.line(image, (int(x0), 0), (int(x1), size - 1), (250, 250, 250), 3)
    elif label == "spot":
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(image, (int(cx), int(cy)), size // 6, (20, 20, 20), -1)
    return image


def make_tree(root: Path, classes=TINY_CLASSES, per_class: int = 16, size: int = 48,
              seed: int = 0) -> Path:
    """Write a folder-per-class tree of tiny PNGs (deterministic for a seed)."""
    for c, label in enumerate(classes):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            image = draw_tiny(label, rng, size)
            cv2.imwrite(str(folder / f"{i:03d}_a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    """A fresh 3-class tree of 16 images per class, 48 px."""
    return make_tree(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_tree_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide 3-class tree (read-only by convention), 30 images per class."""
    return make_tree(tmp_path_factory.mktemp("tiny_shared") / "data", per_class=30)


def write_pipeline(path: Path, text: str) -> Path:
    """Write a pipeline YAML for a test and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


def needs_shared(*parts: str) -> Path:
    """Return ``../shared/<parts>`` or skip the test, saying what is missing and why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: real data/weights live in ../shared beside the checkout")
    return path


def train_tiny(run, size: int = 40, epochs: int = 8, **settings):
    """Run the real train stage on ``run`` with a tiny, fast configuration (small_cnn)."""
    from indvision.dataset import read_splits, rows_of
    from indvision.stages import train

    run.start_stage("train")
    batch_size = settings.pop("batch_size", 8)
    n_train = len(rows_of(read_splits(run.artifact("ingest", "splits")), "train"))
    # exactly ``epochs`` epochs: the shuffled feed drops the last partial batch
    steps = epochs * max(1, n_train // batch_size)
    outputs = train.run(train.Config(**{"backbone": "small_cnn", "weights": "none",
                                        "height": size, "width": size, "head_steps": steps,
                                        "batch_size": batch_size, "workers": 1, **settings}),
                        run)
    run.finish_stage("train", outputs, 0.0)
    return run


def evaluate_tiny(run, **settings):
    """Run the real evaluate stage on ``run`` (the good class is the one ingest recorded)."""
    from indvision.stages import evaluate

    run.start_stage("evaluate")
    outputs = evaluate.run(evaluate.Config(**settings), run)
    run.finish_stage("evaluate", outputs, 0.0)
    return run


def reingest(run, **settings):
    """Run the real ingest stage again on ``run``'s source with other ``settings`` (another
    good class, say). Same source and seed give a byte-identical ``splits.csv``, so a model
    trained on the run still belongs to it; only the decision record changes."""
    import json

    from indvision.stages import ingest

    source = json.loads(run.artifact("ingest", "report").read_text())["source"]
    before = run.artifact("ingest", "splits").read_bytes()
    run.start_stage("ingest")
    outputs = ingest.run(ingest.Config(source=source, **settings), run)
    run.finish_stage("ingest", outputs, 0.0)
    assert outputs["splits"].read_bytes() == before, "settings changed the splits"
    return run
