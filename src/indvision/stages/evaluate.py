"""Evaluate: the trained model on the held-out test split, and the report an engineer opens first.

The model (``train``/``model``) scores the validation and the test images once each; images come
from :func:`indvision.images.load`, exactly as on the device. Decisions come from
:mod:`indvision.metrics`, the same code verify and the edge runtime use:

- With a good class (``ok``, ``intact``) an image is good only when ``P(good) >= threshold``; the
  threshold is the lowest one that keeps the escape rate (defective items passed as good) on the
  *validation* split at or under ``escape_rate_target`` (with grouped views, on the validation
  *objects* as fused below: the object is the unit that is decided and labelled), but never
  one that rejects more than ``max_false_reject_rate`` of the good validation items — when that
  cap decides, the threshold is the lowest that passes no more defects than the cap, and a
  warning names the defective validation items passing as good (:mod:`indvision.calibration`).
  The test split then shows what that threshold really does: defect recall (1 − escape rate)
  and false-reject rate.
- Without one, the arg-max.

When ingest grouped views of one object (``group_regex``), the test objects are also decided as a
whole (each object takes its least-good view) and reported beside the per-image numbers.

Outputs: ``metrics.json`` (schema in CONTRIBUTING.md), ``predictions.csv`` (one row per test image
with every class score), ``confusion.png``/``confusion.json`` and ``report.html``, one
self-contained page (rendered by :mod:`indvision.evaluation_report` from a Jinja2
template). The optional quality gate (``fail_below``; on the objects when views are grouped)
is checked after everything is written, so a failed run still leaves the report that says why.

A child run (ingest ``parent``) is also judged against its parent on the parent's kept test
split (:mod:`indvision.promotion`, ``max_recall_drop``): ``promotion.json``, a section of the
report (parent vs child per class, the images whose decision changed) and a line on the
console. A child that regresses is not failed here — it is exported and verified like any run
— but verify does not promote it and the pipeline ends with exit 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, checked_model, decision, images, metrics, promotion
from indvision import calibration as threshold_calibration
from indvision.console import say
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.evaluation_report import (
    accuracy_text,
    misclassified_items,
    percent,
    plot_confusion,
    render_report,
    thumbnail_png,
)
from indvision.rundir import MANIFEST, Run

OUTPUT_FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "confusion": "confusion.png",
    "confusion_json": "confusion.json",
    "report": "report.html",
    decision.ARTIFACT: "decision.json",
}


@dataclass(frozen=True)
class Config:
    """How the threshold is calibrated and when the run should fail (the good class and the
    grouping are facts of the data: ingest records them, see :mod:`indvision.decision`)."""

    escape_rate_target: float = 0.01  # defective items passed as good, on validation
    # ... but the threshold never rejects more than this share of the good validation items:
    # on a small validation split one good-looking defect (a label mistake?) would otherwise
    # set the threshold above every good part. 1.0 turns the cap off.
    max_false_reject_rate: float = 0.1
    fail_below: float | None = None  # test accuracy gate (0..1); above 1 always fails
    fail_below_defect_recall: float | None = None  # test defect-recall gate (needs a good class)
    batch_size: int = 32
    misclassified_max: int = 48  # thumbnails of wrong test decisions in report.html
    # A child run (--from) is promoted only when, on its parent's test split, no old class's
    # recall drops by more than this (and the escape rate rises by no more): 0.0, no old class
    # may lose a right answer more than it gains (indvision.promotion).
    max_recall_drop: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_recall_drop <= 1:
            raise ValueError(f"max_recall_drop must be in [0, 1], got {self.max_recall_drop}")
        if not 0 <= self.max_false_reject_rate <= 1:
            raise ValueError("max_false_reject_rate must be in [0, 1], got "
                             f"{self.max_false_reject_rate}")
        if not 0 <= self.escape_rate_target < 1:
            raise ValueError(f"escape_rate_target must be in [0, 1), got {self.escape_rate_target}")
        for key in ("fail_below", "fail_below_defect_recall"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key} must be a fraction such as 0.95, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.misclassified_max < 0:
            raise ValueError(f"misclassified_max must be 0 or more, got {self.misclassified_max}")


def calibrated(config: Config, facts: decision.Decision, val_rows: Sequence[dict[str, str]],
               val_labels: np.ndarray, val_scores: np.ndarray
               ) -> tuple[decision.Decision, threshold_calibration.Calibration | None]:
    """``facts`` with the threshold calibrated on these validation scores (with a good class;
    per object when views are grouped), the decision record a model is measured under, and how
    the threshold was found (None without a good class)."""
    if facts.good_index is None:
        return facts.with_threshold(None, None, None), None
    calibration = threshold_calibration.calibrate(
        val_scores, val_labels, facts.groups_of(val_rows), facts.good_index,
        config.escape_rate_target, config.max_false_reject_rate, [r["path"] for r in val_rows])
    return facts.with_threshold(calibration.threshold, calibration.on,
                                config.escape_rate_target), calibration


def check_gate(config: Config, test: dict[str, Any], unit: str = "") -> dict[str, Any]:
    """The quality gate on the test metrics: settings, failures (messages) and notes.

    ``test`` is what is decided: the per-object metrics when views are grouped (``unit``
    "per object"), since per-image labels there are the object's and a view that does not
    show the damage cannot be right on its own.
    """
    failures, notes = [], []
    what = f"test accuracy {unit} " if unit else "test accuracy "
    if config.fail_below is not None and test["accuracy"] < config.fail_below:
        failures.append(f"{what}{accuracy_text(test)} is below evaluate.fail_below "
                        f"{percent(config.fail_below)}")
    if config.fail_below_defect_recall is not None:
        recall = test.get("defect_recall")
        if recall is None:
            notes.append("fail_below_defect_recall not checked: no good class or no defective "
                         "test image, so defect recall is undefined")
        elif recall < config.fail_below_defect_recall:
            failures.append(f"test defect recall {percent(recall)} ({test['escapes']} escapes) "
                            f"is below evaluate.fail_below_defect_recall "
                            f"{percent(config.fail_below_defect_recall)}")
    return {"fail_below": config.fail_below,
            "fail_below_defect_recall": config.fail_below_defect_recall,
            "passed": not failures, "failures": failures, "notes": notes}


def check(config: Config, run: Run) -> None:
    """Called by the pipeline right after ingest, before training: the splits evaluate needs."""
    rows = read_splits(run.artifact("ingest", "splits"))
    facts = decision.Decision.from_dict(atomic.read_json(run.artifact("ingest", decision.ARTIFACT)))
    _check_splits(rows_of(rows, "val"), rows_of(rows, "test"), facts)


def _check_splits(val_rows: Sequence[dict[str, str]], test_rows: Sequence[dict[str, str]],
                  facts: decision.Decision) -> None:
    if not test_rows:
        raise IndvisionError("ingest/splits.csv has no test images (each class needs at least "
                             "3 images or groups); add images or raise ingest.test_fraction")
    if facts.good_index is not None and not val_rows:
        raise IndvisionError("ingest/splits.csv has no validation images to choose the "
                             f"'{facts.good_class}' threshold on; add images or raise "
                             "ingest.val_fraction")


def run(config: Config, run: Run) -> dict[str, Path]:
    """Score val and test, decide, measure, write the report; fail when the gate is not met."""
    if run.model_stage == "fit":  # an anomaly model: its threshold is inside it already
        from indvision.anomaly.evaluation import evaluate

        return evaluate(config, run, OUTPUT_FILES)
    out = run.stage_dir("evaluate")
    classes: list[str] = atomic.read_json(run.artifact("ingest", "classes"))
    ingest_report = atomic.read_json(run.artifact("ingest", "report"))
    rows = read_splits(run.artifact("ingest", "splits"))
    facts = decision.Decision.from_dict(atomic.read_json(run.artifact("ingest", decision.ARTIFACT)))
    good_class, good_index = facts.good_class, facts.good_index
    val_rows, test_rows = rows_of(rows, "val"), rows_of(rows, "test")
    _check_splits(val_rows, test_rows, facts)
    val_labels = _label_indices(val_rows, classes)
    test_labels = _label_indices(test_rows, classes)

    spec = images.InputSpec.from_dict(
        atomic.read_json(run.artifact(run.model_stage, "input_spec")))
    model = _recorded_model(run, run.model_stage, "model", spec, len(classes))
    val_scores = score_images(model, [r["path"] for r in val_rows], spec, config.batch_size, "val")
    test_scores = score_images(model, [r["path"] for r in test_rows], spec, config.batch_size,
                               "test")

    record, calibration = calibrated(config, facts, val_rows, val_labels, val_scores)
    if calibration is not None and calibration.capped:
        say(calibration.warning(config.escape_rate_target, config.max_false_reject_rate))
    result = decision_metrics(record, val_labels, val_scores, test_labels, test_scores,
                      facts.groups_of(test_rows))
    result.update({
        "escape_rate_target": config.escape_rate_target,
        "calibration": calibration.to_dict() if calibration else None,
        "decision": (f"P({good_class}) >= threshold, else the most likely defect"
                     if good_class is not None else "arg-max"),
        "n_val": len(val_rows),
        "n_test": len(test_rows),
        "n_test_groups": result["test_groups"]["n"] if "test_groups" in result else None,
        "dataset_hash": ingest_report.get("dataset_hash"),
        "model_sha256": run.output(run.model_stage, "model")["sha256"],  # what was loaded
        "input_spec": spec.to_dict(),
        "gate": (check_gate(config, result["test_groups"], "per object")
                 if "test_groups" in result else check_gate(config, result["test"])),
    })

    result["probe"] = _probe_metrics(config, run, facts, spec, len(classes), result,
                                     (val_rows, val_labels), (test_rows, test_labels))

    paths = {name: out / file for name, file in OUTPUT_FILES.items()}
    changed_cards: list[dict[str, Any]] = []
    if run.has_artifact("ingest", "parent_test"):
        paths[promotion.ARTIFACT], changed_cards = _judge_child(config, run, model, record,
                                                                spec, result)
    atomic.write_json(paths["metrics"], result)
    atomic.write_json(paths[decision.ARTIFACT], record.to_dict())
    test_pred = record.decide(test_scores)
    atomic.write_text(paths["predictions"],
                      predictions_csv(test_rows, test_labels, test_pred, test_scores, classes))
    confusion_png = plot_confusion(np.array(result["test"]["confusion"]), classes,
                                   f"test: {accuracy_text(result['test'])}")
    atomic.write_bytes(paths["confusion"], confusion_png)
    atomic.write_json(paths["confusion_json"], {
        "classes": classes, "rows": "true class", "columns": "predicted class",
        **{part: result[part]["confusion"] for part in ("val", "test", "test_groups")
           if part in result}})
    curves_png = (run.artifact("train", "curves").read_bytes()
                  if run.has_artifact("train", "curves") else None)
    wrong = misclassified_items(test_rows, test_labels, test_pred, test_scores, classes, good_index)
    cards = cards_with_maps(model, wrong[:config.misclassified_max], spec, classes)
    crop = f", crop {spec.crop}" if spec.crop else ""
    if spec.colour_window:
        crop += f", colour window {spec.colour_window}"
    header = {
        "pipeline": run.pipeline,
        "run": run.run_id,
        "dataset hash": str(ingest_report.get("dataset_hash", "")),
        "model sha256": result["model_sha256"],
        "images from": str(ingest_report.get("source", "")),
        "input": f"{spec.width}x{spec.height} {spec.channel_order}, resize {spec.resize}{crop}",
    }
    atomic.write_text(paths["report"], render_report(header, result, confusion_png, curves_png,
                                                     cards, len(wrong), changed_cards))
    say(summary_line(result))
    if "promotion" in result:
        say(promotion_line(result["promotion"]))
    enforce_gate(result["gate"], paths["report"])
    return paths


def enforce_gate(gate: dict[str, Any], report: Path) -> None:
    """Fail the stage when the quality gate failed (after the report is written: it says
    why), else say the gate's notes."""
    if not gate["passed"]:
        raise IndvisionError("quality gate failed: " + "; ".join(gate["failures"])
                             + f". See {report}")
    for note in gate["notes"]:
        say(f"evaluate: warning: {note}")


def decision_metrics(record: decision.Decision, val_labels: np.ndarray, val_scores: np.ndarray,
                     test_labels: np.ndarray, test_scores: np.ndarray,
                     test_groups: list[str] | None) -> dict[str, Any]:
    """Validation and test metrics under ``record`` (per object too when grouped), and what
    the threshold costs or buys against plain arg-max."""
    classes, good_class = list(record.classes), record.good_class
    result: dict[str, Any] = {
        "classes": classes,
        "good_class": good_class,
        "threshold": record.threshold,
        "threshold_calibrated_on": record.threshold_calibrated_on,
        "group_regex": record.group_regex,
        "group_by": record.group_by,
        "val": metrics.classification_metrics(val_labels, record.decide(val_scores), classes,
                                              good_class),
        "test": metrics.classification_metrics(test_labels, record.decide(test_scores),
                                               classes, good_class),
    }
    if good_class is not None:
        argmax = metrics.classification_metrics(test_labels, metrics.decide(test_scores),
                                                classes, good_class)
        result["test_argmax"] = {key: argmax[key] for key in (
            "n", "accuracy", "errors", "defect_recall", "false_reject_rate", "escapes",
            "false_rejects")}
    if test_groups is not None:
        truth, decided = record.decide_objects(test_scores, test_labels, test_groups)
        result["test_groups"] = metrics.classification_metrics(truth, decided, classes,
                                                               good_class)
    return result


def _probe_metrics(config: Config, run: Run, facts: decision.Decision, spec: images.InputSpec,
                   n_classes: int, final: dict[str, Any],
                   val: tuple[list[dict[str, str]], np.ndarray],
                   test: tuple[list[dict[str, str]], np.ndarray]) -> dict[str, Any] | None:
    """The linear probe the head started from (``train/probe.keras``: frozen backbone features
    + logistic regression, the frozen-feature baseline) measured like the final model — its
    own threshold calibrated on validation by the same rule — and what fine-tuning gained on
    it: errors fewer on validation and on test (per object when grouped). None when training
    had no probe."""
    if not run.has_artifact("train", "probe"):
        return None
    (val_rows, val_labels), (test_rows, test_labels) = val, test
    model = _recorded_model(run, "train", "probe", spec, n_classes)
    val_scores = score_images(model, [r["path"] for r in val_rows], spec, config.batch_size,
                              "val (linear probe)")
    test_scores = score_images(model, [r["path"] for r in test_rows], spec, config.batch_size,
                               "test (linear probe)")
    record, calibration = calibrated(config, facts, val_rows, val_labels, val_scores)
    probe = decision_metrics(record, val_labels, val_scores, test_labels, test_scores,
                     facts.groups_of(test_rows))
    keys = ("n", "accuracy", "errors", "macro_f1", "defect_recall", "escapes", "false_rejects")
    summary: dict[str, Any] = {part: {k: probe[part].get(k) for k in keys}
                               for part in ("val", "test", "test_groups") if part in probe}
    unit = "test_groups" if "test_groups" in probe else "test"
    summary.update(threshold=record.threshold,
                   threshold_capped=bool(calibration and calibration.capped),
                   test_unit=unit, gained_errors={
        "val": probe["val"]["errors"] - final["val"]["errors"],
        "test": probe[unit]["errors"] - final[unit]["errors"]})
    return summary


def _judge_child(config: Config, run: Run, model: Any, record: decision.Decision,
                 spec: images.InputSpec, result: dict[str, Any]) -> tuple[Path, list[dict]]:
    """Write ``promotion.json``, add its summary to ``result`` (metrics.json) and return it
    with the report's cards of the images whose decision changed."""
    verdict = _promotion(config, run, model, record, spec)
    path = atomic.write_json(run.stage_dir("evaluate") / "promotion.json", verdict)
    shown = verdict["changed"][:config.misclassified_max]
    result["promotion"] = {**{k: v for k, v in verdict.items() if k != "changed"},
                           "changed_shown": shown}
    cards = ([dict(card, png=thumbnail_png(card["item"], spec)) for card in shown]
             if verdict["unit"] == "images" else [])
    return path, cards


def _promotion(config: Config, run: Run, model: Any, record: decision.Decision,
               spec: images.InputSpec) -> dict[str, Any]:
    """The promotion gate (:mod:`indvision.promotion`): the parent's model and this child's
    decide the parent's kept test split — each by its own decision record and input spec,
    per object where this run decides per object — and are compared class by class."""
    parent = atomic.read_json(run.artifact("ingest", "parent"))
    rows = read_splits(run.artifact("ingest", "parent_test"))
    parent_run = Run.open(Path(parent["run_dir"]))
    parent_record = decision.read_for_run(parent_run)
    parent_spec = images.InputSpec.from_dict(
        atomic.read_json(parent_run.artifact(parent_run.model_stage, "input_spec")))
    # one read of the parent's file: checked (hash; signature under trusted keys), then loaded
    parent_model = _fitting(checked_model.load_parent(parent["model"], parent["model_sha256"],
                                                      run.artifact("ingest", "parent")),
                            Path(parent["model"]), parent_spec, len(parent["classes"]))
    paths = [r["path"] for r in rows]
    parent_scores = score_images(parent_model, paths, parent_spec, config.batch_size,
                                 "parent test (the parent)")
    child_scores = score_images(model, paths, spec, config.batch_size,
                                "parent test (this child)")
    child_labels = _label_indices(rows, record.classes)
    if record.grouped:
        groups = [r["group"] for r in rows]
        truth, child_calls = record.decide_objects(child_scores, child_labels, groups)
        _, parent_calls = parent_record.decide_objects(
            parent_scores, _label_indices(rows, parent_record.classes), groups)
        keys = list(dict.fromkeys(groups))
    else:
        truth, child_calls = child_labels, record.decide(child_scores)
        parent_calls, keys = parent_record.decide(parent_scores), paths
    verdict = promotion.judge([record.classes[i] for i in truth],
                              [parent_record.classes[i] for i in parent_calls],
                              [record.classes[i] for i in child_calls], keys,
                              parent["classes"], record.good_class, config.max_recall_drop)
    verdict.update(parent_run=parent["run_id"], unit="objects" if record.grouped else "images")
    return verdict


def promotion_line(verdict: dict[str, Any]) -> str:
    """The console's line on the gate: errors of both on the parent's test split."""
    outcome = "promoted" if verdict["passed"] else "NOT promoted"
    return (f"evaluate: {outcome}: on the parent's test split ({verdict['n']} "
            f"{verdict['unit']}) the parent makes {verdict['parent_errors']} errors, this "
            f"child {verdict['child_errors']} ({verdict['lost']} right answers lost, "
            f"{verdict['gained']} gained)")


# --- scoring ---------------------------------------------------------------------------------


def _load_model(path: Path, spec: images.InputSpec, n_classes: int,
                expected_sha256: str | None = None, recorded_in: Path | None = None) -> Any:
    """The Keras model at ``path``, loaded from one read whose sha256 is ``expected_sha256``
    when given (:mod:`indvision.checked_model`), checked to fit the input spec and the class
    list."""
    data = checked_model.read_checked(path, expected_sha256, recorded_in)
    return _fitting(checked_model.load_bytes(data, path), path, spec, n_classes)


def _recorded_model(run: Run, stage: str, name: str, spec: images.InputSpec,
                    n_classes: int) -> Any:
    """The model ``stage`` wrote as ``name``, from one read checked against the manifest."""
    entry = run.output(stage, name)
    return _load_model(run.root / entry["path"], spec, n_classes, entry.get("sha256"),
                       run.root / MANIFEST)


def _fitting(model: Any, path: Path, spec: images.InputSpec, n_classes: int) -> Any:
    """``model`` (loaded from ``path``), checked to fit the input spec and the class list."""
    input_shape = tuple(model.inputs[0].shape[1:])
    if input_shape != (spec.height, spec.width, 3):
        raise IndvisionError(f"{path}: model input {input_shape} does not match input_spec.json "
                             f"({spec.height}, {spec.width}, 3); re-run train")
    outputs = model.outputs[0].shape[-1]
    if outputs != n_classes:
        raise IndvisionError(f"{path}: the model has {outputs} outputs but classes.json lists "
                             f"{n_classes} classes: model and dataset do not belong together")
    return model


def score_images(model: Any, paths: Sequence[str], spec: images.InputSpec, batch_size: int,
                 split: str = "") -> np.ndarray:
    """Softmax scores (N x C, float64) for image files, loaded batch by batch.

    Only one batch of images is in memory at a time; each batch runs through Keras' compiled
    predict function.
    """
    n_classes = model.outputs[0].shape[-1]
    if not paths:
        return np.zeros((0, n_classes))
    say(f"evaluate: scoring {len(paths)} {split} images")
    parts = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([images.load(p, spec) for p in paths[start:start + batch_size]])
        parts.append(np.asarray(model.predict_on_batch(batch.astype(np.float32))))
        done = start + len(batch)
        if (start // batch_size) % 20 == 19 and done < len(paths):
            say(f"evaluate: scored {done}/{len(paths)} {split} images")
    scores = np.concatenate(parts).astype(np.float64)
    if (not np.isfinite(scores).all() or (scores < -1e-6).any()
            or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
        raise IndvisionError("the model's outputs are not probabilities (each row must sum to "
                             "1): the model convention needs a softmax last layer; re-run train")
    return scores


def cards_with_maps(model: Any, wrong: Sequence[dict[str, Any]], spec: images.InputSpec,
                    classes: Sequence[str]) -> list[dict[str, Any]]:
    """The report's cards of wrong decisions, each image with the class-activation map of the
    class it was wrongly given drawn on it (:mod:`indvision.cam`, as the edge draws it)."""
    if not wrong:
        return []
    from indvision import cam, heatmaps

    batch = np.stack([images.load(card["path"], spec) for card in wrong])
    with_map, no_map = cam.with_heatmap_if_possible(model)
    if no_map:  # a model of another structure: plain thumbnails, and the reason on the console
        say(f"evaluate: the report's images have no maps: {no_map}")
        return [dict(card, png=thumbnail_png(card["path"], spec)) for card in wrong]
    _, heat = with_map.predict(batch.astype(np.float32), verbose=0)
    return [dict(card, png=heatmaps.png_bytes(heatmaps.overlay(
                image, grid[..., classes.index(card["predicted"])])))
            for card, image, grid in zip(wrong, batch, heat, strict=True)]


def _label_indices(rows: Sequence[dict[str, str]], classes: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise IndvisionError(f"ingest/splits.csv has labels {unknown} that classes.json lacks; "
                             "re-run ingest")
    return np.array([index[r["label"]] for r in rows], dtype=int)


# --- files -----------------------------------------------------------------------------------


def predictions_csv(rows: Sequence[dict[str, str]], labels: np.ndarray, predicted: np.ndarray,
                    scores: np.ndarray, classes: Sequence[str]) -> str:
    """One row per image: path, group, true, predicted, correct (1/0), score of the predicted
    class, then ``p_<class>`` for every class (exact float repr: decisions can be recomputed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "group", "true", "predicted", "correct", "score",
                     *[f"p_{c}" for c in classes]])
    for row, label, pred, score in zip(rows, labels, predicted, scores, strict=True):
        writer.writerow([row["path"], row.get("group", ""), classes[label], classes[pred],
                         int(label == pred), repr(float(score[pred])),
                         *[repr(float(s)) for s in score]])
    return buffer.getvalue()


# --- text ------------------------------------------------------------------------------------


def summary_line(result: dict[str, Any]) -> str:
    """One line: test accuracy, errors/n, macro-F1, defect recall, threshold (and per object)."""
    test = result["test"]
    line = f"evaluate: test accuracy {accuracy_text(test)}, macro-F1 {test['macro_f1']:.3f}"
    if result["good_class"] is not None:
        line += (f", defect recall {percent(test.get('defect_recall'))} "
                 f"({test.get('escapes', 0)} escapes), false rejects "
                 f"{percent(test.get('false_reject_rate'))}, threshold "
                 f"{result['threshold']:.4f} on P({result['good_class']})")
    else:
        line += ", arg-max decisions (no good class)"
    if "test_groups" in result:
        line += f"; per object {accuracy_text(result['test_groups'])}"
    probe = result.get("probe")
    if probe:
        gained = probe["gained_errors"]
        line += (f"\nevaluate: the linear probe fine-tuning started from: test "
                 f"{accuracy_text(probe[probe['test_unit']])}, macro-F1 "
                 f"{probe[probe['test_unit']]['macro_f1']:.3f}; fine-tuning gained "
                 f"{gained['val']} errors on validation, {gained['test']} on test")
    return line
