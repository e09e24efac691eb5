"""Regression checks on held-out images: the guard in front of every model that goes to a device.

A golden file (``python -m indvision.edge evaluate BUNDLE HELDOUT --write-golden FILE``) holds
each held-out image's label and the metric floors (accuracy, each class's recall); a bundle
passes when ``--golden FILE`` exits 0. See tests/regression/conftest.py for how to point this
suite at your own bundle, and docs/edge.md ("Guard your model with held-out images").
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PROJECT_ROOT

from indvision import edge


def evaluate_cli(*args: str) -> tuple[int, dict, str]:
    """``python -m indvision.edge evaluate ...`` in a fresh interpreter: exit code, report,
    stderr — exactly what a device or a CI script sees."""
    result = subprocess.run([sys.executable, "-m", "indvision.edge", "evaluate", *args],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- your own model

def test_user_bundle_meets_its_golden(user_target: dict[str, str]) -> None:
    """INDVISION_BUNDLE on INDVISION_HELDOUT: no floor broken, at most INDVISION_MAX_CHANGED
    images with another label than INDVISION_GOLDEN records."""
    args = [user_target["bundle"], user_target["heldout"], "--golden", user_target["golden"],
            "--max-changed", os.environ.get("INDVISION_MAX_CHANGED", "0")]
    if os.environ.get("INDVISION_MODEL"):
        args += ["--model", os.environ["INDVISION_MODEL"]]
    status, report, stderr = evaluate_cli(*args)
    assert status == 0, f"the bundle fails its regression check:\n{stderr}"
    assert report["golden"]["passed"]


# ----------------------------------------------------------------------------- CI: real data

@pytest.mark.slow  # trains a small real model (once per session)
def test_golden_records_labels_and_floors(golden_file: Path, heldout: Path,
                                          real_run: Path) -> None:
    golden = read_json(golden_file)
    n_images = sum(1 for _ in edge.image_files([heldout]))
    assert len(golden["images"]) == n_images > 0
    classes = golden["classes"]
    assert set(golden["floors"]["recall"]) == {p.name for p in heldout.iterdir()} <= set(classes)
    assert golden["floors"]["margin"] == 0.0
    assert golden["floors"]["accuracy"] == golden["floors"]["measured"]["accuracy"]
    # the bundle's labels are the Keras model's (evaluate stage, same test split)
    with (real_run / "evaluate" / "predictions.csv").open(encoding="utf-8") as handle:
        keras_label = {Path(r["path"]).name: r["predicted"] for r in csv.DictReader(handle)}
    for key, entry in golden["images"].items():
        assert entry["true"] == key.split("/")[0]
        assert entry["label"] == keras_label[Path(key).name], key


@pytest.mark.slow  # trains a small real model (once per session)
def test_trained_bundle_passes_its_golden_and_floors(real_bundle: Path, heldout: Path,
                                                     golden_file: Path) -> None:
    status, report, stderr = evaluate_cli(str(real_bundle), str(heldout),
                                          "--golden", str(golden_file))
    assert status == 0, stderr
    check = report["golden"]
    assert check["passed"] and check["failures"] == [] and check["label_changes"] == 0
    assert check["compared"] == report["n"] and not check["model_changed"]
    assert check["floors"]["accuracy"]["passed"]
    assert all(entry["passed"] for entry in check["floors"]["recall"].values())
    # a real model, not a lucky one: the floors it sets are worth guarding
    assert report["accuracy"] >= 0.85, report["accuracy"]
    assert min(c["recall"] for c in report["per_class"].values()) >= 0.6, report["per_class"]


@pytest.mark.slow  # trains a small real model (once per session)
def test_degraded_bundle_fails_and_lists_changed_images(degraded_bundle: Path, heldout: Path,
                                                        golden_file: Path) -> None:
    """Perturbed head weights, hashes updated: it loads and claims to be verified; only the
    regression check catches it (exit 1, each changed image listed)."""
    meta = read_json(degraded_bundle / "model.json")["files"]["model.onnx"]
    assert meta["verified"] and meta["shippable"]
    status, report, stderr = evaluate_cli(str(degraded_bundle), str(heldout),
                                          "--golden", str(golden_file))
    assert status == 1
    check = report["golden"]
    golden = read_json(golden_file)["images"]
    assert not check["passed"] and check["model_changed"]
    assert check["label_changes"] == len(check["changed"]) >= 1
    assert any("changed label (allowed 0)" in f for f in check["failures"])
    assert stderr.startswith(f"error: golden regression against {golden_file}")
    for change in check["changed"]:
        assert golden[change["image"]]["label"] == change["golden"] != change["now"]
        assert Path(change["path"]).is_file()
        assert f"  changed: {change['path']}: golden {change['golden']} -> now " \
               f"{change['now']}" in stderr


@pytest.mark.slow  # trains a small real model (once per session)
def test_max_changed_and_floors_decide_separately(real_bundle: Path, heldout: Path,
                                                  golden_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Two images relabelled in the golden record: --max-changed 1 fails, 2 passes; a floor
    set above what the model does fails on its own, naming the metric."""
    golden = read_json(golden_file)
    classes = golden["classes"]
    for key in sorted(golden["images"])[:2]:
        entry = golden["images"][key]
        entry["label"] = next(c for c in classes if c != entry["label"])
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(golden), encoding="utf-8")
    base = ["evaluate", str(real_bundle), str(heldout), "--golden", str(edited)]
    assert edge.main([*base, "--max-changed", "1"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["golden"]["label_changes"] == 2
    assert out.err.count("  changed: ") == 2
    assert edge.main([*base, "--max-changed", "2"]) == 0
    capsys.readouterr()

    strict = read_json(golden_file)
    name = sorted(strict["floors"]["recall"])[0]
    strict["floors"]["recall"][name] = 1.01
    edited.write_text(json.dumps(strict), encoding="utf-8")
    assert edge.main(["evaluate", str(real_bundle), str(heldout), "--golden", str(edited)]) == 1
    out = capsys.readouterr()
    check = json.loads(out.out)["golden"]
    assert check["label_changes"] == 0
    assert check["failures"] == [f"recall of '{name}' {check['floors']['recall'][name]['now']:.4f}"
                                 f" is below its floor 1.0100"]
    assert not check["floors"]["recall"][name]["passed"]


@pytest.mark.slow  # trains a small real model (once per session)
def test_floor_margin_lowers_the_floors(real_bundle: Path, heldout: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "margin.json"
    assert edge.main(["evaluate", str(real_bundle), str(heldout), "--write-golden", str(path),
                      "--floor-margin", "0.05"]) == 0
    capsys.readouterr()
    floors = read_json(path)["floors"]
    assert floors["margin"] == 0.05
    assert floors["accuracy"] == pytest.approx(max(0.0, floors["measured"]["accuracy"] - 0.05))
    for name, value in floors["recall"].items():
        assert value == pytest.approx(max(0.0, floors["measured"]["recall"][name] - 0.05))
    assert edge.main(["evaluate", str(real_bundle), str(heldout), "--write-golden", str(path),
                      "--floor-margin", "1.5"]) == 1
    assert "--floor-margin" in capsys.readouterr().err
