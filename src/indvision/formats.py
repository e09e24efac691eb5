"""The export formats: one table that drives export, verify, the edge runtime and the tests.

Each row says what file a format becomes in the bundle, whether it is float or int8, which
runtime runs it (and which pip extra a device needs for it), and which parity gate ``verify``
holds it to:

- **float** gate — the file must reproduce the Keras model: every top-1 equal and every
  probability within ``float_max_abs_diff`` (1e-4). A conversion bug is a bug, so failing it
  fails the run.
- **int8** gate — quantisation is allowed to cost a little: accuracy may drop by at most
  ``int8_accuracy_budget`` points and top-1 agreement must stay at or above
  ``int8_min_agreement``. Failing it marks the file ``"shippable": false`` in ``model.json``
  (the edge runtime then refuses it); the run still passes with its float files.

It also holds one small runner per runtime (:func:`load_runner`): numpy in, probabilities out,
int8 (de)quantisation handled. Export's self-check, verify and :mod:`indvision.edge` all run
models through these, so the number verify reports is the number the device gets. Only numpy
is imported here; onnxruntime and ai_edge_litert are imported when a runner is made, and
TensorFlow never.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic
from indvision.errors import IndvisionError, did_you_mean

#: A loaded model: a batch ``N x H x W x 3`` (uint8 or float32, values 0..255) → ``N x C``
#: float32 probabilities.
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Gate:
    """A parity gate: what ``verify`` checks and what failing it means."""

    name: str
    fails_run: bool  # True: the run fails; False: the file is marked not shippable
    rule: str


FLOAT_GATE = Gate("float", fails_run=True,
                  rule="100 % top-1 agreement with Keras and max |Δprob| <= float_max_abs_diff")
INT8_GATE = Gate("int8", fails_run=False,
                 rule="accuracy drop <= int8_accuracy_budget points and top-1 agreement >= "
                      "int8_min_agreement (with grouped views: of the objects' decisions)")


@dataclass(frozen=True)
class ExportFormat:
    """One row of the export table."""

    key: str  # the name used in pipelines: export.formats
    filename: str  # the file in bundle/
    kind: str  # "float" or "int8"
    runtime: str  # "onnxruntime" or "litert"
    extra: str | None  # pip extra the device needs beyond the base install
    gate: Gate
    description: str


FORMATS: dict[str, ExportFormat] = {
    fmt.key: fmt
    for fmt in (
        ExportFormat("onnx", "model.onnx", "float", "onnxruntime", None, FLOAT_GATE,
                     "ONNX float32, dynamic batch (tf2onnx); the default on every device"),
        ExportFormat("tflite", "model.tflite", "float", "litert", "litert", FLOAT_GATE,
                     "TFLite float32 for LiteRT"),
        ExportFormat("tflite_int8", "model_int8.tflite", "int8", "litert", "litert", INT8_GATE,
                     "TFLite int8 (uint8 in/out), calibrated on train images; layers that "
                     "quantise badly stay float"),
    )
}
DEFAULT_MODEL = FORMATS["onnx"].filename
MODEL_JSON = "model.json"


@dataclass(frozen=True)
class GateLimits:
    """The numbers the gates compare against (verify's config sets them)."""

    float_max_abs_diff: float = 1e-4
    int8_accuracy_budget: float = 0.5  # accuracy points (percent) int8 may lose
    int8_min_agreement: float = 0.99


def get_format(key: str) -> ExportFormat:
    """The table row for ``key``; an unknown key raises with a "did you mean"."""
    try:
        return FORMATS[key]
    except KeyError:
        raise IndvisionError(f"unknown export format '{key}'{did_you_mean(key, FORMATS)}") from None


def format_for_file(filename: str) -> ExportFormat:
    """The table row whose bundle file is ``filename`` (a bare name such as ``model.onnx``)."""
    for fmt in FORMATS.values():
        if fmt.filename == filename:
            return fmt
    names = [f.filename for f in FORMATS.values()]
    raise IndvisionError(f"'{filename}' is not a known model file{did_you_mean(filename, names)}")


def gate_failures(fmt: ExportFormat, parity: dict[str, Any], limits: GateLimits) -> list[str]:
    """Why ``parity`` (verify's numbers for one file) fails ``fmt``'s gate; empty when it passes.

    ``parity`` needs ``agreement`` (0..1), ``max_abs_diff`` and ``accuracy_drop_points``
    (Keras accuracy minus this file's, in percentage points); ``unit`` ("object" when verify
    judges an int8 file on grouped views' fused decisions) only changes the wording.
    """
    agreement = ("top-1 agreement" if parity.get("unit", "image") == "image"
                 else f"{parity['unit']} decision agreement")
    drop = ("accuracy drop" if parity.get("unit", "image") == "image"
            else f"{parity['unit']} accuracy drop")
    failures = []
    if fmt.gate is FLOAT_GATE:
        if parity["agreement"] < 1.0:
            failures.append(f"top-1 agreement {parity['agreement']:.4f} < 1.0")
        if parity["max_abs_diff"] > limits.float_max_abs_diff:
            failures.append(f"max |Δprob| {parity['max_abs_diff']:.3g} > "
                            f"{limits.float_max_abs_diff:g}")
    elif fmt.gate is INT8_GATE:
        if parity["accuracy_drop_points"] > limits.int8_accuracy_budget + 1e-9:
            failures.append(f"{drop} {parity['accuracy_drop_points']:.2f} points > "
                            f"budget {limits.int8_accuracy_budget:g}")
        if parity["agreement"] < limits.int8_min_agreement:
            failures.append(f"{agreement} {parity['agreement']:.4f} < "
                            f"{limits.int8_min_agreement:g}")
    else:  # pragma: no cover - a new gate must be handled here
        raise ValueError(f"no rule for gate {fmt.gate.name}")
    return failures


# ----------------------------------------------------------------------------- bundle files

def read_model_json(bundle: str | Path) -> dict[str, Any]:
    """``bundle/model.json`` as a dict, with a clear error when absent or unreadable."""
    path = Path(bundle) / MODEL_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndvisionError(f"{path} not found: not an indvision bundle (export writes one "
                             "at <run>/bundle/)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    missing = ([k for k in ("classes", "input_spec", "files") if k not in meta]
               if isinstance(meta, dict) else ["everything"])
    if missing:
        raise IndvisionError(f"{path}: not a bundle description (missing {missing}); re-export")
    return meta


def check_file_hash(path: str | Path, entry: dict[str, Any]) -> None:
    """Refuse a model file whose bytes differ from the sha256 ``model.json`` records for it."""
    path = Path(path)
    if not path.is_file():
        raise IndvisionError(f"{path}: listed in model.json but missing from the bundle")
    actual = atomic.sha256_file(path)
    expected = entry.get("sha256")
    if actual != expected:
        raise IndvisionError(f"{path}: sha256 {actual} does not match model.json ({expected}); "
                             "the file changed after export — restore the original bundle or "
                             "re-export")


# ----------------------------------------------------------------------------- runners

def load_runner(path: str | Path, threads: int | None = None, spin_wait: bool = True) -> Runner:
    """A callable running the model file at ``path`` (format from its name in the table).

    Safe to call from several threads at once: onnxruntime sessions are; the TFLite
    interpreter is guarded by a lock. ``spin_wait=False`` makes onnxruntime's idle worker
    threads sleep instead of busy-waiting: slower on a dedicated CPU (bench/edge_speed.py at
    load 1.4: p50 1.9 → 2.9 ms), much faster where other work shares the cores (at load 4–6:
    p50 15.8 → 4.0 ms). Results are identical either way.
    """
    path = Path(path)
    if not path.is_file():
        raise IndvisionError(f"{path}: model file not found")
    fmt = format_for_file(path.name)
    if fmt.runtime == "onnxruntime":
        return _onnx_runner(path, threads, spin_wait)
    if fmt.runtime == "litert":
        return _litert_runner(path, threads)
    raise ValueError(f"no runner for runtime {fmt.runtime}")  # pragma: no cover


def _as_batch(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a batch N x H x W x 3, got shape {batch.shape}")
    return batch


def _onnx_runner(path: Path, threads: int | None, spin_wait: bool = True) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin_wait:  # see load_runner: for CPUs shared with other work
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise IndvisionError(f"{path}: onnxruntime cannot load it ({exc})") from None
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        batch = _as_batch(batch).astype(np.float32, copy=False)
        return session.run(None, {input_name: batch})[0].astype(np.float32, copy=False)

    return run


def _litert_runner(path: Path, threads: int | None) -> Runner:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise IndvisionError(f"{path}: running .tflite files needs ai-edge-litert; "
                             "pip install 'indvision[litert]' (or use model.onnx)") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise IndvisionError(f"{path}: LiteRT cannot load it ({exc})") from None
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    in_dtype = np.dtype(input_detail["dtype"])
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    lock = threading.Lock()

    def quantize(image: np.ndarray) -> np.ndarray:
        if in_dtype == np.float32:
            return image.astype(np.float32, copy=False)
        if in_scale == 1.0 and in_zero == 0 and in_dtype == np.uint8 and image.dtype == np.uint8:
            return image  # uint8 pixels are already the quantised input
        info = np.iinfo(in_dtype)
        q = np.round(image.astype(np.float32) / in_scale + in_zero)
        return np.clip(q, info.min, info.max).astype(in_dtype)

    def dequantize(values: np.ndarray) -> np.ndarray:
        if out_scale == 0.0:  # a float output
            return values.astype(np.float32, copy=False)
        return ((values.astype(np.float32) - out_zero) * out_scale).astype(np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        batch = _as_batch(batch)
        outputs = []
        with lock:  # one interpreter, one set of tensors: a call at a time
            # one image per invoke: works for files exported with a fixed batch of 1 too
            for image in batch:
                interpreter.set_tensor(input_detail["index"], quantize(image[None]))
                interpreter.invoke()
                outputs.append(dequantize(interpreter.get_tensor(output_detail["index"])[0]))
        if not outputs:
            return np.zeros((0, int(output_detail["shape"][-1])), dtype=np.float32)
        return np.stack(outputs)

    return run
