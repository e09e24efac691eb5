"""The runs table: ``python -m indvision.runs [exports/<pipeline> | exports] [--json]``.

One row per run folder, newest first: its id, when it started, its status (``passed``;
``failed at <stage>``; ``interrupted at <stage>``; ``running``; ``done, not promoted`` for a
finished run without a verify stage, so nothing pointed ``latest.json`` at it), the data it
was trained on (source and the first characters of ingest's dataset hash), its classes, the
test numbers evaluate measured (accuracy with its error count, defect recall, per-object
accuracy where views are grouped), which run ``latest.json`` points to, and the run's parent
(``manifest.json`` ``parent``, where a run was started from another).

Everything is read from the run folders' own files (manifest, ingest report, evaluate
metrics, latest.json); nothing is imported that trains, so it answers in a blink. ``--json``
prints the rows as a JSON list for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from indvision import layout
from indvision.errors import IndvisionError
from indvision.layout import MANIFEST

COLUMNS = ("run", "started (UTC)", "status", "data", "classes", "test accuracy", "defect recall",
           "per object", "latest", "parent")


def _read(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (bounded), ``{}`` when it is missing or not one."""
    try:
        return layout.read_record(path, layout.MAX_MANIFEST_BYTES, path.name)
    except IndvisionError:
        return {}


def status_of(manifest: dict[str, Any]) -> str:
    """A run's status in words, naming the stage a failure or an interruption stopped at."""
    status = manifest.get("status", "unknown")
    stages = manifest.get("stages") or {}
    if status in ("failed", "interrupted"):
        where = next((name for name, record in stages.items()
                      if record.get("status") == status), None)
        return f"{status} at {where}" if where else status
    if status == "done":
        return "passed" if (stages.get("verify") or {}).get("status") == "done" \
            else "done, not promoted"
    return status


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def row_of(root: Path, latest_run: str | None = None) -> dict[str, Any]:
    """One run's row (see the module doc) from the files in its folder."""
    manifest = _read(root / MANIFEST)
    report = _read(root / "ingest" / "ingest_report.json")
    metrics = _read(root / "evaluate" / "metrics.json")
    test = metrics.get("test") or {}
    groups = metrics.get("test_groups") or {}
    ingest = ((manifest.get("config") or {}).get("stages") or {}).get("ingest") or {}
    source = report.get("source") or ingest.get("source") or (
        f"synthetic {ingest['synthetic']}" if ingest.get("synthetic") else "")
    classes = report.get("classes") or metrics.get("classes") or []
    return {
        "pipeline": manifest.get("pipeline", root.parent.name),
        "run": manifest.get("run_id", root.name),
        "started": manifest.get("created", ""),
        "status": status_of(manifest),
        "error": next((r.get("error") for r in (manifest.get("stages") or {}).values()
                       if r.get("error")), None),
        "source": str(source),
        "dataset_hash": report.get("dataset_hash"),
        "classes": classes,
        "test_accuracy": test.get("accuracy"),
        "test_errors": test.get("errors"),
        "test_n": test.get("n"),
        "defect_recall": test.get("defect_recall"),
        "object_accuracy": groups.get("accuracy"),
        "latest": latest_run is not None and manifest.get("run_id", root.name) == latest_run,
        "parent": manifest.get("parent"),
        "fold": [report["fold"], report["folds"]] if report.get("folds") else None,
        "path": str(root),
    }


def pipeline_folders(folder: Path) -> list[Path]:
    """``exports/<pipeline>`` → itself; ``exports`` → each pipeline folder in it."""
    if any((p / MANIFEST).is_file() for p in folder.iterdir() if p.is_dir()):
        return [folder]
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and any((q / MANIFEST).is_file() for q in p.iterdir()
                                        if q.is_dir()))


def rows(folder: Path) -> list[dict[str, Any]]:
    """Every run under ``folder`` (a pipeline folder or the exports folder), newest first."""
    found = []
    for pipeline in pipeline_folders(folder):
        try:
            latest = layout.read_latest(pipeline).get("run_id")
        except IndvisionError:
            latest = None
        found += [row_of(run, latest) for run in pipeline.iterdir()
                  if (run / MANIFEST).is_file()]
    return sorted(found, key=lambda r: (r["started"], r["run"]), reverse=True)


def cells(row: dict[str, Any], with_pipeline: bool = True) -> list[str]:
    """A row as the table's text cells, in :data:`COLUMNS` order."""
    started = row["started"]
    with contextlib.suppress(TypeError, ValueError):
        started = dt.datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M")
    data = Path(row["source"]).name if row["source"] and "/" in row["source"] else row["source"]
    if row["dataset_hash"]:
        data = f"{data} {row['dataset_hash'][:8]}"
    names = ", ".join(row["classes"])
    classes = f"{len(row['classes'])}: {names}" if len(names) <= 20 else \
        f"{len(row['classes'])}: {names[:17]}..."
    accuracy = _percent(row["test_accuracy"])
    if accuracy and row["test_errors"] is not None:
        accuracy += f" ({row['test_errors']}/{row['test_n']})"
    pipeline_run = f"{row['pipeline']}/{row['run']}" if with_pipeline else row["run"]
    status = row["status"]
    if row.get("fold"):
        status += f" (fold {row['fold'][0] + 1}/{row['fold'][1]})"
    return [pipeline_run, started, status, data, classes if row["classes"] else "",
            accuracy, _percent(row["defect_recall"]), _percent(row["object_accuracy"]),
            "<- latest" if row["latest"] else "", row["parent"] or ""]


def table(found: list[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table (run ids without the pipeline when there is
    only one)."""
    several = len({row["pipeline"] for row in found}) > 1
    lines = [list(COLUMNS)] + [cells(row, several) for row in found]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m indvision.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="exports",
                        help="exports/<pipeline>, or exports for every pipeline (default)")
    parser.add_argument("--json", action="store_true", help="the rows as a JSON list")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder}: no such folder (give exports/<pipeline> or exports)",
              file=sys.stderr)
        return 1
    found = rows(folder)
    if args.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print(f"no runs under {folder}")
    else:
        print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
