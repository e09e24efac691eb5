"""Evaluate: the trained model on the held-out test split, and the report an engineer opens first.

The model (``train``/``model``) scores the validation and the test images once each; images come
from :func:`indvision.images.load`, exactly as on the device. Decisions come from
:mod:`indvision.metrics`, the same code verify and the edge runtime use:

- With a good class (``ok``, ``intact``) an image is good only when ``P(good) >= threshold``; the
  threshold is the lowest one that keeps the escape rate (defective items passed as good) on the
  *validation* split at or under ``escape_rate_target`` (with grouped views, on the validation
  *objects* as fused below: the object is the unit that is decided and labelled). The test
  split then shows what that threshold really does: defect recall (1 − escape rate) and
  false-reject rate.
- Without one, the arg-max.

When ingest grouped views of one object (``group_regex``), the test objects are also decided as a
whole (each object takes its least-good view) and reported beside the per-image numbers.

Outputs: ``metrics.json`` (schema in CONTRIBUTING.md), ``predictions.csv`` (one row per test image
with every class score), ``confusion.png``/``confusion.json`` and ``report.html``, one
self-contained page. The optional quality gate (``fail_below``; on the objects when views are
grouped) is checked after everything is written, so a failed run still leaves the report that
says why.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, decision, images, metrics, models
from indvision.dataset import read_splits, rows_of
from indvision.errors import IndvisionError
from indvision.rundir import Run

OUTPUT_FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "confusion": "confusion.png",
    "confusion_json": "confusion.json",
    "report": "report.html",
    decision.ARTIFACT: "decision.json",
}
THUMBNAIL_SIDE = 128  # pixels on the page; the image itself is the model's input size


@dataclass(frozen=True)
class Config:
    """How the threshold is calibrated and when the run should fail (the good class and the
    grouping are facts of the data: ingest records them, see :mod:`indvision.decision`)."""

    escape_rate_target: float = 0.01  # defective items passed as good, on validation
    fail_below: float | None = None  # test accuracy gate (0..1); above 1 always fails
    fail_below_defect_recall: float | None = None  # test defect-recall gate (needs a good class)
    batch_size: int = 32
    misclassified_max: int = 48  # thumbnails of wrong test decisions in report.html

    def __post_init__(self) -> None:
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


def calibration_threshold(val_scores: np.ndarray, val_labels: np.ndarray,
                          val_groups: Sequence[str] | None, good_index: int,
                          escape_rate_target: float) -> tuple[float, str]:
    """The good-class threshold and what it was calibrated on ("images" or "groups").

    With grouped views the decision unit is the object (it passes only when every view does),
    and its label is the object's: a damaged parcel whose dent shows in one view only has
    another view that looks intact but is labelled damaged. Calibrating per image would push the
    threshold above that clean-looking view and reject intact objects wholesale; so the escape
    rate is held on the fused validation objects instead, as they will be decided.
    """
    if val_groups is None:
        return metrics.threshold_for_escape_rate(val_scores, val_labels, good_index,
                                                 escape_rate_target), "images"
    names, _, fused = metrics.fuse_groups(val_scores, val_groups, good_index)
    labels = metrics.group_true_labels(val_labels, val_groups, names, good_index)
    return metrics.threshold_for_escape_rate(fused, labels, good_index,
                                             escape_rate_target), "groups"


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


def run(config: Config, run: Run) -> dict[str, Path]:
    """Score val and test, decide, measure, write the report; fail when the gate is not met."""
    out = run.stage_dir("evaluate")
    classes: list[str] = atomic.read_json(run.artifact("ingest", "classes"))
    ingest_report = atomic.read_json(run.artifact("ingest", "report"))
    rows = read_splits(run.artifact("ingest", "splits"))
    facts = decision.Decision.from_dict(atomic.read_json(run.artifact("ingest", decision.ARTIFACT)))
    good_class, good_index = facts.good_class, facts.good_index
    val_rows, test_rows = rows_of(rows, "val"), rows_of(rows, "test")
    if not test_rows:
        raise IndvisionError("ingest/splits.csv has no test images (each class needs at least "
                             "3 images or groups); add images or raise ingest.test_fraction")
    if good_index is not None and not val_rows:
        raise IndvisionError("ingest/splits.csv has no validation images to choose the "
                             f"'{good_class}' threshold on; add images or raise "
                             "ingest.val_fraction")
    val_labels = _label_indices(val_rows, classes)
    test_labels = _label_indices(test_rows, classes)

    spec = images.InputSpec.from_dict(atomic.read_json(run.artifact("train", "input_spec")))
    model_path = run.artifact("train", "model")
    model = _load_model(model_path, spec, len(classes))
    val_scores = score_images(model, [r["path"] for r in val_rows], spec, config.batch_size, "val")
    test_scores = score_images(model, [r["path"] for r in test_rows], spec, config.batch_size,
                               "test")

    threshold = threshold_on = None
    if good_index is not None:
        threshold, threshold_on = calibration_threshold(
            val_scores, val_labels, facts.groups_of(val_rows), good_index,
            config.escape_rate_target)
    record = facts.with_threshold(threshold, threshold_on,
                                  config.escape_rate_target if good_index is not None else None)
    result = _metrics(record, val_labels, val_scores, test_labels, test_scores,
                      facts.groups_of(test_rows))
    result.update({
        "escape_rate_target": config.escape_rate_target,
        "decision": (f"P({good_class}) >= threshold, else the most likely defect"
                     if good_class is not None else "arg-max"),
        "n_val": len(val_rows),
        "n_test": len(test_rows),
        "n_test_groups": result["test_groups"]["n"] if "test_groups" in result else None,
        "dataset_hash": ingest_report.get("dataset_hash"),
        "model_sha256": atomic.sha256_file(model_path),
        "input_spec": spec.to_dict(),
        "gate": (check_gate(config, result["test_groups"], "per object")
                 if "test_groups" in result else check_gate(config, result["test"])),
    })

    paths = {name: out / file for name, file in OUTPUT_FILES.items()}
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
    cards = [dict(card, png=thumbnail_png(card["path"], spec))
             for card in wrong[:config.misclassified_max]]
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
                                                     cards, len(wrong)))
    print(summary_line(result), flush=True)
    if not result["gate"]["passed"]:
        raise IndvisionError("quality gate failed: " + "; ".join(result["gate"]["failures"])
                             + f". See {paths['report']}")
    for note in result["gate"]["notes"]:
        print(f"evaluate: warning: {note}", flush=True)
    return paths


def _metrics(record: decision.Decision, val_labels: np.ndarray, val_scores: np.ndarray,
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


# --- scoring ---------------------------------------------------------------------------------


def _load_model(path: Path, spec: images.InputSpec, n_classes: int) -> Any:
    """Load the Keras model and check it fits the input spec and the class list."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        model = models.load_model(path)  # inference only: no optimizer
    except (ValueError, OSError, TypeError) as exc:
        raise IndvisionError(f"{path}: cannot load the Keras model "
                             f"({str(exc).strip().splitlines()[0][:200]}); re-run train") from None
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
    print(f"evaluate: scoring {len(paths)} {split} images", flush=True)
    parts = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([images.load(p, spec) for p in paths[start:start + batch_size]])
        parts.append(np.asarray(model.predict_on_batch(batch.astype(np.float32))))
        done = start + len(batch)
        if (start // batch_size) % 20 == 19 and done < len(paths):
            print(f"evaluate: scored {done}/{len(paths)} {split} images", flush=True)
    scores = np.concatenate(parts).astype(np.float64)
    if (not np.isfinite(scores).all() or (scores < -1e-6).any()
            or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
        raise IndvisionError("the model's outputs are not probabilities (each row must sum to "
                             "1): the model convention needs a softmax last layer; re-run train")
    return scores


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


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """The confusion matrix as PNG bytes: counts written in the cells, colour = share of the row."""
    from matplotlib.figure import Figure

    n = len(classes)
    side = max(4.0, 0.7 * n + 2.5)
    figure = Figure(figsize=(side, side), dpi=100)
    axes = figure.add_subplot()
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=10,
                      color="white" if shares[i, j] > 0.5 else "black")
    axes.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(n), labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def thumbnail_png(path: str, spec: images.InputSpec) -> bytes:
    """The image as the model saw it (crop + resize of :func:`images.load`), as PNG bytes."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(images.load(path, spec), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - encoding an in-memory uint8 image does not fail
        raise IndvisionError(f"cannot encode a thumbnail of {path}")
    return encoded.tobytes()


def misclassified_items(rows: Sequence[dict[str, str]], labels: np.ndarray, predicted: np.ndarray,
                   scores: np.ndarray, classes: Sequence[str],
                   good_index: int | None) -> list[dict[str, Any]]:
    """Wrong test decisions, worst first: escapes (defects passed as good), then by confidence."""
    wrong = []
    for row, label, pred, score in zip(rows, labels, predicted, scores, strict=True):
        if label == pred:
            continue
        escape = good_index is not None and pred == good_index
        wrong.append({"path": row["path"], "group": row.get("group", ""),
                      "true": classes[label], "predicted": classes[pred],
                      "score": float(score[pred]), "escape": bool(escape),
                      "good_score": None if good_index is None else float(score[good_index])})
    wrong.sort(key=lambda w: (not w["escape"], -w["score"], w["path"]))
    return wrong


# --- text ------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    """0.9944 → '99.4 %'; None → '—'."""
    return "—" if value is None else f"{100 * value:.1f} %"


def accuracy_text(part: dict[str, Any]) -> str:
    """'99.4 % (1 error / 180)'."""
    errors = part["errors"]
    return f"{percent(part['accuracy'])} ({errors} error{'' if errors == 1 else 's'} / {part['n']})"


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
    return line


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:1.4em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid
#ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.meta td{text-align:left;font-family:monospace;font-size:.9em;border:none;padding:2px 10px 2px 0}
.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:140px;font-size:.8em;
border:1px solid #ccc;padding:5px;word-break:break-all}.card img{width:128px;height:128px;
object-fit:contain;image-rendering:pixelated;background:#eee}.card.escape{border:2px solid #b00020}
.note{color:#555;font-size:.9em}
"""


def render_report(header: dict[str, str], result: dict[str, Any], confusion_png: bytes,
                  curves_png: bytes | None, cards: Sequence[dict[str, Any]],
                  n_wrong: int) -> str:
    """The self-contained HTML report: every image is a data URI, every text HTML-escaped."""
    good = result["good_class"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(header.get('pipeline', ''))} {_e(header.get('run', ''))} — evaluation"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Evaluation — {_e(header.get('pipeline', ''))}</h1><table class=\"meta\">"]
    parts += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in header.items()]
    parts.append("</table>")

    gate = result["gate"]
    if gate["fail_below"] is not None or gate["fail_below_defect_recall"] is not None:
        verdict = ("<span class=\"pass\">passed</span>" if gate["passed"] else
                   "<span class=\"fail\">FAILED</span>: " + _e("; ".join(gate["failures"])))
        parts.append(f"<p>Quality gate: {verdict}</p>")
    parts += [f"<p class=\"note\">{_e(note)}</p>" for note in gate["notes"]]

    columns = [("validation", result["val"]), ("test", result["test"])]
    if "test_groups" in result:
        columns.append(("test, per object", result["test_groups"]))
    parts.append("<h2>Metrics</h2><table><tr><th class=\"l\"></th>"
                 + "".join(f"<th>{_e(name)}</th>" for name, _ in columns) + "</tr>")
    metric_rows: list[tuple[str, Any]] = [
        ("accuracy", accuracy_text),
        ("macro-F1", lambda m: f"{m['macro_f1']:.3f}"),
    ]
    if good is not None:
        metric_rows += [
            ("defect recall", lambda m: f"{percent(m.get('defect_recall'))} "
                                        f"({m.get('escapes', 0)} escapes)"),
            ("false-reject rate", lambda m: f"{percent(m.get('false_reject_rate'))} "
                                            f"({m.get('false_rejects', 0)} false rejects)"),
        ]
    for name, cell in metric_rows:
        parts.append(f"<tr><th class=\"l\">{_e(name)}</th>"
                     + "".join(f"<td>{_e(cell(m))}</td>" for _, m in columns) + "</tr>")
    if good is not None:
        parts.append(f"<tr><th class=\"l\">threshold on P({_e(good)})</th>"
                     f"<td colspan=\"{len(columns)}\">{result['threshold']:.4f}</td></tr>")
    parts.append("</table>")
    if good is not None:
        parts.append(f"<p>Decision: good (<b>{_e(good)}</b>) when P({_e(good)}) ≥ threshold "
                     f"<b>{result['threshold']:.4f}</b>, else the most likely defect. The "
                     f"threshold is the lowest (at least 0.5) that keeps escapes on validation ≤ "
                     f"{_e(percent(result['escape_rate_target']))}.</p>")
        argmax = result.get("test_argmax")
        if argmax:
            parts.append(f"<p class=\"note\">With arg-max decisions instead, test would be "
                         f"{_e(accuracy_text(argmax))}, {argmax['escapes']} escapes, "
                         f"{argmax['false_rejects']} false rejects.</p>")
    else:
        parts.append("<p>Decision: the most likely class (arg-max); no good class, no "
                     "threshold.</p>")

    test = result["test"]
    parts.append("<h2>Per class (test)</h2><table><tr><th class=\"l\">class</th><th>precision"
                 "</th><th>recall</th><th>F1</th><th>support</th></tr>")
    for name, c in test["per_class"].items():
        parts.append(f"<tr><td class=\"l\">{_e(name)}</td><td>{c['precision']:.3f}</td>"
                     f"<td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td><td>{c['support']}</td>"
                     "</tr>")
    parts.append("</table>")

    parts.append("<h2>Confusion matrix (test)</h2>"
                 f"<img alt=\"test confusion matrix\" src=\"{_data_uri(confusion_png)}\">")
    if "test_groups" in result:
        parts.append("<p>Per object (rows: true, columns: predicted):</p>"
                     + _confusion_table(result["test_groups"]))

    parts.append("<h2>Training curves</h2>")
    parts.append(f"<img alt=\"training curves\" src=\"{_data_uri(curves_png)}\">"
                 if curves_png else "<p class=\"note\">No training curves in this run.</p>")

    parts.append(f"<h2>Misclassified test images ({n_wrong})</h2>")
    if not n_wrong:
        parts.append("<p>None: every test image was decided correctly.</p>")
    else:
        if len(cards) < n_wrong:
            parts.append(f"<p class=\"note\">Showing the first {len(cards)} of {n_wrong} "
                         "(evaluate.misclassified_max); all are in predictions.csv.</p>")
        parts.append("<p class=\"note\">As the model saw them (after crop and resize); escapes "
                     "(defects passed as good) first, outlined red.</p><div class=\"grid\">")
        for card in cards:
            name = Path(card["path"]).name
            parts.append(
                f"<div class=\"card{' escape' if card['escape'] else ''}\" "
                f"title=\"{_e(card['path'])}\"><img alt=\"{_e(name)}\" "
                f"src=\"{_data_uri(card['png'])}\"><br>{_e(name)}<br>true: <b>{_e(card['true'])}"
                f"</b><br>predicted: <b>{_e(card['predicted'])}</b> ({card['score']:.3f})"
                + (f"<br>P({_e(good)}) {card['good_score']:.3f}"
                   if good is not None and card.get("good_score") is not None else "")
                + "</div>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _confusion_table(part: dict[str, Any]) -> str:
    classes = part["classes"]
    rows = ["<table><tr><th class=\"l\">true \\ predicted</th>"
            + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>"]
    for name, counts in zip(classes, part["confusion"], strict=True):
        rows.append(f"<tr><th class=\"l\">{_e(name)}</th>"
                    + "".join(f"<td>{v}</td>" for v in counts) + "</tr>")
    rows.append("</table>")
    return "".join(rows)
