"""Evaluate: the trained model on the held-out test split, and the report an engineer opens first.

The model scores validation and test once each (:mod:`indvision.evaluation.scoring`, images
loaded as on the device). With a good class an image is good only when ``P(good) >=
threshold``, the lowest threshold that keeps the validation escape rate at or under
``escape_rate_target`` without rejecting more than ``max_false_reject_rate`` of the good
validation items (:mod:`indvision.calibration`; per object when views are grouped); without
one, the arg-max. The metrics, output files and quality gate (``fail_below``, checked after
the report is written) are the evaluation core's (:mod:`indvision.evaluation.core`), shared
with the anomaly path (:mod:`indvision.anomaly.evaluation`). The linear probe training
started from is measured the same way. A child run is also judged against its parent on the
parent's kept test split (:mod:`indvision.promotion`): ``promotion.json``; a child that
regresses is exported and verified but not promoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, checked_model, decision, images, promotion
from indvision import calibration as threshold_calibration
from indvision.console import say
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.evaluation import core
from indvision.evaluation.core import (
    OUTPUT_FILES,
    check_gate,
    decision_metrics,
    enforce_gate,
    label_indices,
)
from indvision.evaluation.scoring import score, score_images
from indvision.evaluation_report import (
    accuracy_text,
    misclassified_items,
    percent,
    render_report,
    thumbnail_png,
)
from indvision.rundir import Run


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


def check(config: Config, run: Run) -> None:
    """Called by the pipeline right after ingest, before training: the splits evaluate needs."""
    rows = read_splits(run.artifact("ingest", "splits"))
    _check_splits(rows_of(rows, "val"), rows_of(rows, "test"), decision.read_for_run(run))


def _check_splits(val_rows: Sequence[dict[str, str]], test_rows: Sequence[dict[str, str]],
                  facts: decision.Decision) -> None:
    if not test_rows:
        raise IndvisionError("ingest/splits.csv has no test images (each class needs at least "
                             "3 images or groups); add images or raise ingest.test_fraction")
    if facts.good_index is not None and not val_rows:
        raise IndvisionError("ingest/splits.csv has no validation images to choose the "
                             f"'{facts.good_class}' threshold on; add images or raise "
                             "ingest.val_fraction")


@dataclass(frozen=True)
class Scored:
    """One split as a model saw it: its rows, their class indices and the model's scores."""

    rows: list[dict[str, str]]
    labels: np.ndarray
    scores: np.ndarray


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Score val and test, decide, measure, write the report; fail when the gate is not met."""
    if run_dir.model_stage == "fit":  # an anomaly model: its threshold is inside it already
        from indvision.anomaly.evaluation import evaluate

        return evaluate(config, run_dir)
    inputs = core.Inputs.read(run_dir)
    _check_splits(inputs.val_rows, inputs.test_rows, inputs.facts)
    model = checked_model.load_recorded(run_dir, run_dir.model_stage, "model", inputs.spec,
                                        len(inputs.classes))
    val, test = _scored(config, model, inputs)
    record, result = _measured(config, inputs, val, test)
    result.update(inputs.common(run_dir))
    result["gate"] = (check_gate(config, result["test_groups"], "per object")
                      if "test_groups" in result else check_gate(config, result["test"]))
    result["probe"] = _probe_metrics(config, run_dir, inputs, result, val, test)
    paths = {name: run_dir.stage_dir("evaluate") / file for name, file in OUTPUT_FILES.items()}
    changed_cards: list[dict[str, Any]] = []
    if run_dir.has_artifact("ingest", "parent_test"):
        paths[promotion.ARTIFACT], changed_cards = _judge_child(config, run_dir, model, record,
                                                                inputs.spec, result)
    predicted, confusion_png = core.write_outputs(
        paths, result, record, (test.rows, test.labels, test.scores), inputs.classes)
    atomic.write_text(paths["report"], _report(config, run_dir, model, inputs, result, test,
                                               predicted, (confusion_png, changed_cards)))
    say(summary_line(result))
    if "promotion" in result:
        say(promotion_line(result["promotion"]))
    enforce_gate(result["gate"], paths["report"])
    return paths


def _scored(config: Config, model: Any, inputs: core.Inputs, what: str = ""
            ) -> tuple[Scored, Scored]:
    """Validation and test as ``model`` scores them (``what`` names the model on the console);
    every label is checked before any image is scored."""
    splits = (("val", inputs.val_rows), ("test", inputs.test_rows))
    labels = [label_indices(rows, inputs.classes) for _, rows in splits]
    return tuple(Scored(rows, found, score_images(model, [r["path"] for r in rows], inputs.spec,
                                                  config.batch_size, split + what))
                 for (split, rows), found in zip(splits, labels, strict=True))


def _measured(config: Config, inputs: core.Inputs, val: Scored, test: Scored
              ) -> tuple[decision.Decision, dict[str, Any]]:
    """The decision record calibrated on ``val`` and the metrics under it (warning on the
    console when the false-reject cap chose the threshold)."""
    facts = inputs.facts
    record, calibration = calibrated(config, facts, val.rows, val.labels, val.scores)
    if calibration is not None and calibration.capped:
        say(calibration.warning(config.escape_rate_target, config.max_false_reject_rate))
    result = decision_metrics(record, val.labels, val.scores, test.labels, test.scores,
                              facts.groups_of(test.rows))
    result.update({
        "escape_rate_target": config.escape_rate_target,
        "calibration": calibration.to_dict() if calibration else None,
        "decision": (f"P({facts.good_class}) >= threshold, else the most likely defect"
                     if facts.good_class is not None else "arg-max"),
        "n_test_groups": result["test_groups"]["n"] if "test_groups" in result else None,
    })
    return record, result


def _report(config: Config, run: Run, model: Any, inputs: core.Inputs, result: dict[str, Any],
            test: Scored, predicted: np.ndarray,
            pngs: tuple[bytes, list[dict[str, Any]]]) -> str:
    """``report.html``: the header, the metrics, the confusion matrix and training curves, and
    the wrong test decisions with their maps (``pngs``: the confusion png, the changed cards)."""
    confusion_png, changed_cards = pngs
    spec, classes, ingest_report = inputs.spec, inputs.classes, inputs.ingest_report
    curves_png = (run.artifact("train", "curves").read_bytes()
                  if run.has_artifact("train", "curves") else None)
    wrong = misclassified_items(test.rows, test.labels, predicted, test.scores, classes,
                                inputs.facts.good_index)
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
    return render_report(header, result, confusion_png, curves_png, cards, len(wrong),
                         changed_cards)


def _probe_metrics(config: Config, run: Run, inputs: core.Inputs, final: dict[str, Any],
                   val: Scored, test: Scored) -> dict[str, Any] | None:
    """The linear probe the head started from (``train/probe.keras``: frozen backbone features
    + logistic regression, the frozen-feature baseline) measured like the final model — its
    own threshold calibrated on validation by the same rule — and what fine-tuning gained on
    it: errors fewer on validation and on test (per object when grouped). None when training
    had no probe."""
    if not run.has_artifact("train", "probe"):
        return None
    model = checked_model.load_recorded(run, "train", "probe", inputs.spec, len(inputs.classes))
    val, test = _scored(config, model, inputs, " (linear probe)")
    record, calibration = calibrated(config, inputs.facts, val.rows, val.labels, val.scores)
    probe = decision_metrics(record, val.labels, val.scores, test.labels, test.scores,
                             inputs.facts.groups_of(test.rows))
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
    parent_model = checked_model.fitting(
        checked_model.load_parent(parent["model"], parent["model_sha256"],
                                  run.artifact("ingest", "parent")),
        parent["model"], parent_spec, len(parent["classes"]))
    paths = [r["path"] for r in rows]
    parent_scores = score_images(parent_model, paths, parent_spec, config.batch_size,
                                 "parent test (the parent)")
    child_scores = score_images(model, paths, spec, config.batch_size,
                                "parent test (this child)")
    child_labels = label_indices(rows, record.classes)
    if record.grouped:
        groups = [r["group"] for r in rows]
        truth, child_calls = record.decide_objects(child_scores, child_labels, groups)
        _, parent_calls = parent_record.decide_objects(
            parent_scores, label_indices(rows, parent_record.classes), groups)
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
    _, heat = score(with_map, batch, spec, len(batch), maps=True)
    return [dict(card, png=heatmaps.png_bytes(heatmaps.overlay(
                image, grid[..., classes.index(card["predicted"])])))
            for card, image, grid in zip(wrong, batch, heat, strict=True)]


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
