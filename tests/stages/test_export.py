"""Export: a self-describing bundle per the format table, published atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic, config, formats, images
from indvision.edge import EdgeClassifier
from indvision.errors import ConfigError
from indvision.rundir import Run
from indvision.stages import export
from tests.conftest import PROJECT_ROOT
from tests.stages.conftest import copy_run, split_images

FORMAT_KEYS = list(formats.FORMATS)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def keras_reference(exported_run: Path) -> dict:
    """The Keras model's probabilities on the exported run's test images (paths and labels)."""
    import keras

    run = Run.open(exported_run)
    spec = images.InputSpec.from_dict(read_json(run.artifact("train", "input_spec")))
    batch, labels, paths = split_images(run, "test", spec)
    model = keras.models.load_model(run.artifact("train", "model"), compile=False)
    probs = model.predict(batch.astype(np.float32), verbose=0)
    return {"paths": paths, "labels": labels, "probs": probs, "batch": batch}


def test_config_validates_formats_and_opset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'tflite_int8'"):
        config.build_config("export", export.Config, {"formats": ["onnx", "tflite_int"]})
    with pytest.raises(ConfigError, match=r"opset must be 13\.\.18"):
        config.build_config("export", export.Config, {"opset": 19})
    with pytest.raises(ConfigError, match="formats is empty"):
        config.build_config("export", export.Config, {"formats": []})
    with pytest.raises(ConfigError, match="twice"):
        config.build_config("export", export.Config, {"formats": ["onnx", "onnx"]})
    built = config.build_config("export", export.Config, {"formats": ["onnx"], "opset": 18})
    assert built.formats == ("onnx",) and built.opset == 18


def test_bundle_describes_itself(exported_run: Path) -> None:
    run = Run.open(exported_run)
    bundle = exported_run / "bundle"
    meta = read_json(bundle / "model.json")
    evaluation = read_json(run.artifact("evaluate", "metrics"))
    assert meta["classes"] == read_json(run.artifact("ingest", "classes"))
    assert meta["input_spec"] == read_json(run.artifact("train", "input_spec"))
    assert meta["decision"]["good_class"] == "ok"
    assert meta["decision"]["threshold"] == evaluation["threshold"]
    assert meta["metrics"]["test"] == evaluation["test"]
    provenance = meta["provenance"]
    assert provenance["dataset_hash"] == read_json(run.artifact("ingest", "report"))["dataset_hash"]
    assert provenance["config_hash"] == "stand-in-config-hash"
    assert provenance["run_id"] == run.run_id and provenance["pipeline"] == run.pipeline
    assert "git_commit" in provenance
    for package in ("keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        assert provenance["versions"][package], package
    assert provenance["keras_model_sha256"] == atomic.sha256_file(run.artifact("train", "model"))
    # every file of the table is there, with its true hash and size, and nothing else
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["model.json", *(f.filename for f in formats.FORMATS.values())])
    for fmt in formats.FORMATS.values():
        entry = meta["files"][fmt.filename]
        path = bundle / fmt.filename
        assert entry["sha256"] == atomic.sha256_file(path)
        assert entry["bytes"] == path.stat().st_size
        assert (entry["format"], entry["kind"], entry["gate"]) == (fmt.key, fmt.kind,
                                                                  fmt.gate.name)
        assert entry["verified"] is False
    assert meta["default_model"] == "model.onnx"
    # the manifest lists the bundle's files, and the temp folder is gone
    recorded = run.manifest["stages"]["export"]["outputs"]["bundle"]["files"]
    assert recorded["bundle/model.json"] == atomic.sha256_file(bundle / "model.json")
    assert not list(exported_run.glob(".bundle.tmp-*"))


def test_onnx_carries_metadata_and_a_dynamic_batch(exported_run: Path) -> None:
    import onnx

    meta = read_json(exported_run / "bundle" / "model.json")
    model = onnx.load(str(exported_run / "bundle" / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    for key in ("classes", "input_spec", "decision", "metrics", "provenance"):
        assert json.loads(props[key]) == meta[key], key
    assert "files" not in props  # a file cannot carry its own hash
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert opsets == [17]  # export.Config's default, within tf2onnx's limit of 18
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_int8_file_takes_uint8_pixels_unchanged(exported_run: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(exported_run / "bundle" / "model_int8.tflite"))
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    assert detail["quantization"] == (1.0, 0)  # calibrated over the full 0..255 range
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8


@pytest.mark.parametrize("key", FORMAT_KEYS)
def test_every_format_reloads_and_predicts_like_keras(exported_run: Path, keras_reference: dict,
                                                      key: str) -> None:
    fmt = formats.FORMATS[key]
    classifier = EdgeClassifier(exported_run / "bundle", fmt.filename)
    results = classifier.predict(keras_reference["paths"])
    probs = np.array([[r["scores"][c] for c in classifier.classes] for r in results])
    reference = keras_reference["probs"]
    assert probs.shape == reference.shape
    if fmt.kind == "float":
        np.testing.assert_array_equal(probs.argmax(1), reference.argmax(1))
        assert np.abs(probs - reference).max() <= 1e-4
    else:
        assert np.abs(probs - reference).max() < 0.05  # int8 steps are 1/256
        assert (probs.argmax(1) == reference.argmax(1)).mean() >= 0.75
    # the runner on the raw batch gives the same numbers as the classifier on the files
    runner_probs = formats.load_runner(exported_run / "bundle" / fmt.filename)(
        keras_reference["batch"])
    np.testing.assert_allclose(runner_probs, probs, atol=1e-6)


def test_only_the_configured_formats_and_no_evaluate(trained_run: Path,
                                                     tmp_path: Path) -> None:
    from indvision.stages import verify

    run = copy_run(trained_run, tmp_path / "exports")
    del run.manifest["stages"]["evaluate"]  # a pipeline without evaluate: no threshold
    run.start_stage("export")
    outputs = export.run(export.Config(formats=("onnx",)), run)
    run.finish_stage("export", outputs, 0.0)
    meta = read_json(outputs["bundle"] / "model.json")
    assert sorted(p.name for p in outputs["bundle"].iterdir()) == ["model.json", "model.onnx"]
    assert list(meta["files"]) == ["model.onnx"]
    assert meta["decision"]["threshold"] is None and meta["metrics"] == {}
    # verify then reports the Keras model's own test numbers in latest.json
    verify.run(verify.Config(), run)
    latest = read_json(run.exports_dir / "latest.json")
    assert latest["metrics"]["source"] == "verify"
    assert 0.0 <= latest["metrics"]["test"]["accuracy"] <= 1.0
    assert latest["shippable"] == ["model.onnx"]


EXPORT_SCRIPT = """
import sys
from pathlib import Path
from indvision.rundir import Run
from indvision.stages import export
export.run(export.Config(), Run.open(Path(sys.argv[1])))
"""


def test_killed_export_leaves_no_bundle_and_latest_alone(trained_run: Path,
                                                        tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / "exports")
    latest = run.exports_dir / "latest.json"
    latest.write_text('{"run_id": "an-earlier-run", "bundle": "an-earlier-run/bundle"}\n')
    before = latest.read_bytes()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(run.root)],
                               cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            tmp = list(run.root.glob(".bundle.tmp-*"))
            if tmp and any(tmp[0].iterdir()):  # mid-export: a model file is being written
                break
            time.sleep(0.05)
        assert process.poll() is None, "export finished before it could be interrupted"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert list(run.root.glob(".bundle.tmp-*")), "the kill came before the temp bundle existed"
    assert not (run.root / "bundle").exists()
    assert latest.read_bytes() == before
    # the next export cleans the leftover temp folder and publishes a whole bundle
    outputs = export.run(export.Config(formats=("tflite",)), run)
    assert (outputs["bundle"] / "model.json").is_file()
    assert not list(run.root.glob(".bundle.tmp-*"))
    assert latest.read_bytes() == before  # only verify moves latest.json


def test_a_bundle_left_by_an_unrecorded_export_is_replaced_whole(exported_run: Path,
                                                                tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")  # bundle/ exists with three models
    outputs = export.run(export.Config(formats=("tflite",)), run)
    assert sorted(p.name for p in outputs["bundle"].iterdir()) == ["model.json", "model.tflite"]
    assert not [p for p in run.root.iterdir() if p.name.startswith(".bundle")]
