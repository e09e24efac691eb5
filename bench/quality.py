"""Quality of finished runs, per exported format: one table, markdown-friendly.

For every run: dataset, test images, accuracy, macro-F1, defect recall, false-reject rate,
training seconds — for the Keras model (evaluate's test predictions, ``evaluate/predictions.csv``)
and for every file of the bundle (ONNX, TFLite, TFLite int8), each run here through the edge
runner (:func:`indvision.formats.load_runner`) on the run's test split, with the bundle's
decision rule (good class + threshold). Where the run grouped views of one object (a parcel's
side and top photos), the metrics are per object — the unit decided, fused as evaluate fuses —
with the per-image accuracy beside them. Ratios against Keras: Δ accuracy (points), top-1
agreement, and file size against the float ONNX file. ``verify/parity.json``'s verdict
(shippable or not, and why) is shown beside each file.

    python bench/quality.py exports/defect/20261123-161418-1cb1e2 ...   # run folders
    python bench/quality.py exports/defect                             # every finished run there
    python bench/quality.py --latest exports/defect exports/parcel     # the runs latest.json names
    python bench/quality.py --run defect:../shared/data/neu --set train.finetune_steps=300
    python bench/quality.py exports/defect --no-rescore                # files only, no inference

``--run PIPELINE:DATA`` trains a fresh run first (``python -m indvision.pipeline PIPELINE --data
DATA``, minutes to hours on a CPU) and adds it to the table. Only numpy, OpenCV, onnxruntime and
ai-edge-litert are used for the summary (no TensorFlow); ``--run`` needs the ``[train]`` extra.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a clean clone works without an install too

from benchlib import finished_runs, read_json  # noqa: E402
from indvision import edge, formats, images, metrics  # noqa: E402
from indvision.errors import IndvisionError  # noqa: E402

FORMAT_NAMES = {"onnx": "ONNX", "tflite": "TFLite", "tflite_int8": "TFLite int8"}
COLUMNS = ("run", "dataset", "format", "unit", "n", "accuracy", "macro-F1", "defect recall",
           "false-reject", "image acc", "Δacc pts", "agree", "MB", "size ×", "train s",
           "verdict")


# ----------------------------------------------------------------------------- reading runs

def runs_in(path: Path) -> list[Path]:
    """A run folder → itself; a pipeline folder (``exports/<pipeline>``) → its finished runs."""
    found = finished_runs(path, "verify/parity.json")
    if not found:
        raise IndvisionError(f"{path}: neither a run folder (no manifest.json) nor a folder of "
                             "finished runs")
    return found


def latest_run(pipeline_dir: Path) -> Path:
    """The run ``exports/<pipeline>/latest.json`` points at (resolved as the edge runtime
    resolves it)."""
    return edge.resolve_bundle(pipeline_dir).parent


def dataset_name(run: Path, manifest: dict[str, Any]) -> str:
    ingest = (manifest.get("config") or {}).get("stages", {}).get("ingest", {})
    source = ingest.get("source")
    if source:
        return Path(source).name or str(source)
    return f"synthetic {ingest.get('synthetic') or manifest.get('pipeline')}"


def keras_scores(run: Path, classes: list[str]
                 ) -> tuple[list[str], np.ndarray, np.ndarray, list[str]] | None:
    """Paths, true labels, Keras probabilities and groups of the test split
    (evaluate/predictions.csv)."""
    path = run / "evaluate" / "predictions.csv"
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return None
    if not rows or any(f"p_{c}" not in rows[0] for c in classes):
        return None
    return ([r["path"] for r in rows], np.array([classes.index(r["true"]) for r in rows]),
            np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]),
            [r.get("group", "") for r in rows])


def scores_row(probs: np.ndarray, labels: np.ndarray, classes: list[str],
               good_class: str | None, threshold: float | None,
               groups: list[str] | None = None) -> dict[str, Any]:
    """Metrics of the decisions; with ``groups``, per object (plus ``image_accuracy``)."""
    good_index = classes.index(good_class) if good_class in classes else None
    decided = metrics.decide(probs, good_index, threshold)
    per_image = metrics.classification_metrics(labels, decided, classes, good_class)
    if not groups:
        return per_image
    truth, decided = metrics.decide_groups(probs, labels, groups, good_index, threshold)
    per_object = metrics.classification_metrics(truth, decided, classes, good_class)
    return {**per_object, "image_accuracy": per_image["accuracy"]}


def summarise_run(run: Path, rescore: bool = True) -> list[dict[str, Any]]:
    """One row for Keras and one per bundle file of ``run``."""
    manifest = read_json(run / "manifest.json") or {}
    evaluation = read_json(run / "evaluate" / "metrics.json") or {}
    parity = read_json(run / "verify" / "parity.json") or {}
    info = read_json(run / "train" / "train_info.json") or {}
    classes = list(evaluation.get("classes") or parity.get("classes") or [])
    good_class, threshold = evaluation.get("good_class"), evaluation.get("threshold")
    base = {"run": run.name, "dataset": dataset_name(run, manifest),
            "train s": info.get("seconds",
                                (manifest.get("stages", {}).get("train") or {}).get("seconds")),
            "status": manifest.get("status")}
    rows: list[dict[str, Any]] = []
    test = evaluation.get("test")
    grouped = bool(evaluation.get("test_groups"))
    if grouped and test:
        test = {**evaluation["test_groups"], "image_accuracy": test.get("accuracy")}
    base["unit"] = "object" if grouped else "image"
    keras = keras_scores(run, classes) if classes else None
    if test:
        rows.append({**base, "format": "Keras", **_metric_cells(test), "Δacc pts": 0.0,
                     "agree": 1.0, "verdict": "reference"})
    else:
        rows.append({**base, "format": "Keras", "verdict": "no evaluate/metrics.json"})

    bundle = run / "bundle"
    meta = read_json(bundle / "model.json") or {}
    onnx_bytes = (meta.get("files", {}).get("model.onnx") or {}).get("bytes")
    for name, entry in (meta.get("files") or {}).items():
        key = entry.get("format", name)
        check = (parity.get("formats") or {}).get(key) or {}
        row = {**base, "format": FORMAT_NAMES.get(key, key),
               "MB": entry.get("bytes", 0) / 1e6 if entry.get("bytes") else None,
               "size ×": (entry["bytes"] / onnx_bytes) if onnx_bytes and entry.get("bytes")
               else None,
               "verdict": _verdict(entry, check)}
        if rescore and keras is not None:
            try:
                probs = _run_file(bundle, name, entry, meta, keras[0])
            except IndvisionError as exc:
                rows.append({**row, "verdict": f"cannot run: {exc}"[:80]})
                continue
            found = scores_row(probs, keras[1], classes, good_class, threshold,
                               keras[3] if grouped else None)
            keras_top1 = keras[2].argmax(1)
            row.update(_metric_cells(found),
                       agree=float((probs.argmax(1) == keras_top1).mean()),
                       **{"Δacc pts": (found["accuracy"] - test["accuracy"]) * 100
                          if test else None})
        elif check and grouped and check.get("objects"):  # verify's per-object numbers
            objects = check["objects"]
            row.update(n=objects["n"], accuracy=objects["accuracy"],
                       agree=check.get("agreement"),
                       **{"Δacc pts": -objects["accuracy_drop_points"]})
        elif check:  # verify's numbers: arg-max accuracy and agreement only
            row.update(unit="image", n=parity.get("n_test"),
                       accuracy=check.get("decision_accuracy", check.get("accuracy")),
                       agree=check.get("agreement"),
                       **{"Δacc pts": -check.get("accuracy_drop_points", 0.0)})
        rows.append(row)
    return rows


def _metric_cells(found: dict[str, Any]) -> dict[str, Any]:
    return {"n": found.get("n"), "accuracy": found.get("accuracy"),
            "macro-F1": found.get("macro_f1"), "defect recall": found.get("defect_recall"),
            "false-reject": found.get("false_reject_rate"),
            "image acc": found.get("image_accuracy")}


def _verdict(entry: dict[str, Any], check: dict[str, Any]) -> str:
    if not entry.get("verified"):
        return "not verified"
    if entry.get("shippable"):
        return "shippable"
    return "NOT shippable: " + "; ".join(check.get("failures") or [entry.get("reason", "")])


def _run_file(bundle: Path, name: str, entry: dict[str, Any], meta: dict[str, Any],
              paths: list[str]) -> np.ndarray:
    formats.check_file_hash(bundle / name, entry)
    runner = formats.load_runner(bundle / name)
    spec = images.InputSpec.from_dict(meta["input_spec"])
    out = []
    for start in range(0, len(paths), 32):
        out.append(runner(np.stack([images.load(p, spec) for p in paths[start:start + 32]])))
    return np.concatenate(out)


# ----------------------------------------------------------------------------- fresh runs

def fresh_run(pipeline_and_data: str, sets: list[str], out: Path) -> Path:
    """Train ``PIPELINE:DATA`` with the real pipeline (needs indvision[train]); its run folder."""
    pipeline_name, _, data = pipeline_and_data.partition(":")
    from indvision import config, pipeline

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    spec = config.load_pipeline(pipeline_name, sets, data=data or None)
    started = time.perf_counter()
    run = pipeline.run_pipeline(spec, out)
    print(f"quality: {pipeline_and_data} trained in {time.perf_counter() - started:.0f} s "
          f"→ {run.root}", file=sys.stderr, flush=True)
    return run.root


# ----------------------------------------------------------------------------- output

def cell(value: Any, column: str) -> str:
    if value is None:
        return "–"
    if column in ("accuracy", "macro-F1", "defect recall", "false-reject", "image acc",
                  "agree"):
        return f"{value * 100:.2f} %" if column != "agree" else f"{value:.4f}"
    if column == "Δacc pts":
        return f"{value:+.2f}"
    if column == "MB":
        return f"{value:.2f}"
    if column == "size ×":
        return f"{value:.2f}"
    if column == "train s":
        return f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        shown = row if row.get("format") == "Keras" else {**row, "train s": None}
        lines.append("| " + " | ".join(cell(shown.get(c), c) for c in COLUMNS) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/quality.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run folders, or exports/<pipeline> folders (all finished runs)")
    parser.add_argument("--latest", nargs="+", default=[], metavar="PIPELINE_DIR",
                        help="exports/<pipeline> folders: the run their latest.json names")
    parser.add_argument("--run", action="append", default=[], metavar="PIPELINE:DATA",
                        help="train a fresh run first, e.g. defect:../shared/data/neu")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override for --run (as python -m indvision.pipeline --set)")
    parser.add_argument("--out", default=str(ROOT / "exports"),
                        help="where --run writes its runs (default exports/)")
    parser.add_argument("--no-rescore", action="store_true",
                        help="do not run the bundle files: verify's accuracy/agreement only")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs: list[Path] = []
        for item in args.runs:
            runs += runs_in(Path(item))
        runs += [latest_run(Path(item)) for item in args.latest]
        runs += [fresh_run(item, args.set, Path(args.out)) for item in args.run]
        if not runs:
            raise IndvisionError("no runs given: name run folders, --latest exports/<pipeline> "
                                 "or --run PIPELINE:DATA (see --help)")
        rows = [row for run in runs for row in summarise_run(run, not args.no_rescore)]
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown_table(rows))
    print("\nunit: what n counts and the metrics are of (object: views fused as evaluate fuses "
          "them; image acc: the per-image accuracy beside it); "
          "Δacc pts: accuracy minus the Keras model's, in points (decisions with the bundle's "
          "good class and threshold); agree: per-image top-1 agreement with Keras on the "
          "same test images; "
          "size ×: file size over model.onnx's; verdict: verify's gate (verify/parity.json).")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
