"""Export: the trained Keras model → a self-describing bundle for the device.

Writes ``<run>/bundle/`` holding one file per format of :data:`indvision.formats.FORMATS`
chosen in ``formats`` (``model.onnx``, ``model.tflite``, ``model_int8.tflite``) and
``model.json``, which says everything a device needs and everything an auditor asks:

- ``classes`` (class index = position), ``input_spec`` (size, crop or colour window, resize
  method, RGB, 0..255 uint8: feed it to :func:`indvision.images.prepare`), ``decision`` (good
  class, threshold and group regex from evaluate), ``metrics`` (evaluate's test numbers),
- ``provenance`` (dataset hash, config hash, git commit, run id, pipeline, library versions),
- ``files``: per model file its format, kind, runtime, gate, sha256 and size. ``verify`` later
  adds ``verified``, ``shippable`` and its parity numbers.

The same metadata (without ``files``: a file cannot hold its own hash) is stored as JSON
strings in the ONNX file's ``metadata_props``, so a lone ``model.onnx`` still describes itself.

The bundle is built in ``<run>/.bundle.tmp-<pid>/`` and renamed to ``bundle/`` in one step,
``model.json`` written last: a killed export leaves no ``bundle/`` at all, never half of one.

int8: integer TFLite with uint8 input and output. Calibration uses ``calibration_images``
train-split images (seeded sample) plus one black and one white frame, so the input range is
exactly 0..255 (scale 1, zero point 0: a uint8 pixel is fed to the model unchanged, and bright
or dark images on the line are not clipped to the calibration sample's range).

Layers that int8 cannot represent well stay float (selective quantisation): TFLite's
quantisation debugger runs the calibrated model on ``int8_debug_images`` calibration images and
every layer whose int8 output error (RMSE in quantisation steps) is above
``int8_keep_float_above`` (0.7, TensorFlow's rule of thumb; typically MobileNetV2's first
depthwise conv, whose BatchNorm-folded 3x3 kernels quantise badly) is denylisted — it runs in
float between a dequantise and a quantise op; input and output stay uint8. On a MobileNetV2-160
trained on NEU this took top-1 agreement with Keras on 360 held-out images from 0.992 (3
changed) to 1.000 (2 layers float, 3.01 MB instead of 2.74 MB). ``model.json`` lists the
layers kept float (``float_layers``); ``int8_keep_float_above: null`` quantises every layer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, decision, formats, images, models
from indvision.config import config_to_dict
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError, did_you_mean
from indvision.rundir import Run, library_versions

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BUNDLE = "bundle"
TMP_PREFIX = ".bundle.tmp-"
MODEL_JSON = "model.json"
BUNDLE_FORMAT_VERSION = 1
INPUT_NAME = "image"
MAX_OPSET = 18  # tf2onnx 1.17 refuses opset 19 and above


@dataclass(frozen=True)
class Config:
    """Which formats to export and how."""

    formats: tuple[str, ...] = ("onnx", "tflite", "tflite_int8")
    calibration_images: int = 200  # train images used to calibrate int8 ranges
    opset: int = 17  # ONNX opset (13..18)
    int8_keep_float_above: float | None = 0.7  # int8 layers with a larger error stay float
    int8_debug_images: int = 8  # calibration images the int8 layer errors are measured on

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError(f"formats is empty; choose from {', '.join(formats.FORMATS)}")
        for key in self.formats:
            if key not in formats.FORMATS:
                raise ValueError(f"unknown format '{key}'{did_you_mean(key, formats.FORMATS)}")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats lists a format twice: {list(self.formats)}")
        if not 13 <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset must be 13..{MAX_OPSET} (tf2onnx 1.17 supports up to "
                             f"{MAX_OPSET}), got {self.opset}")
        if self.calibration_images < 1:
            raise ValueError(f"calibration_images must be >= 1, got {self.calibration_images}")
        if self.int8_keep_float_above is not None and self.int8_keep_float_above <= 0:
            raise ValueError("int8_keep_float_above must be > 0 (RMSE in quantisation steps; "
                             f"0.7 is usual) or null, got {self.int8_keep_float_above}")
        if self.int8_debug_images < 1:
            raise ValueError(f"int8_debug_images must be >= 1, got {self.int8_debug_images}")


def run(config: Config, run: Run) -> dict[str, Path]:
    """Convert the trained model to every configured format and publish ``bundle/``."""
    model_path = run.artifact("train", "model")
    spec = images.InputSpec.from_dict(atomic.read_json(run.artifact("train", "input_spec")))
    classes = atomic.read_json(run.artifact("ingest", "classes"))
    ingest_report = atomic.read_json(run.artifact("ingest", "report"))
    evaluation = (atomic.read_json(run.artifact("evaluate", "metrics"))
                  if run.has_artifact("evaluate", "metrics") else None)
    if evaluation is not None and list(evaluation.get("classes", classes)) != list(classes):
        raise IndvisionError(f"evaluate/metrics.json classes {evaluation.get('classes')} differ "
                             f"from ingest/classes.json {classes}; re-run evaluate")

    model = models.load_model(model_path)
    _check_model(model, spec, classes, model_path)
    needs_calibration = any(formats.FORMATS[k].kind == "int8" for k in config.formats)
    calibration = (_calibration_images(run, spec, config.calibration_images)
                   if needs_calibration else None)
    check_batch = (calibration[:4] if calibration is not None
                   else _calibration_images(run, spec, 4))

    meta = model_metadata(run, spec, classes, ingest_report, evaluation, config)
    meta["provenance"]["keras_model_sha256"] = atomic.sha256_file(model_path)
    bundle = run.root / BUNDLE
    _remove_stale_tmp(run.root)
    tmp = run.root / f"{TMP_PREFIX}{os.getpid()}"
    tmp.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        for key in config.formats:
            fmt = formats.FORMATS[key]
            started = time.perf_counter()
            print(f"export: {fmt.filename} ({fmt.description}) ...", flush=True)
            target = tmp / fmt.filename
            if key == "onnx":
                write_onnx(model, spec, target, config.opset, meta)
            elif fmt.runtime == "litert" and fmt.kind == "int8":
                float_layers = write_tflite_int8(model, target, calibration,
                                                 config.int8_keep_float_above,
                                                 config.int8_debug_images)
            elif fmt.runtime == "litert":
                write_tflite(model, spec, target)
            else:  # pragma: no cover - a new table row needs a converter here
                raise NotImplementedError(f"no converter for format '{key}'")
            note = _self_check(model, target, check_batch)
            seconds = time.perf_counter() - started
            print(f"export: {fmt.filename}: {target.stat().st_size / 1e6:.2f} MB in "
                  f"{seconds:.1f} s; {note}", flush=True)
            files[fmt.filename] = {
                "format": fmt.key, "kind": fmt.kind, "runtime": fmt.runtime,
                "extra": fmt.extra, "gate": fmt.gate.name,
                "sha256": atomic.sha256_file(target), "bytes": target.stat().st_size,
                "verified": False,
            }
            if fmt.kind == "int8":
                files[fmt.filename]["float_layers"] = float_layers
        default = (formats.DEFAULT_MODEL if formats.DEFAULT_MODEL in files else next(iter(files)))
        atomic.write_json(tmp / MODEL_JSON, {**meta, "default_model": default, "files": files})
        publish_dir(tmp, bundle)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"export: bundle ready at {bundle}", flush=True)
    return {"bundle": bundle}


# ----------------------------------------------------------------------------- metadata

def model_metadata(run: Run, spec: images.InputSpec, classes: list[str],
                   ingest_report: dict[str, Any], evaluation: dict[str, Any] | None,
                   config: Config) -> dict[str, Any]:
    """Everything ``model.json`` says except ``files`` and ``default_model``. Its ``decision``
    is the run's decision record as it stands (:func:`indvision.decision.read_for_run`)."""
    record = decision.read_for_run(run)
    metrics = ({key: evaluation[key] for key in ("test", "test_groups", "test_argmax")
                if key in evaluation} if evaluation is not None else {})
    versions = {**run.manifest.get("versions", {}), **library_versions()}
    return {
        "bundle_format": BUNDLE_FORMAT_VERSION,
        "pipeline": run.pipeline,
        "classes": list(classes),
        "input_spec": spec.to_dict(),
        "decision": {key: value for key, value in record.to_dict().items() if key != "classes"},
        "metrics": metrics,
        "provenance": {
            "run_id": run.run_id,
            "pipeline": run.pipeline,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dataset_hash": ingest_report.get("dataset_hash"),
            "config_hash": run.manifest.get("config_hash"),
            "git_commit": run.manifest.get("git_commit"),
            "seed": run.seed,
            "export_config": config_to_dict(config),
            "versions": versions,
        },
    }


def onnx_metadata_props(meta: dict[str, Any]) -> dict[str, str]:
    """``model.json``'s content as ONNX ``metadata_props``: one JSON string per key."""
    props = {key: json.dumps(value, sort_keys=True) for key, value in meta.items()
             if key not in ("files", "default_model")}
    props["indvision"] = json.dumps({"bundle_format": BUNDLE_FORMAT_VERSION})
    return props


# ----------------------------------------------------------------------------- converters

def write_onnx(model: Any, spec: images.InputSpec, target: Path, opset: int,
               meta: dict[str, Any]) -> None:
    """tf2onnx ``from_keras`` with a dynamic batch; metadata in ``metadata_props``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, spec.height, spec.width, 3), tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises many types; the user needs the gist and a fix
        raise IndvisionError(f"ONNX conversion (tf2onnx, opset {opset}) failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}; try "
                             "another export.opset or drop 'onnx' from export.formats") from None
    for value in (*proto.graph.input, *proto.graph.output):
        batch_dim = value.type.tensor_type.shape.dim[0]
        if batch_dim.HasField("dim_value"):
            raise IndvisionError(f"ONNX export has a fixed batch of {batch_dim.dim_value} on "
                                 f"'{value.name}'; expected a dynamic batch")
        batch_dim.dim_param = "batch"
    onnx.helper.set_model_props(proto, onnx_metadata_props(meta))
    onnx.checker.check_model(proto)
    atomic.write_bytes(target, proto.SerializeToString())


def write_tflite(model: Any, spec: images.InputSpec, target: Path) -> None:
    """Keras' LiteRT export, float32 (int8: :func:`write_tflite_int8`)."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, spec.height, spec.width, 3), tf.float32, name=INPUT_NAME)]
    with converter_errors("TFLite float", "tflite"), atomic.atomic_path(target) as tmp:
        model.export(str(tmp), format="litert", verbose=False, input_signature=signature,
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})


@contextlib.contextmanager
def converter_errors(what: str, format_key: str) -> Iterator[None]:
    """Turn a converter's failure (it raises many types: ConverterError, ValueError…) into one
    line that says which conversion failed and how to go on without it."""
    try:
        yield
    except IndvisionError:
        raise
    except Exception as exc:
        raise IndvisionError(f"{what} conversion failed: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}; drop "
                             f"{format_key} from export.formats if this model cannot be "
                             "converted") from None


def write_tflite_int8(model: Any, target: Path, calibration: np.ndarray,
                      keep_float_above: float | None, debug_images: int) -> list[str]:
    """Integer TFLite (uint8 in/out) calibrated on ``calibration``; layers whose int8 error is
    above ``keep_float_above`` stay float. Returns the names of the layers kept float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    extremes = np.stack([np.zeros_like(calibration[0]), np.full_like(calibration[0], 255)])
    samples = np.concatenate([extremes, calibration]).astype(np.float32)
    debug = calibration[:debug_images].astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if keep_float_above is not None:  # float kernels for the layers kept float
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with converter_errors("TFLite int8", "tflite_int8"):
        if keep_float_above is None:
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(converter.convert())
            return []
        with warnings.catch_warnings():  # the debugger's own noise: tf.lite.Interpreter inside
            warnings.filterwarnings("ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated")
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([image[None]] for image in debug))
            debugger.run()
        float_layers = _badly_quantised_layers(debugger, keep_float_above)
        blob = tflite_convert.mlir_quantize(
            debugger.calibrated_model, input_data_type=tf.uint8, output_data_type=tf.uint8,
            denylisted_nodes=float_layers or None)
    atomic.write_bytes(target, blob)
    names = [name.split(";")[0] for name in float_layers]  # TFLite joins fused ops' names
    if names:
        print(f"export: int8: {len(names)} layer(s) quantise badly and stay float: "
              f"{', '.join(names)}", flush=True)
    return names


def _badly_quantised_layers(debugger: Any, limit: float) -> list[str]:
    """Layers whose int8 output RMSE, in quantisation steps, is above ``limit``."""
    import csv
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    chosen = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"])
        error = float(row["mean_squared_error"]) ** 0.5 / scale if scale > 0 else 0.0
        if error > limit:
            chosen.append(row["tensor_name"])
    return chosen


def _self_check(model: Any, path: Path, batch: np.ndarray) -> str:
    """Run the written file once through its edge runner; full parity is verify's job."""
    probs = formats.load_runner(path)(batch)
    reference = model.predict(batch.astype(np.float32), verbose=0)
    if probs.shape != reference.shape or not np.all(np.isfinite(probs)):
        raise IndvisionError(f"{path.name}: the exported file returns shape {probs.shape} "
                             f"(expected {reference.shape}) or non-finite values")
    agree = float((probs.argmax(1) == reference.argmax(1)).mean())
    return (f"check on {len(batch)} images: max |Δprob| {np.abs(probs - reference).max():.2g}, "
            f"top-1 agreement {agree:.2f}")


# ----------------------------------------------------------------------------- helpers

def _check_model(model: Any, spec: images.InputSpec, classes: list[str], path: Path) -> None:
    """The model follows the convention: (None, H, W, 3) float input, one prob per class."""
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if in_shape[1:] != (spec.height, spec.width, 3):
        raise IndvisionError(f"{path}: model input {in_shape} does not match input_spec "
                             f"{spec.height}x{spec.width}x3; re-run train")
    if out_shape[-1] != len(classes):
        raise IndvisionError(f"{path}: model has {out_shape[-1]} outputs but there are "
                             f"{len(classes)} classes; re-run train")


def _calibration_images(run: Run, spec: images.InputSpec, count: int) -> np.ndarray:
    """A seeded sample of ``count`` train-split images, loaded as the model sees them."""
    rows = rows_of(read_splits(run.artifact("ingest", "splits")), "train")
    if not rows:
        raise IndvisionError("ingest/splits.csv has no train images to calibrate with")
    rng = np.random.default_rng([run.seed, 1])
    chosen = sorted(rng.choice(len(rows), size=min(count, len(rows)), replace=False))
    return np.stack([images.load(rows[i]["path"], spec) for i in chosen])


def _remove_stale_tmp(root: Path) -> None:
    """Remove temp bundles left by an export that was killed (it never got to rename)."""
    for stale in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target`` in one step.

    A ``target`` left by an earlier, unrecorded export of this run is moved aside first, then
    removed: readers see the old folder or the new one, never a mix.
    """
    _fsync_dir(tmp)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    _fsync_dir(target.parent)
