"""One set of checks every stage goes through (like scikit-learn's ``check_estimator``).

Each stage module has a frozen ``Config`` whose defaults build, and a ``run(config, run)``;
importing it is cheap (no TensorFlow); and in a real run it writes exactly what it declares,
each file recorded in the manifest with its sha256.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import atomic, config, pipeline
from tests.conftest import PROJECT_ROOT, write_pipeline

TINY_PIPELINE = """
name: contract
seed: 3
stages:
  ingest: {good_class: ok}
  augment:
    transforms: [{HorizontalFlip: {p: 0.5}}]
    preview_per_class: 2
  train: {backbone: small_cnn, weights: none, height: 40, width: 40, head_steps: 40,
          batch_size: 8, workers: 1}
  evaluate: {}
  export: {calibration_images: 20}
  verify: {}
"""
#: The anomaly pipeline's stages (``fit`` instead of ``augment`` and ``train``).
TINY_ANOMALY_PIPELINE = """
name: contract_anomaly
seed: 3
stages:
  ingest: {good_class: ok, good_only: true}
  fit: {weights: none, height: 48, width: 48, bank_size: 100}
  evaluate: {}
  export: {formats: [onnx], keep_per_class: 0}
  verify: {}
"""


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_stage_module_follows_the_contract(stage: str) -> None:
    module = config.stage_module(stage)
    assert dataclasses.is_dataclass(module.Config)
    default = module.Config()  # every field has a default
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(default)[0].name, None)
    assert list(inspect.signature(module.run).parameters) == ["config", "run_dir"]
    assert module.__doc__, f"stage {stage} needs a module docstring saying what it does"


def test_validating_every_pipeline_imports_no_tensorflow() -> None:
    code = ("import sys; from indvision import config\n"
            "for name in ('defect', 'parcel', 'anomaly'): config.load_pipeline(name)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'albumentations', 'tf2onnx') "
            "if m in sys.modules]\n"
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny_tree_shared: Path):
    base = tmp_path_factory.mktemp("contract")
    spec = config.load_pipeline(str(write_pipeline(base / "contract.yaml", TINY_PIPELINE)),
                                data=str(tiny_tree_shared))
    return pipeline.run_pipeline(spec, base / "exports")


@pytest.fixture(scope="module")
def anomaly_full_run(tmp_path_factory: pytest.TempPathFactory, tiny_tree_shared: Path):
    base = tmp_path_factory.mktemp("contract_anomaly")
    spec = config.load_pipeline(str(write_pipeline(base / "a.yaml", TINY_ANOMALY_PIPELINE)),
                                data=str(tiny_tree_shared))
    return pipeline.run_pipeline(spec, base / "exports")


def test_the_two_tiny_pipelines_run_every_stage(full_run, anomaly_full_run) -> None:
    ran = [list(json.loads((r.root / "manifest.json").read_text())["stages"])
           for r in (full_run, anomaly_full_run)]
    assert set(ran[0]) | set(ran[1]) == set(config.STAGES)
    assert ran[1] == ["ingest", "fit", "evaluate", "export", "verify"]


@pytest.mark.slow  # builds its run through getfixturevalue, which the slow marker cannot see
@pytest.mark.parametrize("which", ["full_run", "anomaly_full_run"])
def test_every_stage_writes_what_it_declares(which: str, request: pytest.FixtureRequest) -> None:
    full_run = request.getfixturevalue(which)
    manifest = json.loads((full_run.root / "manifest.json").read_text())
    assert manifest["status"] == "done"
    for stage, record in manifest["stages"].items():
        assert record["status"] == "done", stage
        assert record["outputs"], f"{stage} declared no outputs"
        for name, entry in record["outputs"].items():
            path = full_run.root / entry["path"]
            assert path.exists(), (stage, name)
            assert path.resolve().is_relative_to(full_run.root.resolve())
            if "sha256" in entry:
                assert atomic.sha256_file(path) == entry["sha256"], (stage, name)
            for file, digest in entry.get("files", {}).items():
                assert atomic.sha256_file(full_run.root / file) == digest, (stage, file)


def test_a_passing_run_is_latest(full_run) -> None:
    latest = json.loads((full_run.exports_dir / "latest.json").read_text())
    assert latest["run_id"] == full_run.run_id
