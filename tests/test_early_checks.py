"""Mistakes caught right after ingest, before anything trains: one line naming the fix.

None of these tests is marked slow, so the autouse guard in conftest makes ``train.run`` raise:
a check that let the run reach training would fail the test with that guard's message.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import metrics, pipeline
from indvision.stages import train
from tests.conftest import draw_tiny, write_pipeline


def two_view_tree(root: Path, classes: tuple[str, ...], objects: int = 12) -> Path:
    """``<class>/<id>_side.png`` and ``<class>/<id>_top.png``: two views of each object."""
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(objects):
            for v, view in enumerate(("side", "top")):
                image = draw_tiny("spot" if c else "ok", np.random.default_rng([c, i, v]))
                cv2.imwrite(str(root / label / f"{i:03d}_{view}.png"), image)
    return root


def last_error(capsys: pytest.CaptureFixture) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def only_run(out: Path, pipeline_name: str) -> dict:
    (run,) = (out / pipeline_name).iterdir()
    return json.loads((run / "manifest.json").read_text())


def test_an_objects_phase_without_a_good_class_stops_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = two_view_tree(tmp_path / "boxes", ("crushed", "torn"))
    out = tmp_path / "exports"
    assert pipeline.main(["parcel", "--data", str(tree), "--out", str(out)]) == 1
    error = last_error(capsys)
    assert "train.object_steps needs the good class" in error
    assert "ingest.good_class" in error and "crushed, torn" in error
    manifest = only_run(out, "parcel")
    assert manifest["status"] == "failed"
    assert manifest["stages"]["ingest"]["status"] == "done"
    assert manifest["stages"]["train"]["error"].startswith("checked before it ran")
    assert "augment" not in manifest["stages"]  # the check ran before every later stage


def test_a_common_name_of_the_good_class_is_recognised_and_said(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = two_view_tree(tmp_path / "boxes", ("damaged", "fine"))
    yaml = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingest:\n"
                          "    group_regex: '^(\\d+)_'\n")  # good_class left at its default
    out = tmp_path / "exports"
    assert pipeline.main([str(yaml), "--data", str(tree), "--out", str(out)]) == 0
    assert "good class 'fine' (recognised by its name" in capsys.readouterr().out
    (run,) = (out / "p").iterdir()
    assert json.loads((run / "ingest" / "decision.json").read_text())["good_class"] == "fine"


def test_auto_names_the_good_class_or_refuses_to_guess() -> None:
    assert metrics.resolve_good_class("auto", ["Damaged", "No-Defect"]) == "No-Defect"
    assert metrics.resolve_good_class("auto", ["ok_front", "def_front"]) == "ok_front"
    assert metrics.resolve_good_class("auto", ["crack", "dent"]) is None
    with pytest.raises(Exception, match="'good' and 'ok' both look like the good class"):
        metrics.resolve_good_class("auto", ["good", "ok", "dent"])


def test_a_group_regex_matching_no_file_name_stops_ingest(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = two_view_tree(tmp_path / "boxes", ("damaged", "intact"))
    yaml = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingest:\n"
                          "    group_regex: '^parcel-(\\d+)'\n")
    assert pipeline.main([str(yaml), "--data", str(tree), "--out", str(tmp_path / "x")]) == 1
    error = last_error(capsys)
    assert "group_regex '^parcel-(\\d+)' matches none of the 48 file names" in error
    assert "e.g. '000_side.png'" in error and "null for one object per image" in error


def test_an_input_far_from_the_images_size_is_said() -> None:
    config = train.Config(height=224, width=224)
    (upscaled,) = train.input_size_warnings(config, [(48, 48)] * 5)
    assert "upscaled 4.7×" in upscaled and "train.height" in upscaled
    (shrunk,) = train.input_size_warnings(train.Config(height=64, width=64), [(1024, 768)])
    assert "shrunk 12×" in shrunk
    assert train.input_size_warnings(config, [(256, 256), (300, 200)]) == []
    window = train.Config(height=189, width=240, colour_window=(0.5, 0.7))
    assert train.input_size_warnings(window, [(480, 270)]) == []
