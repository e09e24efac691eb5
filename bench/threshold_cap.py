"""The false-reject cap on finished runs: each run's threshold with and without
``evaluate.max_false_reject_rate``, and what each does on its test split.

    python bench/threshold_cap.py exports/defect exports/parcel/<run_id> [--rate 0.1]

No retraining: the threshold only turns scores into decisions (training never reads it), so the
run's own model (and its linear probe) scores the validation split again, the test scores come
from ``evaluate/predictions.csv``, and both rules decide the same scores — per object where the
run groups views, as evaluate does. Rows where the cap changes nothing are listed too: they are
the evidence that it only binds where the escape target alone would reject many good parts.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchlib import finished_runs  # noqa: E402
from indvision import (  # noqa: E402
    atomic,
    calibration,
    decision,
    images,
    metrics,
    models,
)
from indvision.dataset import read_splits, rows_of  # noqa: E402
from indvision.stages import evaluate  # noqa: E402

COLUMNS = ["run", "model", "unit", "val good", "threshold, no cap",
           "val false rejects, no cap", "threshold, cap", "val escapes at cap",
           "test errors (escapes, false rejects): no cap", "cap"]


def test_scores(run: Path, classes: list[str]) -> tuple[list[dict[str, str]], np.ndarray]:
    """The test rows and their scores as evaluate wrote them (``predictions.csv``)."""
    with open(run / "evaluate" / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])


def outcome(facts: decision.Decision, threshold: float, rows: list[dict[str, str]],
            labels: np.ndarray, scores: np.ndarray, classes: list[str]) -> str:
    """Test errors, escapes and false rejects under ``threshold`` (per object when grouped)."""
    if facts.grouped:
        truth, decided = metrics.decide_groups(scores, labels, [r["group"] for r in rows],
                                               facts.good_index, threshold)
    else:
        truth, decided = labels, metrics.decide(scores, facts.good_index, threshold)
    found = metrics.classification_metrics(truth, decided, classes, facts.good_class)
    return f"{found['errors']}/{found['n']} ({found['escapes']}, {found['false_rejects']})"


def rows_of_run(run: Path, rate: float) -> list[dict[str, Any]]:
    """One row per model of the run (the final model, and the probe where there is one)."""
    classes = atomic.read_json(run / "ingest" / "classes.json")
    facts = decision.Decision.from_dict(atomic.read_json(run / "ingest" / "decision.json"))
    if facts.good_index is None:
        return []
    splits = read_splits(run / "ingest" / "splits.csv")
    val_rows = rows_of(splits, "val")
    val_labels = np.array([classes.index(r["label"]) for r in val_rows])
    test_rows, test = test_scores(run, classes)
    test_labels = np.array([classes.index(r["true"]) for r in test_rows])
    spec = images.InputSpec.from_dict(atomic.read_json(run / "train" / "input_spec.json"))
    found = []
    for name in ("model", "probe"):
        path = run / "train" / f"{name}.keras"
        if not path.is_file():
            continue
        val = evaluate.score_images(models.load_model(path), [r["path"] for r in val_rows],
                                    spec, 32, f"val ({name})")
        if name == "probe":  # evaluate's predictions are the model's; the probe scores anew
            test = evaluate.score_images(models.load_model(path),
                                         [r["path"] for r in test_rows], spec, 32, "test")
        groups, paths = facts.groups_of(val_rows), [r["path"] for r in val_rows]
        free = calibration.calibrate(val, val_labels, groups, facts.good_index,
                                              facts.escape_rate_target or 0.01, 1.0, paths)
        capped = calibration.calibrate(val, val_labels, groups, facts.good_index,
                                                facts.escape_rate_target or 0.01, rate, paths)
        found.append({
            "run": run.name, "model": name, "unit": free.on, "val good": free.n_good,
            "threshold, no cap": f"{free.threshold:.4f}",
            "val false rejects, no cap": free.false_rejects_at_escape_threshold,
            "threshold, cap": f"{capped.threshold:.4f}" + (" (capped)" if capped.capped else ""),
            "val escapes at cap": ", ".join(Path(n).name for n in capped.escaping),
            "test errors (escapes, false rejects): no cap":
                outcome(facts, free.threshold, test_rows, test_labels, test, classes),
            "cap": outcome(facts, capped.threshold, test_rows, test_labels, test, classes)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or pipeline folders")
    parser.add_argument("--rate", type=float, default=evaluate.Config().max_false_reject_rate,
                        help="max_false_reject_rate to compare with no cap (default: the "
                        "evaluate stage's)")
    args = parser.parse_args()
    runs = [r for path in args.runs for r in finished_runs(path, "evaluate/predictions.csv")]
    if not runs:
        sys.exit("no run with evaluate/predictions.csv under " + ", ".join(map(str, args.runs)))
    rows = [row for run in runs for row in rows_of_run(run, args.rate)]
    print(f"\nmax_false_reject_rate {args.rate:g} against no cap, {len(runs)} run(s)\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
