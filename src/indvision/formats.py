"""The export formats: one table that drives export, verify, the edge runtime and the tests.

Each row says what file a format becomes in the bundle, whether it is float or int8, which
converter writes it (and which export options that converter reads), which runtimes run it (the
first is the default; the pip extra a device needs for it), and which parity gate ``verify``
holds it to in every one of its runtimes: the **float** gate (every top-1 equal, every
probability within ``float_max_abs_diff``: a conversion bug fails the run) or the **int8**
gate (accuracy may drop by at most ``int8_accuracy_budget`` points, top-1 agreement at least
``int8_min_agreement``; failing it marks the file ``"shippable": false``, which the edge then
refuses, while the run passes with its float files).

:func:`load_runner` loads a file in one of its row's runtimes (:mod:`indvision.runners`), so
the number verify reports is the number the device gets. Only numpy is imported here;
onnxruntime, OpenCV and ai_edge_litert when a runner is made, TensorFlow never.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.errors import IndvisionError, did_you_mean
from indvision.layout import MAX_MODEL_JSON_BYTES, MODEL_JSON
from indvision.layout import read_bounded as read_bounded  # re-exported: the one bounded read
from indvision.runners import MapRunner as MapRunner  # re-exported: load_map_runner's
from indvision.runners import Runner as Runner  # re-exported: what load_runner returns

RUNNERS_PACKAGE = "indvision.runners"  # a runtime name is a module in this package


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
    """One row of the export table: what export writes, how, and what runs it.

    ``converter`` is the module (in :mod:`indvision.converters`) whose ``convert`` writes the
    file; ``options`` the export Config options that converter reads (export validates those
    of the chosen formats only); ``runners`` the runtimes that run the file, each a module in
    :mod:`indvision.runners` — the first is the default, and verify holds every one of them to
    the row's gate.
    """

    key: str  # the name used in pipelines: export.formats
    filename: str  # the file in bundle/
    kind: str  # "float" or "int8"
    runners: tuple[str, ...]  # runtimes that run the file; the first is the default
    extra: str | None  # pip extra the device needs beyond the base install (default runtime)
    gate: Gate
    converter: str  # module with convert(model, target, job) -> extra model.json entry fields
    options: tuple[str, ...]  # export Config options the converter reads
    description: str

    @property
    def runtime(self) -> str:
        """The default runtime: the first of ``runners``."""
        return self.runners[0]


FORMATS: dict[str, ExportFormat] = {
    fmt.key: fmt
    for fmt in (
        ExportFormat("onnx", "model.onnx", "float", ("onnxruntime", "opencv"), None, FLOAT_GATE,
                     "indvision.converters.onnx", ("opset",),
                     "ONNX float32, dynamic batch (tf2onnx); the default on every device; "
                     "runs on onnxruntime or OpenCV's dnn"),
        ExportFormat("tflite", "model.tflite", "float", ("litert",), "litert", FLOAT_GATE,
                     "indvision.converters.tflite", (),
                     "TFLite float32 for LiteRT"),
        ExportFormat("tflite_int8", "model_int8.tflite", "int8", ("litert",), "litert",
                     INT8_GATE, "indvision.converters.tflite_int8",
                     ("calibration_images", "int8_keep_float_above", "int8_debug_images"),
                     "TFLite int8 (uint8 in/out), calibrated on train images; layers that "
                     "quantise badly stay float"),
    )
}
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys(r for f in FORMATS.values() for r in f.runners))
DEFAULT_MODEL = FORMATS["onnx"].filename
MAX_MODEL_BYTES = 2 * 2**30  # protobuf (ONNX) cannot hold more; nor can a device's memory


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

def model_json_bytes(bundle: str | Path) -> bytes:
    """``bundle/model.json``'s bytes, read once: the record checks, the signature check and
    :func:`read_model_json` all take these, so the file parsed is the file checked."""
    path = Path(bundle) / MODEL_JSON
    if not path.exists():
        raise IndvisionError(f"{path} not found: not an indvision bundle (export writes one "
                             "at <run>/bundle/)")
    return read_bounded(path, MAX_MODEL_JSON_BYTES, MODEL_JSON)


def read_model_json(bundle: str | Path, data: bytes | None = None) -> dict[str, Any]:
    """``bundle/model.json`` as a dict — parsed from ``data`` (its bytes, as checked) when
    given, else read once — with a clear error when absent or unreadable."""
    path = Path(bundle) / MODEL_JSON
    if data is None:
        data = model_json_bytes(bundle)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    missing = ([k for k in ("classes", "input_spec", "files") if k not in meta]
               if isinstance(meta, dict) else ["everything"])
    if missing:
        raise IndvisionError(f"{path}: not a bundle description (missing {missing}); re-export")
    return meta


def read_model_file(path: str | Path, entry: dict[str, Any]) -> bytes:
    """A model file's bytes, read once and checked against the sha256 ``model.json`` records
    for it: load these (``load_runner(..., data=)``), never the path again."""
    path = Path(path)
    if not path.is_file():
        raise IndvisionError(f"{path}: listed in model.json but missing from the bundle")
    data = read_bounded(path, MAX_MODEL_BYTES, "model file")
    _refuse_mismatch(path, hashlib.sha256(data).hexdigest(), entry.get("sha256"))
    return data


def _refuse_mismatch(path: Path, actual: str, expected: Any) -> None:
    if actual != expected:
        raise IndvisionError(f"{path}: sha256 {actual} does not match model.json ({expected}); "
                             "the file changed after export — restore the original bundle or "
                             "re-export")


def check_file_hash(path: str | Path, entry: dict[str, Any]) -> None:
    """Refuse a model file whose bytes differ from the sha256 ``model.json`` records for it."""
    path = Path(path)
    if not path.is_file():
        raise IndvisionError(f"{path}: listed in model.json but missing from the bundle")
    _refuse_mismatch(path, atomic.sha256_file(path), entry.get("sha256"))


# ----------------------------------------------------------------------------- runners

def load_runner(path: str | Path, threads: int | None = None, spin_wait: bool = True,
                runtime: str | None = None, data: bytes | None = None) -> Runner:
    """A callable running the model file at ``path`` (format from its name in the table),
    built from ``data`` — the file's bytes as checked (:func:`read_model_file`) — when given,
    else from the file read once: the runtime never opens the path itself.

    ``runtime`` is one of the row's ``runners`` (``None``: the first, the row's default); the
    runner is :func:`load` of module ``indvision.runners.<runtime>``. Safe to call from several
    threads at once: onnxruntime sessions are; the LiteRT interpreter and the OpenCV network are
    guarded by a lock. ``spin_wait=False`` makes onnxruntime's idle worker threads sleep instead
    of busy-waiting: slower on a dedicated CPU (bench/edge_speed.py at load 1.4: p50 1.9 → 2.9
    ms), much faster where other work shares the cores (at load 4–6: p50 15.8 → 4.0 ms).
    Results are identical either way.
    """
    path = Path(path)
    fmt = format_for_file(path.name)
    runtime = runtime or fmt.runtime
    if runtime not in fmt.runners:
        raise IndvisionError(f"{path}: runtime '{runtime}' cannot run {fmt.key} files (it runs "
                             f"on {', '.join(fmt.runners)}){did_you_mean(runtime, fmt.runners)}")
    module = importlib.import_module(f"{RUNNERS_PACKAGE}.{runtime}")
    if data is None:
        data = read_bounded(path, MAX_MODEL_BYTES, "model file")
    return module.load(data, threads, spin_wait, name=path)


def load_map_runner(path: str | Path, threads: int | None = None, spin_wait: bool = True,
                    runtime: str | None = None, data: bytes | None = None) -> MapRunner:
    """Like :func:`load_runner` (``data``: the checked bytes), for a model whose second output
    is a map: batch → (probabilities, maps). Only runtimes whose module has ``load_maps`` can."""
    path = Path(path)
    fmt = format_for_file(path.name)
    runtime = runtime or fmt.runtime
    module = importlib.import_module(f"{RUNNERS_PACKAGE}.{runtime}")
    if runtime not in fmt.runners or not hasattr(module, "load_maps"):
        able = [r for r in fmt.runners
                if hasattr(importlib.import_module(f"{RUNNERS_PACKAGE}.{r}"), "load_maps")]
        raise IndvisionError(f"{path}: runtime '{runtime}' cannot compute maps for "
                             f"{fmt.key} files; use {', '.join(able) or 'model.onnx'}")
    if data is None:
        data = read_bounded(path, MAX_MODEL_BYTES, "model file")
    return module.load_maps(data, threads, spin_wait, name=path)
