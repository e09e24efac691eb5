"""Cross-validation: ``--folds K`` runs, their summary, and what they leave alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from indvision import atomic, folds, pipeline, runs
from indvision.errors import IndvisionError
from indvision.rundir import Run
from tests.conftest import write_pipeline

INGEST_ONLY = "name: mini\nseed: 1\nstages:\n  ingest: {min_per_class: 6}\n"


def test_folds_run_k_ingests_that_test_every_image_once(tmp_path: Path, tiny_tree: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    mini = write_pipeline(tmp_path / "mini.yaml", INGEST_ONLY)
    out = tmp_path / "exports"
    assert pipeline.main([str(mini), "--data", str(tiny_tree), "--out", str(out),
                          "--folds", "3"]) == 0
    roots = sorted(p.parent for p in (out / "mini").glob("*/manifest.json"))
    assert len(roots) == 3
    tested: list[str] = []
    seen = []
    for root in roots:
        report = atomic.read_json(root / "ingest" / "ingest_report.json")
        assert report["folds"] == 3
        seen.append(report["fold"])
        with open(root / "ingest" / "splits.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        tested += [r["path"] for r in rows if r["split"] == "test"]
        every = sorted(r["path"] for r in rows)
    assert sorted(seen) == [0, 1, 2]
    assert sorted(tested) == every  # each image tested exactly once over the three folds
    (summary_file,) = (out / "mini" / "folds").glob("*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert [r["fold"] for r in summary["rows"]] == [0, 1, 2] and summary["failed"] == []
    assert (summary_file.parent / "summary.md").read_text().startswith("| fold | run |")
    assert "| fold | run |" in capsys.readouterr().out
    statuses = [runs.cells(row)[2] for row in runs.rows(out / "mini")]
    assert sorted(statuses) == [f"done, not promoted (fold {i}/3)" for i in (1, 2, 3)]


@pytest.mark.parametrize("extra, message", [
    (["--folds", "1"], "--folds needs 2 or more"),
    (["--folds", "3", "--from", "x"], "cannot be combined with --from"),
    (["--folds", "3", "--resume", "20260101-000000"], "no cross-validation summary"),
    (["--ray"], "--ray fans out --folds K or train.ensemble members"),
    (["--task-cpus", "2"], "--task-cpus and --task-gpus go with --ray"),
])
def test_folds_refuses_what_it_cannot_do_before_any_work(
        tmp_path: Path, tiny_tree: Path, capsys: pytest.CaptureFixture, extra: list[str],
        message: str) -> None:
    mini = write_pipeline(tmp_path / "mini.yaml", INGEST_ONLY)
    out = tmp_path / "exports"
    assert pipeline.main([str(mini), "--data", str(tiny_tree), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def fake_metrics(root: Path, errors: int, n: int, probe_errors: int) -> None:
    atomic.write_json(root / "evaluate" / "metrics.json", {
        "test": {"n": n, "errors": errors, "accuracy": 1 - errors / n,
                 "macro_f1": 1 - errors / n, "escapes": errors // 2},
        "probe": {"test": {"errors": probe_errors, "macro_f1": 1 - probe_errors / n}}})


def test_a_failed_fold_is_recorded_and_the_others_still_run(tmp_path: Path) -> None:
    """run_folds with stand-ins for the pipeline: fold 2 fails after evaluate wrote its
    numbers (a quality gate); its numbers still count, its status says why."""
    made: list[int] = []

    def run_one(spec: SimpleNamespace) -> Run:
        run = Run.create(tmp_path, "mini", 1, {}, "h")
        atomic.write_json(run.root / "ingest" / "ingest_report.json",
                          {"fold": spec.fold, "folds": 3})
        fake_metrics(run.root, errors=[1, 4, 0][spec.fold], n=20, probe_errors=2)
        made.append(spec.fold)
        if spec.fold == 1:
            raise IndvisionError("test accuracy 0.80 is below fail_below 0.9")
        return run

    def load_spec(overrides: list[str]) -> SimpleNamespace:
        return SimpleNamespace(name="mini", fold=int(overrides[1].split("=")[1]))

    summary = folds.run_folds(load_spec, 3, tmp_path, run_one)
    assert made == [0, 1, 2] and summary["failed"] == [1]
    assert summary["rows"][1]["status"].startswith("failed: test accuracy 0.80")
    assert summary["rows"][1]["errors"] == 4  # read from the failed run's folder
    assert summary["pooled"] == {"errors": 5, "n": 60, "escapes": 2, "probe_errors": 6}
    assert summary["accuracy"]["mean"] == pytest.approx(1 - 5 / 60)
    assert summary["accuracy"]["std"] == pytest.approx(0.1040833, abs=1e-6)
    last = folds.table(summary).splitlines()[-1]
    assert last.startswith("| all | | 5/60 images | 0.9167 ± 0.1041") and "3 of 3 measured" in last


def test_a_grouped_fold_is_counted_per_object_as_its_gate_and_the_device_decide(
        tmp_path: Path) -> None:
    images = {"n": 60, "errors": 20, "accuracy": 0.667, "macro_f1": 0.65, "escapes": 17}
    objects = {"n": 30, "errors": 3, "accuracy": 0.9, "macro_f1": 0.9, "escapes": 2}
    atomic.write_json(tmp_path / "evaluate" / "metrics.json", {
        "test": images, "test_groups": objects,
        "probe": {"test": {**images, "errors": 25}, "test_groups": {**objects, "errors": 8}}})
    row = folds.fold_row(0, tmp_path, "done")
    assert (row["unit"], row["errors"], row["n"], row["probe_errors"]) == ("objects", 3, 30, 8)
    assert "| 3/30 objects |" in folds.table(folds.summarise([row], 2))


def test_a_fold_without_numbers_is_listed_but_not_pooled() -> None:
    rows = [folds.fold_row(0, None, "failed: ingest"), {
        "fold": 1, "run": "r", "status": "done", "n": 10, "errors": 1, "accuracy": 0.9,
        "macro_f1": 0.9, "escapes": None, "probe_errors": None, "probe_macro_f1": None}]
    summary = folds.summarise(rows, 2)
    assert summary["measured"] == 1 and summary["pooled"]["n"] == 10
    assert summary["pooled"]["escapes"] is None and summary["accuracy"]["std"] == 0.0
    assert "| 1 |  |  |" in folds.table(summary)  # the failed fold's row, empty numbers


def test_resume_runs_only_the_folds_not_done(tmp_path: Path) -> None:
    """A fan-out killed after fold 1 (and one whose fold 3 failed): ``resume`` keeps the done
    folds and runs the others, into the same summary."""
    made: list[int] = []

    def run_one(spec: SimpleNamespace) -> Run:
        if spec.fold == 1 and not made.count(-1):
            raise KeyboardInterrupt  # killed while fold 2 trains
        run = Run.create(tmp_path, "mini", 1, {}, "h")
        fake_metrics(run.root, errors=spec.fold, n=20, probe_errors=0)
        made.append(spec.fold)
        return run

    def load_spec(overrides: list[str]) -> SimpleNamespace:
        return SimpleNamespace(name="mini", fold=int(overrides[1].split("=")[1]))

    with pytest.raises(KeyboardInterrupt):
        folds.run_folds(load_spec, 3, tmp_path, run_one)
    (summary_file,) = (tmp_path / "mini" / "folds").glob("*/summary.json")
    assert [r["fold"] for r in json.loads(summary_file.read_text())["rows"]] == [0]
    made.append(-1)  # the machine is back
    summary = folds.run_folds(load_spec, 3, tmp_path, run_one,
                              resume=summary_file.parent.name)
    assert made == [0, -1, 1, 2]  # fold 1 was not trained again
    assert [r["fold"] for r in summary["rows"]] == [0, 1, 2] and summary["failed"] == []
    with pytest.raises(IndvisionError, match="has 3 folds, not 4"):
        folds.run_folds(load_spec, 4, tmp_path, run_one, resume=summary_file.parent.name)
