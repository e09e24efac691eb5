"""Interruptions: SIGKILL mid-training of a real pipeline process then ``--resume``, Ctrl-C
(SIGINT) inside Keras' ``fit``, and Ctrl-C between two stages.

A verify killed between rewriting ``model.json`` and recording its new hash can run again.
SIGKILL during export (no partial bundle, ``latest.json`` untouched) is covered by
tests/stages/test_export.py::test_killed_export_leaves_no_bundle_and_latest_alone.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from indvision import config, pipeline
from indvision.edge import EdgeClassifier
from indvision.rundir import Run
from tests.conftest import PROJECT_ROOT, make_tree, write_pipeline
from tests.stages.conftest import copy_run, exported_run, trained_run  # noqa: F401

EPOCHS = 6
TRAIN_YAML = f"""
name: tiny
seed: 5
stages:
  ingest: {{}}
  train: {{backbone: small_cnn, weights: none, height: 32, width: 32, batch_size: 8,
           head_steps: {EPOCHS * 3}, patience_steps: 0, workers: 1}}
"""
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def train_args(tmp_path: Path) -> list[str]:
    tree = make_tree(tmp_path / "data", per_class=12, size=40, seed=3)
    yaml = write_pipeline(tmp_path / "tiny.yaml", TRAIN_YAML)
    return [str(yaml), "--data", str(tree), "--out", str(tmp_path / "exports")]


def _sigint_as_at_a_terminal() -> None:
    """In the child, before exec: SIGINT back to its default. A shell script's background job
    (``cmd &``, as CI or ``nohup`` may start the suite) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler — the child would not see the Ctrl-C this simulates."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_pipeline(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.Popen([sys.executable, "-m", "indvision.pipeline", *args],
                                cwd=PROJECT_ROOT, env=ENV, stdout=handle,
                                stderr=subprocess.STDOUT, preexec_fn=_sigint_as_at_a_terminal)


def wait_for(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = 150,
             ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail("the pipeline ended (or timed out) before the point of interruption")


def finished_epochs(exports: Path) -> int:
    """Epochs Keras' BackupAndRestore has saved (its own record; 0 before the first)."""
    found = list(exports.glob("tiny/*/train/backup/full/training_metadata.json"))
    try:
        return int(json.loads(found[0].read_text())["epoch"]) if found else 0
    except (OSError, ValueError, KeyError):
        return 0  # being written


def history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_sigkill_mid_training_then_resume_continues_after_the_last_finished_epoch(
        tmp_path: Path, train_args: list[str]) -> None:
    exports = tmp_path / "exports"
    process = start_pipeline(train_args, tmp_path / "first.log")
    wait_for(process, lambda: finished_epochs(exports) >= 2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (run_root,) = (exports / "tiny").iterdir()
    done = finished_epochs(exports)
    assert 2 <= done < EPOCHS
    state = json.loads((run_root / "train" / "state.json").read_text())
    assert Run.open(run_root).stage_status("train") == "running"  # SIGKILL: no chance to say

    resumed = subprocess.run([sys.executable, "-m", "indvision.pipeline", *train_args,
                              "--resume", run_root.name], cwd=PROJECT_ROOT, env=ENV,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs_run = [int(n) for n in re.findall(rf" epoch (\d+)/{EPOCHS}:", resumed.stdout)]
    assert epochs_run == list(range(done + 1, EPOCHS + 1))  # nothing finished is redone
    # train's own record may be one epoch ahead when the kill fell between its write and
    # Keras' backup of that epoch: that epoch is then redone (its weights were not saved)
    announced = int(re.search(r"resuming after (\d+) finished", resumed.stdout).group(1))
    assert announced in (done, done + 1)

    rows = history(run_root / "train" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for row, before in zip(rows[:done], state["history"][:done], strict=True):
        assert float(row["loss"]) == pytest.approx(before["loss"], rel=1e-5)  # kept, not redone
    run = Run.open(run_root)
    assert run.manifest["status"] == "done" and run.stage_status("train") == "done"
    info = json.loads(run.artifact("train", "info").read_text())
    assert info["resumed"] is True and info["epochs_run"] == EPOCHS


def test_sigint_inside_keras_fit_marks_the_run_interrupted(tmp_path: Path,
                                                           train_args: list[str]) -> None:
    exports = tmp_path / "exports"
    log = tmp_path / "run.log"
    process = start_pipeline(train_args, log)
    wait_for(process, lambda: finished_epochs(exports) >= 1)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert process.wait(timeout=60) == 130
    printed = log.read_text()
    assert "Traceback" not in printed
    (run_root,) = (exports / "tiny").iterdir()
    assert f"continue with --resume {run_root.name}" in printed
    manifest = json.loads((run_root / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stages"]["train"]["status"] == "interrupted"
    assert manifest["stages"]["ingest"]["status"] == "done"


def test_ctrl_c_between_stages_marks_the_run_interrupted(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "data", per_class=8, size=40)
    yaml = write_pipeline(tmp_path / "mini.yaml",
                          "name: mini\nseed: 1\nstages:\n  ingest: {min_per_class: 6}\n")
    finish = Run.finish_stage

    def finish_then_ctrl_c(self: Run, *args: object) -> None:
        finish(self, *args)  # the stage is recorded as done...
        raise KeyboardInterrupt  # ...and the user presses Ctrl-C before the next one starts

    monkeypatch.setattr(Run, "finish_stage", finish_then_ctrl_c)
    assert pipeline.main([str(yaml), "--data", str(tree), "--out", str(tmp_path / "x")]) == 130
    (run_root,) = (tmp_path / "x" / "mini").iterdir()
    run = Run.open(run_root)
    assert run.manifest["status"] == "interrupted" and run.stage_status("ingest") == "done"
    monkeypatch.undo()
    spec = config.load_pipeline(str(yaml), [], data=str(tree))
    assert pipeline.run_pipeline(spec, tmp_path / "x", resume=run_root.name).manifest[
        "status"] == "done"


def test_verify_killed_after_rewriting_model_json_can_run_again(
        exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The worst moment: model.json rewritten, its new hash not yet in the manifest. A resumed
    verify must accept its own rewrite (noted in the manifest beforehand), not call it tampering.
    """
    from indvision.stages import verify

    run = copy_run(exported_run, tmp_path / "exports")
    run.start_stage("verify")

    def die(path: Path) -> Path:
        raise SystemExit("killed")  # nothing after this point runs: as after a SIGKILL

    monkeypatch.setattr(verify.atomic, "write_sha256_sidecar", die)
    with pytest.raises(SystemExit):
        verify.run(verify.Config(), run)
    monkeypatch.undo()
    resumed = Run.open(run.root)  # what --resume reads from disk
    assert not (run.root / "bundle" / "model.json.sha256").exists()
    outputs = verify.run(verify.Config(), resumed)
    assert outputs["parity"].is_file()
    record = resumed.manifest["stages"]["export"]["outputs"]["bundle"]
    assert "pending_rewrite" not in record
    assert EdgeClassifier(run.root).verified
