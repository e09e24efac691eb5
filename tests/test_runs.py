"""The runs table over a folder holding a passed, a failed and an interrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import atomic, runs
from indvision.rundir import Run
from tests.conftest import PROJECT_ROOT


def fake_run(out: Path, stages: dict[str, str], test: dict | None = None,
             parent: str | None = None, hour: int = 9) -> Run:
    """A run folder whose manifest went through ``stages`` (name → final status), with the
    files the table reads: ingest's report and, with ``test``, evaluate's metrics."""
    run = Run.create(out, "parcel", 1, {"stages": {"ingest": {"source": "/data/boxes"}}}, "h")
    run.manifest["created"] = f"2026-12-01T{hour:02d}:00:00+00:00"
    if parent:
        run.manifest["parent"] = parent
    for stage, status in stages.items():
        run.start_stage(stage)
        if status == "done":
            run.finish_stage(stage, {}, 1.0)
        else:
            run.fail_stage(stage, status, f"{stage} {status}", 1.0)
    if all(s == "done" for s in stages.values()):
        run.set_status("done")
    atomic.write_json(run.stage_dir("ingest") / "ingest_report.json",
                      {"source": "/data/boxes", "dataset_hash": "ab12cd34ef56" * 4,
                       "classes": ["damaged", "intact"]})
    if test:
        atomic.write_json(run.stage_dir("evaluate") / "metrics.json",
                          {"test": test["images"], "test_groups": test["objects"]})
    return run


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    out = tmp_path / "exports"
    every = ["ingest", "augment", "train", "evaluate", "export", "verify"]
    passed = fake_run(out, dict.fromkeys(every, "done"),
                      {"images": {"accuracy": 0.9, "errors": 4, "n": 40, "defect_recall": 0.95},
                       "objects": {"accuracy": 0.95, "errors": 1, "n": 20}})
    fake_run(out, {"ingest": "done", "augment": "done", "train": "done", "evaluate": "failed"},
             {"images": {"accuracy": 0.7, "errors": 12, "n": 40, "defect_recall": 0.8},
              "objects": {"accuracy": 0.75, "errors": 5, "n": 20}}, parent=passed.run_id, hour=10)
    fake_run(out, {"ingest": "done", "augment": "done", "train": "interrupted"}, hour=11)
    atomic.write_json(out / "parcel" / "latest.json",
                      {"run_id": passed.run_id, "bundle": f"{passed.run_id}/bundle"})
    return out


def test_the_table_names_each_runs_status_numbers_and_the_latest(exports: Path) -> None:
    found = runs.rows(exports / "parcel")
    assert [r["status"] for r in found] == ["interrupted at train", "failed at evaluate",
                                            "passed"]
    interrupted, failed, passed = found
    assert passed["latest"] and not failed["latest"] and not interrupted["latest"]
    assert failed["parent"] == passed["run"]
    assert failed["error"] == "evaluate failed"
    text = runs.table(found).splitlines()
    assert text[0].split("  ")[0] == "run"
    assert "90.0 % (4/40)" in text[3] and "95.0 %" in text[3] and "<- latest" in text[3]
    assert "boxes abcd" not in text[3] and "boxes ab12cd34" in text[3]
    assert "2: damaged, intact" in text[3]
    assert "failed at evaluate" in text[2] and passed["run"] in text[2]  # parent column
    assert runs.rows(exports) == found  # the exports folder: every pipeline in it


def test_the_cli_prints_json_for_scripts(exports: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "indvision.runs", str(exports), "--json"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows][-1] == "passed" and rows[-1]["object_accuracy"] == 0.95


def test_a_finished_run_without_verify_is_not_promoted(tmp_path: Path) -> None:
    fake_run(tmp_path, {"ingest": "done"})
    (row,) = runs.rows(tmp_path / "parcel")
    assert row["status"] == "done, not promoted" and row["test_accuracy"] is None


def test_a_missing_folder_is_one_error_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    assert runs.main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
