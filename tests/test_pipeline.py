"""The runner: new run folder per run, atomic manifest, clear failures, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import atomic, pipeline
from indvision.rundir import Run
from tests.conftest import PROJECT_ROOT, write_pipeline

INGEST_ONLY = "name: mini\nseed: 1\nstages:\n  ingest: {min_per_class: 6}\n"


@pytest.fixture
def mini_yaml(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "mini.yaml", INGEST_ONLY)


def test_each_run_gets_a_new_folder_and_a_full_manifest(tmp_path: Path, mini_yaml: Path,
                                                       tiny_tree: Path) -> None:
    out = tmp_path / "exports"
    args = [str(mini_yaml), "--data", str(tiny_tree), "--out", str(out)]
    assert pipeline.main(args) == 0
    assert pipeline.main(args) == 0
    runs = sorted((out / "mini").iterdir())
    assert len(runs) == 2
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["pipeline"] == "mini"
    assert manifest["seed"] == 1
    assert manifest["config"]["stages"]["ingest"]["source"] == str(tiny_tree)
    assert manifest["versions"]["numpy"]
    assert "git_commit" in manifest
    stage = manifest["stages"]["ingest"]
    assert stage["status"] == "done" and stage["seconds"] >= 0
    splits = stage["outputs"]["splits"]
    assert splits["sha256"] == atomic.sha256_file(runs[0] / splits["path"])


def test_config_error_exits_2_before_any_work(tmp_path: Path, mini_yaml: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exports"
    code = pipeline.main([str(mini_yaml), "--set", "ingest.min_per_clas=3", "--out", str(out)])
    assert code == 2
    assert "did you mean 'min_per_class'" in capsys.readouterr().err
    assert not out.exists()


def test_failing_stage_marks_run_failed_and_leaves_others(tmp_path: Path, mini_yaml: Path,
                                                         tiny_tree: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exports"
    assert pipeline.main([str(mini_yaml), "--data", str(tiny_tree), "--out", str(out)]) == 0
    good = next((out / "mini").iterdir())
    before = (good / "manifest.json").read_bytes()
    (tiny_tree / "lonely").mkdir()
    for name in ("scratch", "spot"):
        for path in (tiny_tree / name).iterdir():
            path.unlink()
        (tiny_tree / name).rmdir()
    capsys.readouterr()
    assert pipeline.main([str(mini_yaml), "--data", str(tiny_tree), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: stage 'ingest' failed:")
    assert "Traceback" not in "\n".join(err)
    failed = next(p for p in (out / "mini").iterdir() if p != good)
    manifest = json.loads((failed / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"]["ingest"]["status"] == "failed"
    assert "two classes" in manifest["stages"]["ingest"]["error"]
    assert (good / "manifest.json").read_bytes() == before


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run.create(tmp_path, "p", 0, {}, "h")
    before = (run.root / "manifest.json").read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    run.manifest["status"] = "changed"
    with pytest.raises(Exception, match="No space left"):
        run.save()
    assert (run.root / "manifest.json").read_bytes() == before
    assert [p.name for p in run.root.iterdir()] == ["manifest.json"]


def test_artifact_refuses_a_changed_file(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "p", 0, {}, "h")
    path = run.stage_dir("ingest") / "x.txt"
    path.write_text("one")
    run.start_stage("ingest")
    run.finish_stage("ingest", {"x": path}, 0.1)
    assert run.artifact("ingest", "x") == path
    path.write_text("two")
    with pytest.raises(Exception, match="changed after stage 'ingest'"):
        run.artifact("ingest", "x")


def test_cli_entry_point_runs_as_module(tmp_path: Path, mini_yaml: Path, tiny_tree: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "indvision.pipeline", str(mini_yaml), "--data", str(tiny_tree),
         "--out", str(tmp_path / "exports")],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[1/1] ingest" in result.stderr
