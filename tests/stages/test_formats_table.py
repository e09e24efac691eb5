"""The format table drives converters, runners and export options: every row's modules exist,
runtimes are checked against the row, and model.onnx runs the same on onnxruntime and OpenCV."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from indvision import config, formats
from indvision.edge import EdgeClassifier
from indvision.errors import ConfigError, IndvisionError
from indvision.stages import export
from tests.conftest import PROJECT_ROOT

ROWS = list(formats.FORMATS.values())


@pytest.mark.parametrize("fmt", ROWS, ids=[f.key for f in ROWS])
def test_every_row_names_a_converter_its_runners_and_known_options(
        fmt: formats.ExportFormat) -> None:
    converter = importlib.import_module(fmt.converter)
    assert callable(converter.convert), fmt.converter
    assert fmt.runners and fmt.runtime == fmt.runners[0]
    for runtime in fmt.runners:
        module = importlib.import_module(f"{formats.RUNNERS_PACKAGE}.{runtime}")
        assert callable(module.load), runtime
        assert runtime in formats.RUNTIMES
    config_fields = {f.name for f in fields(export.Config)}
    for option in fmt.options:
        assert option in config_fields and option in export.OPTION_CHECKS, option


def test_converters_and_runners_do_not_import_tensorflow() -> None:
    code = ("import sys, importlib\n"
            "from indvision import formats\n"
            "for f in formats.FORMATS.values():\n"
            "    importlib.import_module(f.converter)\n"
            "    for r in f.runners: importlib.import_module(f'indvision.runners.{r}')\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_or_unsupported_runtime_is_refused_with_the_rows_runtimes(
        tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not read: the runtime is checked first")
    with pytest.raises(IndvisionError, match=r"model\.onnx.*did you mean 'opencv'"):
        formats.load_runner(path, runtime="opencvv")
    with pytest.raises(IndvisionError, match="onnxruntime, opencv"):
        formats.load_runner(path, runtime="litert")


def test_opencv_names_the_file_it_cannot_load(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an onnx file")
    with pytest.raises(IndvisionError, match=r"model\.onnx: OpenCV .* cannot load it"):
        formats.load_runner(path, runtime="opencv")


def test_export_checks_only_the_options_the_chosen_formats_read() -> None:
    assert export.options_read(("onnx",)) == ["opset"]
    export.Config(formats=("onnx",), calibration_images=0)  # int8's setting: not read
    with pytest.raises(ConfigError, match="calibration_images must be >= 1"):
        config.build_config("export", export.Config,
                            {"formats": ["tflite_int8"], "calibration_images": 0})
    with pytest.raises(ConfigError, match="int8_keep_float_above must be > 0"):
        config.build_config("export", export.Config, {"int8_keep_float_above": 0})


def test_the_bundle_runs_the_same_on_opencv_and_onnxruntime(verified_run: Path) -> None:
    bundle = verified_run / "bundle"
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    assert meta["files"]["model.onnx"]["runners"] == ["onnxruntime", "opencv"]
    parity = json.loads((verified_run / "verify" / "parity.json").read_text(encoding="utf-8"))
    runtimes = parity["formats"]["onnx"]["runtimes"]
    assert set(runtimes) == {"onnxruntime", "opencv"}
    assert all(r["passed"] and r["agreement"] == 1.0 for r in runtimes.values())
    default, cv = EdgeClassifier(bundle), EdgeClassifier(bundle, runtime="opencv")
    assert (default.runtime, cv.runtime) == ("onnxruntime", "opencv")
    shape = (5, default.spec.height, default.spec.width, 3)
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_allclose(cv.scores(batch), default.scores(batch), atol=1e-4)
    assert cv.scores(batch[:0]).shape == (0, len(default.classes))
    with pytest.raises(IndvisionError, match=r"model\.tflite: runtime 'opencv'.*runs on litert"):
        EdgeClassifier(bundle, "model.tflite", runtime="opencv")


def test_the_cli_takes_a_runtime(verified_run: Path, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((48, 48, 3), 128, np.uint8))
    outputs = []
    for runtime in ("onnxruntime", "opencv"):
        done = subprocess.run([sys.executable, "-m", "indvision.edge", "predict",
                               str(verified_run / "bundle"), str(image), "--runtime", runtime],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout.splitlines()[0]))
    assert outputs[0]["label"] == outputs[1]["label"]
    np.testing.assert_allclose(outputs[1]["score"], outputs[0]["score"], atol=1e-4)


def test_the_opencv_runtime_needs_no_onnxruntime(verified_run: Path) -> None:
    """A device with numpy and OpenCV only: onnxruntime cannot be imported there at all."""
    code = ("import sys; sys.modules['onnxruntime'] = None  # ImportError on any import\n"
            "from indvision.edge import EdgeClassifier\n"
            f"edge = EdgeClassifier({str(verified_run / 'bundle')!r}, runtime='opencv')\n"
            "import numpy as np\n"
            "x = np.zeros((edge.spec.height, edge.spec.width, 3), np.uint8)\n"
            "print(edge.predict(x)['label'])\n"
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() in json.loads(
        (verified_run / "bundle" / "model.json").read_text(encoding="utf-8"))["classes"]
