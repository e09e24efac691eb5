"""bench/anchor.py: the frozen-feature baseline runs on a folder and reports what it measures."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.bench.conftest import load_bench
from tests.conftest import make_tree

pytest.importorskip("sklearn", reason="bench/anchor.py needs scikit-learn (the [dev] extra)")

TINY = ["--set", "train.backbone=small_cnn", "--set", "train.weights=none",
        "--set", "train.height=32", "--set", "train.width=32",
        "--folds", "3", "--repeats", "2"]


@pytest.fixture(scope="module")
def anchor():
    return load_bench("anchor")


def table_rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in output.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_view_of_names_the_view_type(anchor):
    assert anchor.view_of(Path("0101_side.jpg"), r"^(\d+)_") == "side"
    assert anchor.view_of(Path("0101_side.jpg"), None) == ""
    assert anchor.view_of(Path("other.jpg"), r"^(\d+)_") == ""


def test_duplicates_count_once_and_conflicting_copies_are_dropped(anchor, tmp_path):
    root = make_tree(tmp_path / "data", classes=("ok", "spot"), per_class=4)
    shutil.copy(root / "ok" / "000_a.png", root / "ok" / "copy.png")
    shutil.copy(root / "ok" / "001_a.png", root / "spot" / "mislabelled.png")
    data = anchor.read_dataset(root, None)
    kept = {f"{p.parent.name}/{p.name}" for p in data.paths}
    # 8 images + 2 copies: the same-class copy counts once, the conflicting pair goes
    assert kept == {"ok/000_a.png", "ok/002_a.png", "ok/003_a.png", "spot/000_a.png",
                    "spot/001_a.png", "spot/002_a.png", "spot/003_a.png"}


def test_separable_classes_score_high_and_every_option_gets_a_row(anchor, tmp_path, capsys):
    """Dark disks on noise: even untrained features separate them (labels mixed up or rows
    misaligned would score near 50 %)."""
    root = make_tree(tmp_path / "data", classes=("ok", "spot"), per_class=12)
    code = anchor.main([str(root), *TINY, "--train-share", "0.5", "1", "--degrade", "1", "2"])
    output = capsys.readouterr().out
    assert code == 0, output
    rows = table_rows(output)
    assert [(r[1].split(" ")[0], r[2]) for r in rows] == [
        ("as", "0.5"), ("as", "1"), ("1/2", "0.5"), ("1/2", "1")]
    full = rows[1]
    assert float(full[3].split("%")[0]) >= 90.0, full
    assert re.search(r"\((\d+)/24\)", full[3]), full  # errors of 24 images
    assert re.fullmatch(r"[\d.]+% \(\d+/12\)", full[5]), full  # defect recall: spots found


def test_grouped_views_are_scored_per_object_and_per_view(anchor, tmp_path, capsys):
    """Two views per object; the damage shows in the side view only, so the top views are a
    coin toss while objects (defective when any view is) are decided by the side views."""
    rng = np.random.default_rng(0)
    for label in ("damaged", "intact"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(12):
            for view in ("side", "top"):
                image = np.full((32, 32, 3), int(rng.integers(100, 160)), np.uint8)
                if label == "damaged" and view == "side":
                    cv2.circle(image, (16, 16), 6, (20, 20, 20), -1)
                prefix = "1" if label == "damaged" else "2"
                cv2.imwrite(str(tmp_path / "data" / label / f"{prefix}{i:02d}_{view}.png"), image)
    code = anchor.main([str(tmp_path / "data"), "--pipeline", "parcel", *TINY,
                        "--set", "train.colour_window=null",
                        "--set", r"ingest.group_regex=^(\d+)_"])
    output = capsys.readouterr().out
    assert code == 0, output
    row = table_rows(output)[0]
    assert re.search(r"\(\d+/24\)", row[4]), row  # 24 objects
    side = float(re.search(r"side ([\d.]+)%", row[6]).group(1))
    top = float(re.search(r"top ([\d.]+)%", row[6]).group(1))
    assert side == 100.0 and top < 90.0, row


def test_a_folder_without_classes_or_a_file_is_a_clear_error(anchor, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert anchor.main([str(tmp_path / "empty"), *TINY]) == 2
    assert "no class folders" in capsys.readouterr().err
    (tmp_path / "labels.csv").write_text("path,label\n", encoding="utf-8")
    assert anchor.main([str(tmp_path / "labels.csv"), *TINY]) == 2
    assert "labels.csv: not a folder" in capsys.readouterr().err
