"""Golden files: a regression guard for shipped models (``evaluate --write-golden/--golden``).

Record a model's behaviour on held-out images once (:func:`golden_record`: every image's true
class, label and scores, and the metric floors: accuracy and each class's recall as measured,
minus a margin), then check every later model — a retrained one, another format, another
device, a library upgrade — against it before it ships (:func:`compare_golden`). The CLI's
options: ``edge evaluate --help``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from indvision import metrics
from indvision.edge.evaluate import TreePredictions, evaluate_tree
from indvision.edge.runtime import EdgeClassifier
from indvision.errors import IndvisionError

GOLDEN_FORMAT = 2
MAX_LISTED = 500  # changed images listed in the JSON report (the count is always exact)
SAME_MODEL_TOLERANCE = 1e-4  # score drift allowed when the golden was made by this very file


def golden_record(classifier: EdgeClassifier, found: TreePredictions,
                  floor_margin: float = 0.0) -> dict[str, Any]:
    """Per-image true class, label and scores, plus the metric floors later models must meet.

    Images are keyed by their path relative to the data folder. Floors: accuracy and the
    recall of every class present in the folder, as measured, minus ``floor_margin`` (0..1).
    """
    if not 0.0 <= floor_margin < 1.0:
        raise IndvisionError(f"--floor-margin must be a fraction in [0, 1), got {floor_margin}")
    decided = metrics.decide(found.scores, classifier.good_index, classifier.threshold)
    measured = metrics.classification_metrics(found.labels, decided, classifier.classes,
                                               classifier.good_class)
    present = [c for c in classifier.classes if measured["per_class"][c]["support"]]

    def floor(value: float) -> float:
        return max(0.0, value - floor_margin)

    return {
        "golden_format": GOLDEN_FORMAT,
        "model": classifier.model_file,
        "model_sha256": classifier.entry.get("sha256"),
        "run_id": (classifier.meta.get("provenance") or {}).get("run_id"),
        "classes": classifier.classes,
        "threshold": classifier.threshold,
        "floors": {
            "margin": floor_margin,
            "accuracy": floor(measured["accuracy"]),
            "recall": {c: floor(measured["per_class"][c]["recall"]) for c in present},
            "measured": {"n": measured["n"], "accuracy": measured["accuracy"],
                         "recall": {c: measured["per_class"][c]["recall"] for c in present}},
        },
        "images": {
            Path(path).relative_to(found.data_dir).as_posix(): {
                "true": classifier.classes[truth], "label": classifier.classes[index],
                "scores": [float(p) for p in row]}
            for path, truth, index, row in zip(found.paths, found.labels, decided, found.scores,
                                               strict=True)
        },
    }


def check_floors(report: dict[str, Any], floors: dict[str, Any]) -> dict[str, Any]:
    """Each floor of a golden record against an evaluate report: floor, measured, passed."""
    result: dict[str, Any] = {}
    if "accuracy" in floors:
        result["accuracy"] = {"floor": floors["accuracy"], "now": report["accuracy"],
                              "passed": report["accuracy"] >= floors["accuracy"] - 1e-9}
    recalls = {}
    for name, limit in (floors.get("recall") or {}).items():
        entry = report["per_class"].get(name)
        now = entry["recall"] if entry and entry["support"] else None
        recalls[name] = {"floor": limit, "now": now,
                         "passed": now is not None and now >= limit - 1e-9}
    result["recall"] = recalls
    return result


def floor_failures(floors: dict[str, Any]) -> list[str]:
    """One sentence per floor not met (:func:`check_floors`' result)."""
    failures = []
    if "accuracy" in floors and not floors["accuracy"]["passed"]:
        failures.append(f"accuracy {floors['accuracy']['now']:.4f} is below its floor "
                        f"{floors['accuracy']['floor']:.4f}")
    for name, entry in floors["recall"].items():
        if not entry["passed"]:
            now_text = "no images" if entry["now"] is None else f"{entry['now']:.4f}"
            failures.append(f"recall of '{name}' {now_text} is below its floor "
                            f"{entry['floor']:.4f}")
    return failures


def compare_golden(classifier: EdgeClassifier, found: TreePredictions, golden: dict[str, Any],
                   report: dict[str, Any] | None = None, max_changed: int = 0,
                   tolerance: float | None = None) -> dict[str, Any]:
    """Check predictions on a folder against a golden record (see the module docstring).

    ``passed`` is False when accuracy or a class's recall (from ``report``, the evaluate
    report of the same predictions) is below its floor, when more than ``max_changed`` images
    changed label, when a golden image is missing, or when a score moved by more than
    ``tolerance`` (default: :data:`SAME_MODEL_TOLERANCE` when the golden was recorded from this
    very model file, else scores are reported, not checked).
    """
    if golden.get("classes") != classifier.classes:
        raise IndvisionError(f"golden file classes {golden.get('classes')} differ from the "
                             f"bundle's {classifier.classes}")
    report = report or evaluate_tree(classifier, found.data_dir, predictions=found)
    now = golden_record(classifier, found)["images"]
    before = golden.get("images") or {}
    common = sorted(set(now) & set(before))
    full_path = {Path(p).relative_to(found.data_dir).as_posix(): p for p in found.paths}
    changed = [{"image": k, "path": full_path[k], "true": now[k]["true"],
                "golden": before[k]["label"], "now": now[k]["label"]}
               for k in common if before[k]["label"] != now[k]["label"]]
    max_diff = max((float(np.max(np.abs(np.subtract(now[k]["scores"], before[k]["scores"]))))
                    for k in common), default=0.0)
    missing = sorted(set(before) - set(now))
    floors = check_floors(report, golden.get("floors") or {})
    model_changed = golden.get("model_sha256") != classifier.entry.get("sha256")
    if tolerance is None and not model_changed:  # the very same file must reproduce its scores
        tolerance = SAME_MODEL_TOLERANCE

    failures = floor_failures(floors)
    if len(changed) > max_changed:
        failures.append(f"{len(changed)} of {len(common)} images changed label "
                        f"(allowed {max_changed})")
    if missing:
        failures.append(f"{len(missing)} golden images are missing or unreadable")
    if tolerance is not None and max_diff > tolerance:
        failures.append(f"max |Δscore| {max_diff:.3g} > tolerance {tolerance:g}")
    return {
        "passed": not failures,
        "failures": failures,
        "floors": floors,
        "compared": len(common),
        "label_changes": len(changed),
        "max_changed": max_changed,
        "changed": changed[:MAX_LISTED],
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "missing": missing[:MAX_LISTED],
        "new": len(set(now) - set(before)),
        "model_changed": model_changed,
        "golden_model": golden.get("model"),
        "golden_run_id": golden.get("run_id"),
    }


def golden_summary(golden_path: str, result: dict[str, Any]) -> str:
    """The stderr text for a failed golden check: the failures, then each changed image."""
    lines = [f"error: golden regression against {golden_path}: " + "; ".join(result["failures"])]
    lines += [f"  changed: {c['path']}: golden {c['golden']} -> now {c['now']} (true {c['true']})"
              for c in result["changed"]]
    if result["label_changes"] > len(result["changed"]):
        lines.append(f"  ... and {result['label_changes'] - len(result['changed'])} more")
    lines += [f"  missing: {m}" for m in result["missing"]]
    return "\n".join(lines)


def read_golden(path: str) -> dict[str, Any]:
    """A golden file written by :func:`golden_record` (``--write-golden``); clear errors."""
    try:
        golden = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndvisionError(f"cannot read golden file {path}: {exc}") from None
    if not isinstance(golden, dict) or "images" not in golden:
        raise IndvisionError(f"{path}: not a golden file (write one with --write-golden)")
    return golden
