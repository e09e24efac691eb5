"""Golden files (:mod:`indvision.edge.golden`): a record of a model's behaviour catches a
changed model (another format, int8, a missing image)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from indvision import edge
from tests.edge.conftest import read_json


def test_cli_golden_record_catches_a_changed_model(bundle: Path, eval_tree: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    golden = tmp_path / "golden.json"
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--write-golden", str(golden)]) == 0
    capsys.readouterr()
    assert len(read_json(golden)["images"]) == 24
    # the same model, and the other float file, reproduce it within 1e-4
    for model in ("model.onnx", "model.tflite"):
        assert edge.main(["evaluate", str(bundle), str(eval_tree), "--model", model,
                          "--golden", str(golden)]) == 0
        report = json.loads(capsys.readouterr().out)["golden"]
        assert report["passed"] and report["compared"] == 24
    # int8 moves scores by far more than 1e-4: a regression
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--model", "model_int8.tflite",
                      "--allow-unshippable", "--golden", str(golden),
                      "--golden-tolerance", "1e-4"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)["golden"]
    assert not report["passed"] and report["max_abs_diff"] > 1e-4 and report["model_changed"]
    assert captured.err.startswith("error: golden regression")
    # an image of the golden record that is gone is a regression too
    tree = shutil.copytree(eval_tree, tmp_path / "tree")
    (tree / "ok" / "000_a.png").unlink()
    assert edge.main(["evaluate", str(bundle), str(tree), "--golden", str(golden)]) == 1
    assert json.loads(capsys.readouterr().out)["golden"]["missing"] == ["ok/000_a.png"]
