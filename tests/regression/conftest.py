"""Fixtures of the regression suite: a user's own bundle, or a small real-data bundle for CI.

Two ways in, both checked with ``python -m indvision.edge evaluate --golden`` (the same check a
device runs):

- **Your model** — point the suite at a bundle and a folder-per-class tree of held-out images::

      INDVISION_BUNDLE=exports/defect INDVISION_HELDOUT=data/heldout \\
      INDVISION_GOLDEN=golden/defect.json pytest tests/regression

  (or ``--bundle``, ``--heldout``, ``--golden`` when pytest is started on this folder).
  Optional: ``INDVISION_MODEL`` (a file of the bundle, default its default model),
  ``INDVISION_MAX_CHANGED`` (images allowed to change label, default 0). Tests that need them
  skip, saying what to set, when they are not set.
- **CI** — a session fixture trains a small real model (MobileNetV2 at 96 px, head only, on a
  per-class sample of the NEU steel set from ``../shared/data``) with the real pipeline,
  writes its test split as a held-out folder-per-class tree of symlinks and records a golden
  file from the bundle's first evaluation. Skips, saying why, where ``../shared`` is absent.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from tests.conftest import SHARED_WEIGHTS, needs_shared

from indvision import atomic, dataset, formats

NEU_PER_CLASS = 100  # 6 classes x 100: 420 train / 90 val / 90 test images
IMAGE_SIZE = 96

PIPELINE_YAML = """\
name: regression
seed: 7
stages:
  ingest:
    source: {source}
    val_fraction: 0.15
    test_fraction: 0.15
  augment:
    transforms:
      - HorizontalFlip: {{p: 0.5}}
      - VerticalFlip: {{p: 0.5}}
    preview_per_class: 0
  train:
    backbone: mobilenet_v2
    weights: {weights}
    height: {size}
    width: {size}
    batch_size: 32
    finetune_steps: 0            # the linear probe alone: a few seconds, and the anchor
    workers: 1
  evaluate:
    fail_below: 0.80
  export:
    formats: [onnx]
  verify: {{}}
"""

USER_SETTINGS = {
    "bundle": ("INDVISION_BUNDLE", "--bundle"),
    "heldout": ("INDVISION_HELDOUT", "--heldout"),
    "golden": ("INDVISION_GOLDEN", "--golden"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("indvision regression")
    group.addoption("--bundle", help="bundle, run folder or exports/<pipeline> to check "
                                     "(env INDVISION_BUNDLE)")
    group.addoption("--heldout", help="held-out folder-per-class images (env INDVISION_HELDOUT)")
    group.addoption("--golden", help="golden file from `python -m indvision.edge evaluate "
                                     "--write-golden` (env INDVISION_GOLDEN)")


def user_setting(config: pytest.Config, name: str) -> str | None:
    """A user setting from its pytest option or, failing that, its environment variable."""
    env, option = USER_SETTINGS[name]
    try:
        value = config.getoption(option)
    except ValueError:  # the option is only registered when pytest starts on this folder
        value = None
    return value or os.environ.get(env) or None


@pytest.fixture(scope="session")
def user_target(pytestconfig: pytest.Config) -> dict[str, str]:
    """The user's bundle, held-out folder and golden file, or a skip saying what to set."""
    values = {name: user_setting(pytestconfig, name) for name in USER_SETTINGS}
    missing = [USER_SETTINGS[name][0] for name, value in values.items() if not value]
    if missing:
        pytest.skip(f"user regression check not configured: set {', '.join(missing)} (a bundle, "
                    "a held-out folder-per-class tree and a golden file written with "
                    "`python -m indvision.edge evaluate BUNDLE HELDOUT --write-golden FILE`)")
    if not Path(values["golden"]).is_file():
        pytest.skip(f"golden file {values['golden']} does not exist yet; record it once from a "
                    f"model you trust: python -m indvision.edge evaluate {values['bundle']} "
                    f"{values['heldout']} --write-golden {values['golden']}")
    return values


# ----------------------------------------------------------------------------- the CI bundle

def neu_sample_csv(neu: Path, target: Path, per_class: int) -> Path:
    """A CSV listing ``per_class`` images of each NEU class, spread evenly over its files."""
    rows = []
    for folder in sorted(p for p in neu.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png",
                                                                           ".bmp", ".jpeg"))
        step = max(1, len(files) // per_class)
        rows += [(str(path), folder.name) for path in files[::step][:per_class]]
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return target


def build_real_run(base: Path) -> Path:
    """Train, evaluate, export (ONNX) and verify a small NEU model with the real pipeline."""
    from indvision import config, pipeline

    neu = needs_shared("data", "neu")
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"{SHARED_WEIGHTS} is absent: the offline MobileNetV2 weights live in "
                    "../shared/weights beside the checkout")
    sample = neu_sample_csv(neu, base / "neu_sample.csv", NEU_PER_CLASS)
    yaml_path = base / "regression.yaml"
    yaml_path.write_text(PIPELINE_YAML.format(source=sample, weights=SHARED_WEIGHTS,
                                              size=IMAGE_SIZE),
                         encoding="utf-8")
    spec = config.load_pipeline(str(yaml_path))
    return pipeline.run_pipeline(spec, base / "exports").root


def heldout_tree(run_root: Path, target: Path) -> Path:
    """The run's test split as ``target/<class>/<file>`` symlinks (never seen in training)."""
    splits = dataset.read_splits(run_root / "ingest" / "splits.csv")
    for row in splits:
        if row["split"] != "test":
            continue
        folder = target / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(row["path"])
        link = folder / source.name
        try:
            link.symlink_to(source)
        except OSError:  # no symlinks (some filesystems): copy
            shutil.copy2(source, link)
    return target


def degrade_onnx_bundle(bundle: Path, target: Path, noise: float = 1.5, seed: int = 0) -> Path:
    """A copy of ``bundle`` whose classifier weights carry Gaussian noise (``noise`` x their own
    std), with the sha256 records (``model.json`` and its sidecar) updated: it loads, passes the
    tamper checks and still says verified + shippable, so only a regression check catches it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    target = Path(shutil.copytree(bundle, target))
    path = target / "model.onnx"
    proto = onnx.load(str(path))
    initializers = {init.name: init for init in proto.graph.initializer}
    n_classes = len(formats.read_model_json(target)["classes"])
    kernel = None
    for node in reversed(proto.graph.node):  # the last MatMul / Gemm is the Dense head
        if node.op_type in ("MatMul", "Gemm"):
            kernel = next(initializers[name] for name in node.input if name in initializers)
            break
    if kernel is None:
        raise AssertionError("no Dense kernel found in model.onnx")
    weights = numpy_helper.to_array(kernel)
    assert n_classes in weights.shape, (weights.shape, n_classes)
    rng = np.random.default_rng(seed)
    noisy = weights + rng.normal(0.0, noise * float(weights.std()), weights.shape)
    kernel.CopyFrom(numpy_helper.from_array(noisy.astype(weights.dtype), kernel.name))
    atomic.write_bytes(path, proto.SerializeToString())
    meta = json.loads((target / "model.json").read_text(encoding="utf-8"))
    meta["files"]["model.onnx"].update(sha256=atomic.sha256_file(path),
                                       bytes=path.stat().st_size)
    atomic.write_json(target / "model.json", meta)
    sidecar = target / "model.json.sha256"  # verify's record of model.json, when it leaves one
    if sidecar.is_file():
        atomic.write_text(sidecar, f"{atomic.sha256_file(target / 'model.json')}  model.json\n")
    return target


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a small NEU run (ingest → verify, ONNX bundle). Read-only."""
    return build_real_run(tmp_path_factory.mktemp("regression_run"))


@pytest.fixture(scope="session")
def real_bundle(real_run: Path) -> Path:
    return real_run / "bundle"


@pytest.fixture(scope="session")
def heldout(real_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return heldout_tree(real_run, tmp_path_factory.mktemp("heldout") / "neu_test")


@pytest.fixture(scope="session")
def golden_file(real_bundle: Path, heldout: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden record of the freshly trained bundle on the held-out tree (floor margin 0)."""
    from indvision import edge

    path = tmp_path_factory.mktemp("golden") / "golden.json"
    with open(os.devnull, "w") as sink:
        from contextlib import redirect_stdout
        with redirect_stdout(sink):
            status = edge.main(["evaluate", str(real_bundle), str(heldout),
                                "--write-golden", str(path)])
    assert status == 0
    return path


@pytest.fixture(scope="session")
def degraded_bundle(real_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return degrade_onnx_bundle(real_bundle, tmp_path_factory.mktemp("degraded") / "bundle")
