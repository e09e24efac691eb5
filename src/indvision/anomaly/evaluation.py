"""The evaluate stage's path for an anomaly model (the ``fit`` stage's), on the evaluation
core (:mod:`indvision.evaluation`): what evaluate writes for a classifier, plus image AUROC,
recall per defect folder, the score histograms with the threshold drawn, what each threshold
rule would have done on test, and the worst cases with their maps.

The model decides like a classifier with classes ``[good, anomaly]`` and its threshold inside
the graph: good when P(good) ≥ 0.5. Evaluate calibrates nothing here (fit did, and the raw
threshold is a constant in the model); it records threshold 0.5 in ``decision.json`` for
export and the edge. The dataset's defect folders are defect *types*: each is one label of the
``anomaly`` class, reported on its own (``per_defect_type``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indvision import anomaly, atomic, checked_model, heatmaps, images, metrics
from indvision.anomaly.bank import normalise
from indvision.console import say
from indvision.errors import IndvisionError
from indvision.evaluation import core
from indvision.evaluation.scoring import score
from indvision.evaluation_report import CSS, _environment, _markup, accuracy_text, percent
from indvision.rundir import Run

TEMPLATE = "anomaly_report.html.j2"
THRESHOLD = 0.5  # where every anomaly model's normalised threshold sits


def evaluate(config: Any, run: Run) -> dict[str, Path]:
    """Score validation and test, measure, write every evaluate output; the gate as ever."""
    inputs = core.Inputs.read(run)
    val_rows, test_rows, spec, good = (inputs.val_rows, inputs.test_rows, inputs.spec,
                                       inputs.facts.good_class)
    if not test_rows:
        raise IndvisionError("ingest/splits.csv has no test images; add good images")
    # one read of model.keras, checked against the sha256 fit recorded, then loaded
    model = checked_model.load_recorded(run, "fit", "model", spec, len(inputs.classes))
    val_probs, _ = score_with_maps(model, [r["path"] for r in val_rows], spec,
                                   config.batch_size, "val")
    test_probs, test_maps = score_with_maps(model, [r["path"] for r in test_rows], spec,
                                            config.batch_size, "test")
    val_labels, test_labels = binary_labels(val_rows, good), binary_labels(test_rows, good)
    rule = atomic.read_json(run.artifact("fit", "report"))["threshold"]
    record = inputs.facts.with_threshold(THRESHOLD, "images", None)
    result = core.decision_metrics(record, val_labels, val_probs, test_labels, test_probs, None)
    result.update({
        "model_kind": "anomaly",
        "escape_rate_target": None,
        "calibration": None,
        "threshold_rule": rule,
        "decision": f"P({good}) >= 0.5 (the raw threshold, normalised), else {anomaly.ANOMALY}",
        "auroc": {"val": metrics.auroc(val_probs[:, 1], val_labels == 1),
                  "test": metrics.auroc(test_probs[:, 1], test_labels == 1)},
        "per_defect_type": per_defect_type(test_rows, test_probs, good),
        "test_by_rule": by_rule(rule, test_probs[:, 1], test_labels == 1),
        "n_test_groups": None,
        **inputs.common(run),
        "gate": core.check_gate(config, result["test"]),
        "probe": None,
    })
    paths = {name: run.stage_dir("evaluate") / file for name, file in core.OUTPUT_FILES.items()}
    _, confusion_png = core.write_outputs(paths, result, record,
                                          (test_rows, test_labels, test_probs), inputs.classes)
    cards = worst_cards(test_rows, test_labels, test_probs, test_maps, spec,
                        config.misclassified_max)
    atomic.write_text(paths["report"], render(run, result, confusion_png, cards,
                                              histogram_png(val_probs, val_labels, test_probs,
                                                            test_labels, good)))
    say(summary_line(result))
    core.enforce_gate(result["gate"], paths["report"])
    return paths


def binary_labels(rows: Sequence[dict[str, str]], good_class: str) -> np.ndarray:
    """0 for the good class, 1 (anomaly) for every defect folder."""
    return anomaly.is_defect([r["label"] for r in rows], good_class).astype(int)


def score_with_maps(model: Any, paths: Sequence[str], spec: images.InputSpec, batch_size: int,
                    split: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N, 2)`` and maps ``(N, h, w)`` of image files, batch by batch."""
    return score(model, paths, spec, batch_size, split, maps=True)


def per_defect_type(rows: Sequence[dict[str, str]], probs: np.ndarray,
                    good_class: str) -> dict[str, dict[str, Any]]:
    """Recall per defect folder at the bundle's threshold: caught / n."""
    caught = probs[:, 0] < THRESHOLD
    out: dict[str, dict[str, Any]] = {}
    for label in sorted({r["label"] for r in rows} - {good_class}):
        mine = np.array([r["label"] == label for r in rows])
        n, hit = int(mine.sum()), int((caught & mine).sum())
        out[label] = {"n": n, "caught": hit, "recall": hit / n}
    return out


def by_rule(rule: dict[str, Any], scores: np.ndarray, defect: np.ndarray) -> dict[str, Any]:
    """Test defect recall and false-reject rate at each rule's threshold (``fit_report``'s
    raw thresholds, normalised like the scores): what calibrating on defects gains."""
    chosen = rule["raw_threshold"]
    out = {}
    for name, raw in rule["by_rule"].items():
        if raw is None:
            out[name] = None
            continue
        cut = float(normalise(raw, chosen))
        rejected = scores > cut
        out[name] = {"raw_threshold": raw, "normalised_threshold": cut,
                     "defect_recall": float(rejected[defect].mean()) if defect.any() else None,
                     "false_reject_rate": (float(rejected[~defect].mean())
                                           if (~defect).any() else None)}
    return out


def histogram_png(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                  test_labels: np.ndarray, good_class: str) -> bytes:
    """Score histograms of good and defective images, validation and test, threshold drawn."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2), dpi=100)
    bins = np.linspace(0, 1, 41)
    for column, (name, probs, labels) in enumerate((("validation", val_probs, val_labels),
                                                    ("test", test_probs, test_labels))):
        axes = figure.add_subplot(1, 2, column + 1)
        for value, label, colour in ((0, good_class, "tab:blue"),
                                     (1, "defective", "tab:red")):
            scores = probs[labels == value, 1]
            if scores.size:
                axes.hist(scores, bins=bins, alpha=0.6, color=colour,
                          label=f"{label} ({scores.size})")
        axes.axvline(THRESHOLD, color="black", linestyle="--", label="threshold")
        axes.set_title(f"{name}: anomaly score", fontsize=10)
        axes.set_xlabel("P(anomaly)")
        axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def worst_cases(labels: np.ndarray, probs: np.ndarray, count: int) -> list[int]:
    """Indices worth a look, worst first: escapes (highest P(good) first), false rejects
    (highest P(anomaly) first), then the most anomalous defects caught."""
    anomalous = probs[:, 1]
    escapes = [i for i in np.argsort(anomalous) if labels[i] == 1 and anomalous[i] <= THRESHOLD]
    rejects = [i for i in np.argsort(-anomalous) if labels[i] == 0 and anomalous[i] > THRESHOLD]
    caught = [i for i in np.argsort(-anomalous) if labels[i] == 1 and anomalous[i] > THRESHOLD]
    return [int(i) for i in (escapes + rejects + caught)[:count]]


def worst_cards(rows: Sequence[dict[str, str]], labels: np.ndarray, probs: np.ndarray,
                maps: np.ndarray, spec: images.InputSpec, count: int) -> list[dict[str, Any]]:
    """Report cards of :func:`worst_cases`, each with its image and map overlay."""
    cards = []
    for i in worst_cases(labels, probs, count):
        image = images.load(rows[i]["path"], spec)
        kind = ("escape" if labels[i] == 1 and probs[i, 1] <= THRESHOLD else
                "false reject" if labels[i] == 0 and probs[i, 1] > THRESHOLD else "caught")
        cards.append({"path": rows[i]["path"], "label": rows[i]["label"], "kind": kind,
                      "score": float(probs[i, 1]),
                      "png": heatmaps.png_bytes(heatmaps.overlay(image, maps[i]))})
    return cards


def render(run: Run, result: dict[str, Any], confusion_png: bytes,
           cards: list[dict[str, Any]], histogram: bytes) -> str:
    """The self-contained HTML report of an anomaly run."""
    header = {"pipeline": run.pipeline, "run": run.run_id,
              "dataset hash": str(result.get("dataset_hash", "")),
              "model sha256": result["model_sha256"],
              "input": f"{result['input_spec']['width']}x{result['input_spec']['height']}"}
    return _environment().get_template(TEMPLATE).render(
        header=header, result=result, confusion_png=confusion_png, cards=cards,
        histogram_png=histogram, css=_markup(CSS))


def summary_line(result: dict[str, Any]) -> str:
    """One line: AUROC, accuracy, defect recall and false rejects at the threshold."""
    test, auroc = result["test"], result["auroc"]["test"]
    return (f"evaluate: test AUROC {'—' if auroc is None else f'{auroc:.4f}'}, accuracy "
            f"{accuracy_text(test)}, defect recall {percent(test.get('defect_recall'))} "
            f"({test.get('escapes', 0)} escapes), false rejects "
            f"{percent(test.get('false_reject_rate'))} at the fitted threshold "
            f"({result['threshold_rule']['rule']} rule)")
