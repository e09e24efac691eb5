"""Cross-validation: ``python -m indvision.pipeline NAME --folds K``.

A test split of 50 images moves two points with one error, and a single split says little about
how a model does on the next 50. ``--folds K`` runs the pipeline K times; run ``i`` tests on
block ``i`` of every class's seeded order (:mod:`indvision.splitting`), so over the K runs every
object is tested exactly once, by a model that never saw it. Each fold is an ordinary run folder
(``exports/<pipeline>/<run_id>/``, marked with its fold in ``ingest_report.json`` and the runs
table); none of them moves ``latest.json`` — cross-validation measures a recipe, it does not
release a model. The summary (each fold's test numbers, the pooled errors over all K test
splits, mean ± standard deviation across folds, the frozen-feature probe beside the model) is
written after every fold to ``exports/<pipeline>/folds/<stamp>/summary.json`` and
``summary.md`` and printed at the end. A fold that fails (a quality gate, say) is recorded as
failed with its numbers where evaluate wrote them, and the other folds still run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.console import say
from indvision.errors import ConfigError, IndvisionError

SUMMARY_DIR = "folds"


def fold_overrides(folds: int, fold: int) -> list[str]:
    """The ``--set`` overrides that make a run fold ``fold`` (0-based) of ``folds``."""
    return [f"ingest.folds={folds}", f"ingest.fold={fold}"]


def fold_of(run: Any) -> tuple[int, int] | None:
    """(fold, folds) of a cross-validation run, from its ingest report; None otherwise."""
    if not run.has_artifact("ingest", "report"):
        return None
    report = atomic.read_json(run.artifact("ingest", "report"))
    return (report["fold"], report["folds"]) if report.get("folds") else None


#: One fold's outcome: (fold index, its run folder or None, "done" or "failed: ...").
Outcome = tuple[int, Path | None, str]
#: Runs the given (fold index, spec) pairs, yielding each outcome as it finishes (any order).
FoldRunner = Callable[[list[tuple[int, Any]]], Iterator[Outcome]]


def run_folds(load_spec: Callable[[list[str]], Any], folds: int, out_dir: Path,
              run_one: Callable[[Any], Any], resume: str | None = None,
              runner: FoldRunner | None = None) -> dict[str, Any]:
    """Run fold 0..folds-1 (``load_spec(overrides)`` builds each fold's pipeline, ``run_one``
    runs it and returns the run or raises IndvisionError); return the summary.

    ``resume`` (a summary folder's name under ``folds/``) keeps the folds that summary lists
    as done and runs only the others. ``runner`` runs the folds elsewhere (``--ray``:
    :func:`indvision.ray_folds.fold_runner`, several at once); the default runs them here, one
    after the other."""
    specs = [load_spec(fold_overrides(folds, i)) for i in range(folds)]  # all checked first
    runs = Path(out_dir) / specs[0].name
    folder = runs / SUMMARY_DIR / (resume or time.strftime("%Y%m%d-%H%M%S"))
    rows = _resumed_rows(folder, folds) if resume else []
    todo = [(i, spec) for i, spec in enumerate(specs) if i not in {r["fold"] for r in rows}]
    if resume:
        say(f"folds: resuming {folder.name}: {folds - len(todo)} fold(s) done, "
            f"{len(todo)} to run")
    for index, root, status in (runner or _sequential(run_one, runs, folds))(todo):
        rows = sorted([*rows, fold_row(index, root, status)], key=lambda r: r["fold"])
        write_summary(folder, summarise(rows, folds))
    say(f"folds: summary in {folder}")
    return summarise(rows, folds)


def _resumed_rows(folder: Path, folds: int) -> list[dict[str, Any]]:
    """The done rows of an earlier summary (its failed folds run again)."""
    path = folder / "summary.json"
    if not path.is_file():
        raise ConfigError(f"--resume {folder.name}: no cross-validation summary at {path}")
    summary = atomic.read_json(path)
    if summary.get("folds") != folds:
        raise ConfigError(f"--resume {folder.name}: that summary has {summary.get('folds')} "
                          f"folds, not {folds}")
    return [row for row in summary["rows"] if row["status"] == "done"]


def _sequential(run_one: Callable[[Any], Any], runs: Path, folds: int) -> FoldRunner:
    def runner(todo: list[tuple[int, Any]]) -> Iterator[Outcome]:
        for index, spec in todo:
            say(f"folds: fold {index + 1}/{folds}")
            try:
                yield index, run_one(spec).root, "done"
            except IndvisionError as exc:
                yield index, fold_run(runs, index, folds), f"failed: {exc}"
    return runner


def fold_run(runs: Path, fold: int, folds: int) -> Path | None:
    """The newest run folder under ``runs`` made for fold ``fold`` of ``folds`` (its ingest
    report says so): a failed fold's numbers, where evaluate wrote them."""
    found = []
    for manifest in runs.glob("*/manifest.json"):
        report = manifest.parent / "ingest" / "ingest_report.json"
        if not report.is_file():
            continue
        marks = atomic.read_json(report)
        if marks.get("fold") == fold and marks.get("folds") == folds:
            found.append(manifest.parent)
    return max(found, key=lambda p: p.name) if found else None


def fold_row(fold: int, root: Path | None, status: str) -> dict[str, Any]:
    """One fold's test numbers (and its probe's) from its run folder, in the unit the run
    decides: per object where views are grouped (as the quality gate and the device do), else
    per image."""
    metrics = {}
    if root is not None and (Path(root) / "evaluate" / "metrics.json").is_file():
        metrics = atomic.read_json(Path(root) / "evaluate" / "metrics.json")
    unit = "test_groups" if metrics.get("test_groups") else "test"
    test = metrics.get(unit) or {}
    probe = ((metrics.get("probe") or {}).get(unit)) or {}
    return {"fold": fold, "run": Path(root).name if root else None, "status": status,
            "unit": "objects" if unit == "test_groups" else "images",
            "n": test.get("n"), "errors": test.get("errors"), "accuracy": test.get("accuracy"),
            "macro_f1": test.get("macro_f1"), "escapes": test.get("escapes"),
            "probe_errors": probe.get("errors"), "probe_macro_f1": probe.get("macro_f1")}


def summarise(rows: list[dict[str, Any]], folds: int) -> dict[str, Any]:
    """Pooled errors over the measured folds and mean ± standard deviation across them."""
    measured = [r for r in rows if r["n"]]

    def spread(key: str) -> dict[str, float] | None:
        values = [r[key] for r in measured if r[key] is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    pooled = {key: (sum(r[key] for r in measured if r[key] is not None)
                    if any(r[key] is not None for r in measured) else None)
              for key in ("errors", "n", "escapes", "probe_errors")}
    return {"folds": folds, "finished": len(rows), "measured": len(measured), "rows": rows,
            "pooled": pooled, "accuracy": spread("accuracy"), "macro_f1": spread("macro_f1"),
            "probe_macro_f1": spread("probe_macro_f1"),
            "failed": [r["fold"] for r in rows if r["status"] != "done"]}


def table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table with a pooled line."""
    def number(value: Any, digits: int = 4) -> str:
        return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
            else str(value)

    lines = ["| fold | run | test errors | accuracy | macro-F1 | escapes | probe errors "
             "| probe macro-F1 | status |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        errors = f"{r['errors']}/{r['n']} {r.get('unit', 'images')}" if r["n"] else ""
        lines.append(f"| {r['fold'] + 1} | {r['run'] or ''} | {errors} | "
                     f"{number(r['accuracy'])} | {number(r['macro_f1'])} | "
                     f"{number(r['escapes'])} | {number(r['probe_errors'])} | "
                     f"{number(r['probe_macro_f1'])} | {r['status'].splitlines()[0][:80]} |")
    pooled = summary["pooled"]
    if pooled["n"]:
        def ms(key: str) -> str:
            s = summary[key]
            return f"{s['mean']:.4f} ± {s['std']:.4f}" if s else ""

        units = {r.get("unit", "images") for r in summary["rows"] if r["n"]}
        lines.append(f"| all | | {pooled['errors']}/{pooled['n']} {'/'.join(sorted(units))} | "
                     f"{ms('accuracy')} | "
                     f"{ms('macro_f1')} | {number(pooled['escapes'])} | "
                     f"{number(pooled['probe_errors'])} | "
                     f"{ms('probe_macro_f1')} | {summary['measured']} of "
                     f"{summary['folds']} measured |")
    return "\n".join(lines)


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """summary.json and summary.md, each written whole (temp name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder / "summary.json", summary)
    atomic.write_text(folder / "summary.md", table(summary) + "\n")
