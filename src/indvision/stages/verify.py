"""Verify: every exported file, run as the device runs it, against the Keras model it came from.

Each model file of ``bundle/model.json`` (its sha256 checked first) runs the whole test split in
every runtime its format row lists (:func:`indvision.formats.load_runner`), and Keras runs it
too (:mod:`indvision.evaluation.scoring`): top-1 agreement, |Δprob|, accuracy and its drop,
the same for thresholded decisions, per object where the bundle groups views. Each file then
meets its row's gate: a float file that fails fails the run (``latest.json`` stays); an int8
file that fails is marked ``"shippable": false`` with the reason (judged on objects where
views are grouped). ``model.json`` is rewritten atomically with the verdicts; its new sha256
goes into ``verify/parity.json``, the manifest, ``latest.json`` and a ``model.json.sha256``
sidecar, and a hash that differs from those records is refused. A passing run points
``exports/<pipeline>/latest.json`` at its bundle, unless it is a child that failed
evaluate's promotion gate (:mod:`indvision.promotion`) or a cross-validation fold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import (
    atomic,
    checked_model,
    decision,
    folds,
    formats,
    images,
    metrics,
    promotion,
    signing,
)
from indvision.console import say
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.evaluation import scoring
from indvision.layout import LATEST, MANIFEST, MODEL_JSON
from indvision.rundir import Run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

@dataclass(frozen=True)
class Config:
    """The parity gates' limits (which gate applies to which file is in the format table)."""

    int8_accuracy_budget: float = 0.5  # accuracy points int8 may lose against Keras
    int8_min_agreement: float = 0.99  # share of test images with the same top-1 as Keras
    float_max_abs_diff: float = 1e-4  # largest |Δprob| a float file may show
    # Largest |Δ| of a float file's maps (0-1 values drawn on an 8-bit colour scale: one colour
    # step is 1/255 = 0.0039, so 1e-3 is a quarter of one). Looser than the scores' limit: a
    # class-activation map is a softmax per patch, not averaged over the image like the score,
    # and the casting model's TFLite maps differed by 1.1e-4 with scores within 2e-6.
    map_max_abs_diff: float = 1e-3
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.int8_accuracy_budget < 0:
            raise ValueError(f"int8_accuracy_budget must be >= 0, got {self.int8_accuracy_budget}")
        if self.int8_min_agreement < 0:
            raise ValueError(f"int8_min_agreement must be >= 0, got {self.int8_min_agreement}")
        if self.float_max_abs_diff < 0:
            raise ValueError(f"float_max_abs_diff must be >= 0, got {self.float_max_abs_diff}")
        if self.map_max_abs_diff < 0:
            raise ValueError(f"map_max_abs_diff must be >= 0, got {self.map_max_abs_diff}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def limits(self) -> formats.GateLimits:
        return formats.GateLimits(float_max_abs_diff=self.float_max_abs_diff,
                                  int8_accuracy_budget=self.int8_accuracy_budget,
                                  int8_min_agreement=self.int8_min_agreement)


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Compare every bundle file with Keras on the test split; gate; update model.json."""
    bundle, bundle_meta = _checked_bundle(run_dir)
    files = bundle_meta["files"]
    classes = list(bundle_meta["classes"])
    spec = images.InputSpec.from_dict(bundle_meta["input_spec"])
    record = decision.Decision.from_dict(bundle_meta.get("decision") or {}, classes)
    rows, labels = _test_rows(run_dir, bundle_meta, record)
    groups = record.groups_of(rows)
    say(f"verify: {len(rows)} test images"
          + (f" of {len(set(groups))} objects" if groups else "")
          + f", {len(files)} model files")
    batch = np.stack([images.load(r["path"], spec) for r in rows])

    keras_probs, keras_maps = _keras_outputs(run_dir, spec, len(classes), batch, config.batch_size)
    keras_decisions = record.decide(keras_probs)
    limits = config.limits()
    report: dict[str, Any] = {
        "n_test": len(rows),
        "classes": classes,
        "good_class": record.good_class,
        "threshold": record.threshold,
        "limits": {"float_max_abs_diff": limits.float_max_abs_diff,
                   "float_min_agreement": 1.0,
                   "int8_accuracy_budget": limits.int8_accuracy_budget,
                   "int8_min_agreement": limits.int8_min_agreement},
        "keras": {"accuracy": _accuracy(keras_probs.argmax(1), labels),
                  "decision_accuracy": _accuracy(keras_decisions, labels)},
        "formats": {},
    }
    reference = Reference(batch, keras_probs, labels, record.good_index, record.threshold,
                          groups)
    run_failures = []
    for name, entry in files.items():
        fmt = formats.FORMATS[entry["format"]]
        parity = verify_file(bundle / name, fmt, entry, reference, config)
        if keras_maps is not None:
            parity["maps"] = verify_maps(bundle / name, fmt, entry, parity, batch, keras_maps,
                                         config)
        report["formats"][fmt.key] = parity
        if not parity["shippable"] and fmt.gate.fails_run:
            run_failures.append(f"{name}: {'; '.join(parity['failures'])}")

    report.update(passed=not run_failures,
                  model_json_sha256=_rewrite_model_json(run_dir, bundle / MODEL_JSON, bundle_meta),
                  shippable=[n for n, e in files.items() if e["shippable"]], created=_now())
    parity_path = atomic.write_json(run_dir.stage_dir("verify") / "parity.json", report)
    if run_failures:
        raise IndvisionError(f"parity gate failed for {'; '.join(run_failures)} — the export "
                             f"does not reproduce the Keras model; latest.json left unchanged "
                             f"(details in {parity_path})")
    _sign_again(run_dir, bundle)  # only once every gate passed: a signature vouches for verdicts
    _release(run_dir, bundle, bundle_meta, report, keras_decisions, labels)
    return {"parity": parity_path}


def _checked_bundle(run: Run) -> tuple[Path, dict[str, Any]]:
    """Export's bundle and its ``model.json``, each file checked against its record before any
    heavy work (a hand-edited model.json or a changed model file stops here)."""
    bundle = run.artifact("export", "bundle")
    model_json_path = bundle / MODEL_JSON
    check_model_json_record(run, model_json_path)
    bundle_meta = formats.read_model_json(bundle)
    files = bundle_meta.get("files") or {}
    if not files:
        raise IndvisionError(f"{model_json_path}: lists no model files; re-run export")
    for name, entry in files.items():
        formats.get_format(str(entry.get("format")))  # a hand-edited entry fails clearly
        formats.check_file_hash(bundle / name, entry)
    return bundle, bundle_meta


def _test_rows(run: Run, bundle_meta: dict[str, Any], record: decision.Decision
               ) -> tuple[list[dict[str, str]], np.ndarray]:
    """The test split's rows and their class indices in the bundle's classes (an anomaly
    bundle's defect folders are all its ``anomaly`` class)."""
    classes = list(record.classes)
    rows = rows_of(read_splits(run.artifact("ingest", "splits")), "test")
    if not rows:
        raise IndvisionError("ingest/splits.csv has no test images to verify on")
    if bundle_meta.get("model_kind") == "anomaly":
        rows = [{**r, "label": r["label"] if r["label"] == record.good_class else classes[1]}
                for r in rows]
    unknown = sorted({r["label"] for r in rows} - set(classes))
    if unknown:
        raise IndvisionError(f"test labels {unknown} are not classes of the bundle {classes}")
    return rows, np.array([classes.index(r["label"]) for r in rows])


def _rewrite_model_json(run: Run, path: Path, bundle_meta: dict[str, Any]) -> str:
    """Rewrite ``model.json`` with the verdicts, its sidecar beside it, the manifest's record
    kept true at every step; returns its new sha256."""
    text = json.dumps(bundle_meta, indent=2, default=str) + "\n"
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _record_pending_rewrite(run, path, sha256)  # a kill from here on...
    atomic.write_text(path, text)  # ...leaves a model.json a resumed verify accepts
    sidecar = atomic.write_sha256_sidecar(path)  # travels with a copied bundle
    _record_rewritten_file(run, path, sha256)
    _record_rewritten_file(run, sidecar, atomic.sha256_file(sidecar))
    return sha256


def _release(run: Run, bundle: Path, bundle_meta: dict[str, Any], report: dict[str, Any],
             keras_decisions: np.ndarray, labels: np.ndarray) -> None:
    """Point ``latest.json`` at the bundle, unless the run is a child that regressed or a
    cross-validation fold (each said on the console)."""
    refused = promotion.refusal(run)
    fold = folds.fold_of(run)
    if refused:  # a child that regressed: verified, but latest.json stays on the parent
        say(f"verify: {refused}")
    elif fold:  # cross-validation measures the recipe; it releases nothing
        say(f"verify: fold {fold[0] + 1} of {fold[1]} (cross-validation): latest.json left "
            "as it was")
    else:
        write_latest(run, bundle, bundle_meta, report, keras_decisions, labels)


# ----------------------------------------------------------------------------- one file

@dataclass(frozen=True)
class Reference:
    """What every file is compared with: the test images and Keras' answers on them."""

    batch: np.ndarray  # test images, N x H x W x 3 uint8
    keras_probs: np.ndarray
    labels: np.ndarray
    good_index: int | None
    threshold: float | None
    groups: list[str] | None  # object of each image, when the bundle decides per object


def verify_file(path: Path, fmt: formats.ExportFormat, entry: dict[str, Any],
                reference: Reference, config: Config) -> dict[str, Any]:
    """Run the file at ``path`` in every runtime of its row, hold each to the row's gate and
    update its ``model.json`` ``entry``; returns its parity numbers.

    The numbers at the top are the default runtime's (what the device runs unless told
    otherwise); ``runtimes`` holds each runtime's numbers and verdict. The file is shippable
    only when every runtime passes: its failures are the failing runtimes', each named unless
    it is the default.
    """
    started = time.perf_counter()
    runtimes = {runtime: _verify_runtime(path, fmt, runtime, reference, config)
                for runtime in fmt.runners}
    parity = dict(runtimes[fmt.runtime])
    failures = [failure if runtime == fmt.runtime else f"{runtime}: {failure}"
                for runtime, numbers in runtimes.items() for failure in numbers["failures"]]
    shippable = not failures
    parity.update(file=path.name, kind=fmt.kind, sha256=entry["sha256"], gate=fmt.gate.name,
                  gate_rule=fmt.gate.rule, passed=shippable, failures=failures,
                  shippable=shippable, seconds=round(time.perf_counter() - started, 2),
                  runtimes=runtimes)
    entry.update(verified=True, shippable=shippable, runners=list(fmt.runners),
                 parity={k: parity[k] for k in ("agreement", "max_abs_diff", "accuracy",
                                                "accuracy_drop_points")})
    if shippable:
        entry.pop("reason", None)
    else:
        entry["reason"] = f"{fmt.gate.name} gate failed: {'; '.join(failures)}"
    return parity


def _verify_runtime(path: Path, fmt: formats.ExportFormat, runtime: str, reference: Reference,
                    config: Config) -> dict[str, Any]:
    """One runtime's parity numbers for one file, judged by the file's gate (and printed)."""
    started = time.perf_counter()
    groups = reference.groups
    runner = formats.load_runner(path, runtime=runtime)
    probs = _run_in_batches(runner, reference.batch, config.batch_size)
    parity = compare(probs, reference.keras_probs, reference.labels, reference.good_index,
                     reference.threshold, groups)
    judged = parity
    if groups and fmt.kind == "int8":  # the device reports objects: judge those
        judged = {**parity, **{k: parity["objects"][k] for k in
                               ("agreement", "accuracy_drop_points")}, "unit": "object"}
    failures = formats.gate_failures(fmt, judged, config.limits())
    parity.update(runtime=runtime, passed=not failures, failures=failures,
                  seconds=round(time.perf_counter() - started, 2))
    verdict = "ok" if not failures else ("FAILED" if fmt.gate.fails_run else "not shippable")
    say(f"verify: {path.name} on {runtime}: top-1 agreement {parity['agreement']:.4f}, max "
          f"|Δprob| {parity['max_abs_diff']:.2g}, accuracy {parity['accuracy']:.4f} "
          f"(Keras {parity['keras_accuracy']:.4f})"
          + (f"; per object: decision agreement {parity['objects']['agreement']:.4f}, "
             f"accuracy {parity['objects']['accuracy']:.4f} "
             f"(Keras {parity['objects']['keras_accuracy']:.4f})" if groups else "")
          + f" → {verdict}"
          + (f" ({'; '.join(failures)})" if failures else ""))
    return parity


# ----------------------------------------------------------------------------- comparisons

def compare(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray,
            good_index: int | None, threshold: float | None,
            groups: list[str] | None = None) -> dict[str, Any]:
    """Parity numbers of one file's probabilities against Keras' on the same images; with
    ``groups``, also of the objects' fused decisions (``objects``)."""
    top1, keras_top1 = probs.argmax(1), keras_probs.argmax(1)
    decisions = metrics.decide(probs, good_index, threshold)
    keras_decisions = metrics.decide(keras_probs, good_index, threshold)
    diff = np.abs(probs.astype(np.float64) - keras_probs.astype(np.float64))
    accuracy, keras_accuracy = _accuracy(top1, labels), _accuracy(keras_top1, labels)
    return {
        "agreement": float((top1 == keras_top1).mean()),
        "disagreements": int((top1 != keras_top1).sum()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "accuracy": accuracy,
        "keras_accuracy": keras_accuracy,
        "accuracy_drop_points": round((keras_accuracy - accuracy) * 100, 6),
        "decision_agreement": float((decisions == keras_decisions).mean()),
        "decision_accuracy": _accuracy(decisions, labels),
        "keras_decision_accuracy": _accuracy(keras_decisions, labels),
    } | ({"objects": _compare_objects(probs, keras_probs, labels, good_index, threshold,
                                      groups)} if groups else {})


def _compare_objects(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray,
                     good_index: int | None, threshold: float | None,
                     groups: list[str]) -> dict[str, Any]:
    """Fused per-object decisions of a file against Keras' (as evaluate and the edge decide)."""
    truth, decisions = metrics.decide_groups(probs, labels, groups, good_index, threshold)
    _, keras_decisions = metrics.decide_groups(keras_probs, labels, groups, good_index, threshold)
    accuracy, keras_accuracy = _accuracy(decisions, truth), _accuracy(keras_decisions, truth)
    return {"n": len(truth), "agreement": float((decisions == keras_decisions).mean()),
            "disagreements": int((decisions != keras_decisions).sum()),
            "accuracy": accuracy, "keras_accuracy": keras_accuracy,
            "accuracy_drop_points": round((keras_accuracy - accuracy) * 100, 6)}


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(predicted) == labels).mean()) if len(labels) else 0.0


def _keras_outputs(run: Run, spec: images.InputSpec, n_classes: int, batch: np.ndarray,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Keras' probabilities and maps (the model with its map, as export wrote it), from one
    read of the model checked against the manifest (:mod:`indvision.checked_model`)."""
    from indvision import cam

    model = checked_model.load_recorded(run, run.model_stage, "model", spec, n_classes)
    model, _ = cam.with_heatmap_if_possible(model)  # as export did
    return scoring.score(model, batch, spec, batch_size, maps=True)


def verify_maps(path: Path, fmt: formats.ExportFormat, entry: dict[str, Any],
                parity: dict[str, Any], batch: np.ndarray, keras_maps: np.ndarray,
                config: Config) -> dict[str, Any]:
    """The file's maps (its default runtime) against Keras': a float file's every map value
    within ``map_max_abs_diff`` (maps are probabilities or normalised scores, 0–1), else the
    file fails its gate like a wrong probability; an int8 file's are recorded, not gated (its
    gate is on decisions)."""
    runner = formats.load_map_runner(path)
    maps = np.concatenate([runner(batch[i:i + config.batch_size])[1]
                           for i in range(0, len(batch), config.batch_size)])
    same_shape = maps.shape == keras_maps.shape
    diff = float(np.abs(maps - keras_maps).max()) if same_shape and len(maps) else 0.0
    numbers = {"max_abs_diff": diff if same_shape else None, "shape": list(maps.shape)}
    if not same_shape or (fmt.kind == "float" and not diff <= config.map_max_abs_diff):
        failure = (f"maps differ from Keras by up to {diff:.2g} (allowed "
                   f"{config.map_max_abs_diff:g}, verify.map_max_abs_diff)" if same_shape else
                   f"maps have shape {maps.shape}, Keras' {keras_maps.shape}")
        parity["failures"].append(failure)
        parity.update(passed=False, shippable=False)
        entry.update(shippable=False, reason=f"{fmt.gate.name} gate failed: {failure}")
    say(f"verify: {path.name} maps: max |Δ| {diff:.2g} over {len(maps)} images")
    return numbers


def _run_in_batches(runner: formats.Runner, batch: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([runner(batch[i:i + batch_size])
                           for i in range(0, len(batch), batch_size)])


# ----------------------------------------------------------------------------- bundle files

def check_model_json_record(run: Run, path: Path) -> None:
    """Refuse a ``model.json`` whose sha256 differs from the run's records of it.

    ``model.json`` cannot hold its own hash: export's record of it is in the manifest (verify
    updates that record when it rewrites the file, :func:`_record_rewritten_file`), and verify
    also leaves a ``model.json.sha256`` sidecar in the bundle. Both are checked when present;
    :meth:`Run.artifact` has checked the bundle's other files against the manifest already.
    """
    record = run.output("export", "bundle")
    name = os.path.relpath(path, run.root)
    pending = (record.get("pending_rewrite") or {}).get(name)
    if pending and path.is_file() and atomic.sha256_file(path) == pending:
        return  # verify's own rewrite, interrupted before the manifest could record it
    expected = (record.get("files") or {}).get(name)
    if expected:
        atomic.check_sha256(path, expected, run.root / MANIFEST)
    atomic.check_sha256_sidecar(path)


def _record_pending_rewrite(run: Run, path: Path, sha256: str) -> None:
    """Note in the manifest, before rewriting ``path``, the sha256 it is about to get."""
    with run.updating_output("export", "bundle") as record:
        record.setdefault("pending_rewrite", {})[os.path.relpath(path, run.root)] = sha256


def _sign_again(run: Run, bundle: Path) -> None:
    """Where export signed the bundle, sign the model.json that now holds the verdicts with the
    same key (export's ``signing.json`` names it), and keep the manifest's record true."""
    if not run.has_artifact("export", "signing"):
        return
    key = atomic.read_json(run.artifact("export", "signing"))["key"]
    signed = signing.sign_bundle(bundle, key, signer="verify")
    signature = bundle / signing.SIGNATURE
    _record_rewritten_file(run, signature, atomic.sha256_file(signature))
    say(f"verify: model.json signed again with key {signed['key_id']}")


def _record_rewritten_file(run: Run, path: Path, sha256: str) -> None:
    """Keep the manifest's record of export's bundle true after model.json is rewritten."""
    name = os.path.relpath(path, run.root)
    with run.updating_output("export", "bundle") as record:
        record.setdefault("files", {})[name] = sha256
        pending = record.get("pending_rewrite") or {}
        pending.pop(name, None)
        if not pending:
            record.pop("pending_rewrite", None)
        record["rewritten_by_verify"] = MODEL_JSON


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_latest(run: Run, bundle: Path, bundle_meta: dict[str, Any], report: dict[str, Any],
                 keras_decisions: np.ndarray, labels: np.ndarray) -> Path:
    """Atomically point ``exports/<pipeline>/latest.json`` at this run's bundle."""
    test = bundle_meta.get("metrics", {}).get("test")
    source = "evaluate"
    if not test:  # no evaluate stage: the Keras model's decisions on the test split
        good = (bundle_meta.get("decision") or {}).get("good_class")
        test = metrics.classification_metrics(labels, keras_decisions, report["classes"], good)
        source = "verify"
    summary = {key: test[key] for key in ("n", "accuracy", "macro_f1", "defect_recall",
                                          "false_reject_rate") if key in test}
    latest = {
        "run_id": run.run_id,
        "run_dir": Path(os.path.relpath(run.root, run.exports_dir)).as_posix(),
        "bundle": Path(os.path.relpath(bundle, run.exports_dir)).as_posix(),
        "pipeline": run.pipeline,
        "created": _now(),
        "metrics": {"test": summary, "source": source,
                    "parity": {k: {"agreement": v["agreement"], "max_abs_diff": v["max_abs_diff"]}
                               for k, v in report["formats"].items()}},
        "shippable": report["shippable"],
        "model_json_sha256": report["model_json_sha256"],
        "manifest": Path(os.path.relpath(run.root / MANIFEST, run.exports_dir)).as_posix(),
    }
    return atomic.write_json(run.exports_dir / LATEST, latest)
