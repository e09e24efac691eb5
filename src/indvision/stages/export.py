"""Export: the trained Keras model → a self-describing bundle for the device.

Writes ``<run>/bundle/``: one file per format of :data:`indvision.formats.FORMATS` chosen in
``formats``, each written by the converter its row names (:mod:`indvision.converters`), and
``model.json``, which says everything a device needs and an auditor asks: ``classes``,
``input_spec``, ``decision`` (the run's decision record), ``metrics`` (evaluate's test numbers),
``provenance`` (hashes, git commit, versions), ``lineage`` (a child's parent) and ``files``
(each file's format, runtimes, gate, sha256 and size; verify adds its verdicts). The model is
loaded from one read checked against the manifest (:mod:`indvision.checked_model`).

The bundle is built in ``<run>/.bundle.tmp-<random>/`` (``mkdtemp``) and renamed to
``bundle/`` in one step, ``model.json`` written last: a killed export leaves no ``bundle/``,
never half of one. Export also keeps what a child run needs in ``<run>/keep/``
(:mod:`indvision.lineage`) and, with a key, signs ``model.json`` (:mod:`indvision.signing`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, checked_model, decision, formats, images, lineage, signing
from indvision.config import config_to_dict
from indvision.console import say
from indvision.converters import BUNDLE_FORMAT_VERSION, ConvertJob
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError, did_you_mean
from indvision.layout import BUNDLE, MODEL_JSON
from indvision.rundir import Run, library_versions

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TMP_PREFIX = ".bundle.tmp-"
MAX_OPSET = 18  # tf2onnx 1.17 refuses opset 19 and above


@dataclass(frozen=True)
class Config:
    """Which formats to export and how."""

    formats: tuple[str, ...] = ("onnx", "tflite", "tflite_int8")
    calibration_images: int = 200  # train images used to calibrate int8 ranges
    opset: int = 17  # ONNX opset (13..18)
    int8_keep_float_above: float | None = 0.7  # int8 layers with a larger error stay float
    int8_debug_images: int = 8  # calibration images the int8 layer errors are measured on
    # What a child run (--from this run) needs once the original --data is gone, copied into
    # <run>/keep/ (indvision.lineage): up to this many training and as many validation images
    # per class for replay (0: keep nothing, no child can start from this run) ...
    keep_per_class: int = 50
    keep_test_max: int = 2000  # ... and the test split, sampled per class above this many
    # An Ed25519 private key (python -m indvision.edge keygen DIR) that signs the bundle's
    # model.json; null: INDVISION_SIGNING_KEY if set, else unsigned. Verify signs again with
    # it after recording its verdicts (indvision.signing; devices check with --trust).
    signing_key: str | None = None

    def __post_init__(self) -> None:
        if self.keep_per_class < 0 or self.keep_test_max < 1:
            raise ValueError("keep_per_class must be >= 0 and keep_test_max >= 1")
        if not self.formats:
            raise ValueError(f"formats is empty; choose from {', '.join(formats.FORMATS)}")
        for key in self.formats:
            if key not in formats.FORMATS:
                raise ValueError(f"unknown format '{key}'{did_you_mean(key, formats.FORMATS)}")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats lists a format twice: {list(self.formats)}")
        for option in options_read(self.formats):
            valid, message = OPTION_CHECKS[option]
            value = getattr(self, option)
            if not valid(value):
                raise ValueError(message.format(value=value))


#: The checks of every format-specific option (a row's ``options``): valid(value) and the
#: message when not. Config checks those the chosen formats read, and only those: an int8
#: setting does not stop an ONNX-only export.
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "opset": (lambda v: 13 <= v <= MAX_OPSET,
              f"opset must be 13..{MAX_OPSET} (tf2onnx 1.17 supports up to {MAX_OPSET}), "
              "got {value}"),
    "calibration_images": (lambda v: v >= 1, "calibration_images must be >= 1, got {value}"),
    "int8_keep_float_above": (lambda v: v is None or v > 0,
                              "int8_keep_float_above must be > 0 (RMSE in quantisation steps; "
                              "0.7 is usual) or null, got {value}"),
    "int8_debug_images": (lambda v: v >= 1, "int8_debug_images must be >= 1, got {value}"),
}


def options_read(keys: tuple[str, ...]) -> list[str]:
    """The export options the rows of ``keys`` read (their ``options``), each once, in order."""
    return list(dict.fromkeys(o for key in keys for o in formats.FORMATS[key].options))


def _check_option_table() -> None:
    """Every option a row declares is a Config field with a check (a new row's typo fails here,
    at import, not halfway through an export)."""
    names = {f.name for f in fields(Config)}
    for option in options_read(tuple(formats.FORMATS)):
        if option not in names or option not in OPTION_CHECKS:
            raise RuntimeError(f"export option '{option}' in the format table has no Config "
                               "field or no check in OPTION_CHECKS")


_check_option_table()


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Convert the trained model to every configured format and publish ``bundle/``."""
    spec = images.InputSpec.from_dict(
        atomic.read_json(run_dir.artifact(run_dir.model_stage, "input_spec")))
    classes = atomic.read_json(run_dir.artifact("ingest", "classes"))
    ingest_report = atomic.read_json(run_dir.artifact("ingest", "report"))
    evaluation = (atomic.read_json(run_dir.artifact("evaluate", "metrics"))
                  if run_dir.has_artifact("evaluate", "metrics") else None)
    if evaluation is not None and list(evaluation.get("classes", classes)) != list(classes):
        raise IndvisionError(f"evaluate/metrics.json classes {evaluation.get('classes')} differ "
                             f"from ingest/classes.json {classes}; re-run evaluate")

    from indvision import cam

    # one read of model.keras, checked against the manifest and the input spec, then loaded
    model = checked_model.load_recorded(run_dir, run_dir.model_stage, "model", spec, len(classes))
    model, no_map = cam.with_heatmap_if_possible(model)
    if no_map:
        say(f"export: no map output: {no_map}")
    key_path = signing_key_path(config)
    if key_path is not None:
        signing.load_private_key(key_path)  # a bad key fails before the conversions
    needs_calibration = any("calibration_images" in formats.FORMATS[k].options
                            for k in config.formats)
    calibration = (_calibration_images(run_dir, spec, config.calibration_images)
                   if needs_calibration else None)

    meta = model_metadata(run_dir, spec, classes, ingest_report, evaluation, config)
    meta.update(_model_kind(run_dir, model))
    model_entry = run_dir.output(run_dir.model_stage, "model")  # the sha256 the load matched
    meta["provenance"]["keras_model_sha256"] = model_entry["sha256"]
    job = ConvertJob(spec=spec, config=config, meta=meta, calibration=calibration)
    bundle = _build_bundle(run_dir, model, job, key_path)
    say(f"export: bundle ready at {bundle}")
    outputs = {"bundle": bundle}
    if key_path is not None:  # a fact for verify, which rewrites model.json and signs again
        outputs["signing"] = atomic.write_json(run_dir.stage_dir("export") / "signing.json",
                                               {"key": str(key_path)})
    if config.keep_per_class:
        outputs["keep"] = lineage.write_keep(run_dir, config.keep_per_class, config.keep_test_max)
        say(f"export: kept replay and test images for child runs in {outputs['keep']}")
    return outputs


def _build_bundle(run: Run, model: Any, job: ConvertJob, key_path: Path | None) -> Path:
    """Convert ``model`` into a fresh temporary folder, each file self-checked, write (and
    sign) ``model.json`` last, then publish the folder as ``<run>/bundle/`` in one rename."""
    check_batch = (job.calibration[:4] if job.calibration is not None
                   else _calibration_images(run, job.spec, 4))
    bundle = run.root / BUNDLE
    _remove_stale_tmp(run.root)
    tmp = Path(tempfile.mkdtemp(dir=run.root, prefix=TMP_PREFIX))  # random, O_EXCL-like
    os.chmod(tmp, folder_mode())  # mkdtemp's 0700 would hide the bundle from its readers
    try:
        files = {}
        for key in job.config.formats:
            fmt = formats.FORMATS[key]
            files[fmt.filename] = _convert(model, tmp / fmt.filename, fmt, job, check_batch)
        default = (formats.DEFAULT_MODEL if formats.DEFAULT_MODEL in files else next(iter(files)))
        atomic.write_json(tmp / MODEL_JSON, {**job.meta, "default_model": default,
                                             "files": files})
        if key_path is not None:
            signed = signing.sign_bundle(tmp, key_path, signer="export")
            say(f"export: model.json signed with key {signed['key_id']}")
        publish_dir(tmp, bundle)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle


def _convert(model: Any, target: Path, fmt: formats.ExportFormat, job: ConvertJob,
             check_batch: np.ndarray) -> dict[str, Any]:
    """Write ``target`` with the row's converter, run it once, and return its ``files``
    entry for ``model.json``."""
    started = time.perf_counter()
    say(f"export: {fmt.filename} ({fmt.description}) ...")
    extra_fields = importlib.import_module(fmt.converter).convert(model, target, job)
    note = _self_check(model, target, check_batch)
    seconds = time.perf_counter() - started
    say(f"export: {fmt.filename}: {target.stat().st_size / 1e6:.2f} MB in "
          f"{seconds:.1f} s; {note}")
    return {"format": fmt.key, "kind": fmt.kind, "runtime": fmt.runtime,
            "runners": list(fmt.runners), "extra": fmt.extra, "gate": fmt.gate.name,
            "sha256": atomic.sha256_file(target), "bytes": target.stat().st_size,
            "verified": False, **extra_fields}


def signing_key_path(config: Config) -> Path | None:
    """The private key that signs the bundle: ``signing_key``, else ``INDVISION_SIGNING_KEY``,
    else None (unsigned)."""
    value = config.signing_key or os.environ.get(signing.SIGNING_KEY_ENV)
    return Path(value).expanduser().resolve() if value else None


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
        "lineage": _lineage(run),
    }


def _model_kind(run: Run, model: Any) -> dict[str, Any]:
    """``model_kind`` (``classifier`` or ``anomaly``), ``map`` (the model's second output:
    its kind and grid) and, for an anomaly model, what fit recorded: the raw threshold and the
    rule that chose it, both rules' answers and the bank."""
    if len(model.outputs) < 2:
        return {"model_kind": "classifier", "map": None}
    grid = [int(d) for d in model.outputs[1].shape[1:3]]
    if run.model_stage != "fit":
        return {"model_kind": "classifier", "map": {
            "kind": "class_activation", "grid": grid,
            "values": "each patch's probability of each class (the head on that patch "
                      "alone); the edge shows the decided class's"}}
    fit = atomic.read_json(run.artifact("fit", "report"))
    return {"model_kind": "anomaly",
            "map": {"kind": "anomaly", "grid": grid,
                    "values": "each patch's anomaly score, normalised: 0.5 at the threshold; "
                              "the outer `border` patches 0, not judged",
                    "border": fit.get("border", 0)},
            "anomaly": {"threshold": fit["threshold"], "bank_size": fit["bank_size"],
                        "feature_layers": fit["feature_layers"], "dims": fit["dims"]}}


def _lineage(run: Run) -> dict[str, Any] | None:
    """A child's parent, as ``model.json`` records it (``edge info`` follows the chain);
    None for a run trained from its backbone's weights."""
    if not run.has_artifact("ingest", "parent"):
        return None
    parent = atomic.read_json(run.artifact("ingest", "parent"))
    return {"parent_run": parent["run_id"], "parent_pipeline": parent["pipeline"],
            "parent_model_json_sha256": parent["model_json_sha256"],
            "classes_added": parent["classes_added"],
            "replay_size": parent["replayed"]["train"] + parent["replayed"]["val"]}


# ----------------------------------------------------------------------------- checks

def _self_check(model: Any, path: Path, batch: np.ndarray) -> str:
    """Run the written file once through its edge runner; full parity is verify's job."""
    probs = formats.load_runner(path)(batch)
    reference = model.predict(batch.astype(np.float32), verbose=0)
    if isinstance(reference, (list, tuple)):  # an anomaly model: probabilities, then the map
        reference = reference[0]
    if probs.shape != reference.shape or not np.all(np.isfinite(probs)):
        raise IndvisionError(f"{path.name}: the exported file returns shape {probs.shape} "
                             f"(expected {reference.shape}) or non-finite values")
    agree = float((probs.argmax(1) == reference.argmax(1)).mean())
    return (f"check on {len(batch)} images: max |Δprob| {np.abs(probs - reference).max():.2g}, "
            f"top-1 agreement {agree:.2f}")


# ----------------------------------------------------------------------------- helpers

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
        if stale.is_symlink() or not stale.is_dir():
            stale.unlink(missing_ok=True)  # a planted link is removed, never followed
        else:
            shutil.rmtree(stale, ignore_errors=True)


def folder_mode() -> int:
    """What ``mkdir`` would give a new folder: 0o777 less the umask."""
    files = atomic._default_mode()  # 0o666 less the umask, read without changing it
    return files | (files & 0o444) >> 2


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

    A ``target`` left by an earlier, unrecorded export of this run is moved aside first (onto
    a fresh, randomly named empty folder, so nothing planted beside it is renamed over), then
    removed: readers see the old folder or the new one, never a mix.
    """
    _fsync_dir(tmp)
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    _fsync_dir(target.parent)
