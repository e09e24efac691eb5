"""The quiet console: library chatter in the stage log only, indvision's lines on both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import console
from tests.conftest import PROJECT_ROOT, write_pipeline


def chatter() -> None:
    """What libraries do: C-level writes to fds 1 and 2, Python prints and warnings."""
    os.write(1, b"fd1 chatter\n")
    os.write(2, b"fd2 chatter\n")
    print("python chatter")
    print("python error chatter", file=sys.stderr)


def test_a_stage_log_keeps_everything_and_the_console_only_indvisions_lines(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    log = tmp_path / "logs" / "train.log"
    with console.stage_log(log):
        chatter()
        console.say("train: epoch 1/3")
        console.say("train: warning: something", err=True)
    shown = capfd.readouterr()
    assert shown.out == "train: epoch 1/3\n"
    assert shown.err == "train: warning: something\n"
    text = log.read_text()
    for line in ("fd1 chatter", "fd2 chatter", "python chatter", "python error chatter",
                 "train: epoch 1/3", "train: warning: something"):
        assert line in text
    os.write(1, b"after\n")  # the descriptors are back
    assert capfd.readouterr().out == "after\n"


def test_verbose_shows_the_chatter_too(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    with console.stage_log(tmp_path / "x.log", verbose=True):
        chatter()
    assert "fd1 chatter" in capfd.readouterr().err


def test_the_log_ends_with_why_a_stage_failed(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(ZeroDivisionError), console.stage_log(log):
        1 / 0  # noqa: B018
    assert "ended: ZeroDivisionError" in log.read_text() and "Traceback" in log.read_text()


def test_a_pipeline_run_lists_each_stage_log_in_its_manifest(tmp_path: Path,
                                                              tiny_tree: Path) -> None:
    yaml = write_pipeline(tmp_path / "mini.yaml", "name: mini\nstages:\n  ingest: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "indvision.pipeline", str(yaml), "--data", str(tiny_tree),
         "--out", str(tmp_path / "exports")],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ingest: 48 images in 3 classes" in result.stdout
    (run,) = (tmp_path / "exports" / "mini").iterdir()
    record = json.loads((run / "manifest.json").read_text())["stages"]["ingest"]
    assert record["log"] == "logs/ingest.log"
    assert "ingest: 48 images in 3 classes" in (run / record["log"]).read_text()


def test_a_handler_made_during_one_stage_writes_into_the_next_ones_log(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import logging

    with console.stage_log(tmp_path / "train.log"):
        handler = logging.StreamHandler()  # holds the sys.stderr of that stage, as TF's does
    logger = logging.getLogger("indvision.test.console")
    logger.addHandler(handler)
    try:
        with console.stage_log(tmp_path / "evaluate.log"):
            logger.warning("retracing, said during evaluate")
        logger.warning("said between stages")
    finally:
        logger.removeHandler(handler)
    assert "retracing, said during evaluate" in (tmp_path / "evaluate.log").read_text()
    shown = capfd.readouterr().err
    assert "said between stages" in shown and "retracing" not in shown
    assert "Logging error" not in shown
