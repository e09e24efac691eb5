"""What every model kind's evaluation shares: its inputs, the decision metrics, the quality
gate, ``predictions.csv`` and the files evaluate writes (TF-free: numpy and the report maths).

A kind (the classifier in :mod:`indvision.stages.evaluate`, the anomaly model in
:mod:`indvision.anomaly.evaluation`) scores validation and test with its model, makes its
decision record, and hands both here: the metrics, the outputs and the gate are the same.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, decision, images, metrics
from indvision.console import say
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.evaluation_report import accuracy_text, percent, plot_confusion
from indvision.rundir import Run

OUTPUT_FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "confusion": "confusion.png",
    "confusion_json": "confusion.json",
    "report": "report.html",
    decision.ARTIFACT: "decision.json",
}


@dataclass(frozen=True)
class Inputs:
    """What an evaluation reads from the run before it scores."""

    classes: list[str]
    facts: decision.Decision  # ingest's good class and grouping (no threshold yet)
    val_rows: list[dict[str, str]]
    test_rows: list[dict[str, str]]
    spec: images.InputSpec  # the model's input, as its stage recorded it
    ingest_report: dict[str, Any]

    @classmethod
    def read(cls, run: Run) -> Inputs:
        rows = read_splits(run.artifact("ingest", "splits"))
        return cls(classes=atomic.read_json(run.artifact("ingest", "classes")),
                   facts=decision.read_for_run(run),
                   val_rows=rows_of(rows, "val"), test_rows=rows_of(rows, "test"),
                   spec=images.InputSpec.from_dict(
                       atomic.read_json(run.artifact(run.model_stage, "input_spec"))),
                   ingest_report=atomic.read_json(run.artifact("ingest", "report")))

    def common(self, run: Run) -> dict[str, Any]:
        """The ``metrics.json`` fields every kind records about what it evaluated."""
        return {"n_val": len(self.val_rows), "n_test": len(self.test_rows),
                "dataset_hash": self.ingest_report.get("dataset_hash"),
                # the sha256 the one checked read of the model matched
                "model_sha256": run.output(run.model_stage, "model")["sha256"],
                "input_spec": self.spec.to_dict()}


def label_indices(rows: Sequence[dict[str, str]], classes: Sequence[str]) -> np.ndarray:
    """Each row's class index; a label the class list lacks is one line naming it."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise IndvisionError(f"ingest/splits.csv has labels {unknown} that classes.json lacks; "
                             "re-run ingest")
    return np.array([index[r["label"]] for r in rows], dtype=int)


def check_gate(config: Any, test: dict[str, Any], unit: str = "") -> dict[str, Any]:
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


def write_outputs(paths: dict[str, Path], result: dict[str, Any], record: decision.Decision,
                  test: tuple[Sequence[dict[str, str]], np.ndarray, np.ndarray],
                  classes: Sequence[str]) -> tuple[np.ndarray, bytes]:
    """Write ``metrics.json``, ``decision.json``, ``predictions.csv`` and the confusion
    matrix (png and json) of the ``test`` rows, labels and scores; returns the test decisions
    and the confusion png (the report shows it)."""
    rows, labels, scores = test
    atomic.write_json(paths["metrics"], result)
    atomic.write_json(paths[decision.ARTIFACT], record.to_dict())
    predicted = record.decide(scores)
    atomic.write_text(paths["predictions"],
                      predictions_csv(rows, labels, predicted, scores, classes))
    confusion_png = plot_confusion(np.array(result["test"]["confusion"]), classes,
                                   f"test: {accuracy_text(result['test'])}")
    atomic.write_bytes(paths["confusion"], confusion_png)
    atomic.write_json(paths["confusion_json"], {
        "classes": list(classes), "rows": "true class", "columns": "predicted class",
        **{part: result[part]["confusion"] for part in ("val", "test", "test_groups")
           if part in result}})
    return predicted, confusion_png
