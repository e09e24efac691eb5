"""Ingest: bad files rejected with reasons, duplicates removed, deterministic group-aware split."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision.errors import IndvisionError
from indvision.rundir import Run
from indvision.stages import ingest
from tests.conftest import make_tree, needs_shared


def run_ingest(tmp_path: Path, source: Path, seed: int = 0, **settings) -> tuple[Run, dict]:
    run = Run.create(tmp_path / "exports", "test", seed, {}, "h")
    outputs = ingest.run(ingest.Config(source=str(source), **settings), run)
    return run, outputs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def add_bad_files(folder: Path) -> dict[str, str]:
    """Write the usual suspects into ``folder``; return name → expected reason fragment."""
    _ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (60, 60, 3),
                                                                        dtype=np.uint8))
    (folder / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello", encoding="utf-8")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    return {"truncated.jpg": "truncated", "empty.jpg": "empty file", "text.jpg": "not a decodable",
            "notes.txt": "not an image file extension", "tiny.png": "too small"}


def test_writes_declared_outputs_and_counts(tmp_path: Path, tiny_tree: Path) -> None:
    _run, outputs = run_ingest(tmp_path, tiny_tree)
    assert set(outputs) == {"splits", "classes", "decision", "report", "rejected"}
    assert all(p.is_file() for p in outputs.values())
    assert json.loads(outputs["classes"].read_text()) == ["ok", "scratch", "spot"]
    rows = read_csv(outputs["splits"])
    assert len(rows) == 48
    report = json.loads(outputs["report"].read_text())
    for split in ingest.SPLITS:
        for label in ("ok", "scratch", "spot"):
            assert report["counts"][split][label] >= 1, (split, label)
    assert report["counts"]["test"]["ok"] == sum(
        1 for r in rows if r["split"] == "test" and r["label"] == "ok")
    assert len(report["dataset_hash"]) == 64


def test_odd_but_valid_images_are_kept(tmp_path: Path, tiny_tree: Path) -> None:
    folder = tiny_tree / "ok"
    cv2.imwrite(str(folder / "gray.png"), np.full((40, 40), 120, np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), np.full((40, 40, 4), 120, np.uint8))
    cv2.imwrite(str(folder / "deep.png"), np.full((40, 40), 30000, np.uint16))
    cv2.imwrite(str(folder / "Prüf bild ✓.png"), np.full((40, 40, 3), 99, np.uint8))
    _run, outputs = run_ingest(tmp_path, tiny_tree)
    kept = {Path(r["path"]).name for r in read_csv(outputs["splits"])}
    assert {"gray.png", "rgba.png", "deep.png", "Prüf bild ✓.png"} <= kept


def test_bad_files_are_rejected_with_reasons_and_ingest_goes_on(tmp_path: Path,
                                                                tiny_tree: Path) -> None:
    expected = add_bad_files(tiny_tree / "scratch")
    _run, outputs = run_ingest(tmp_path, tiny_tree)
    rejected = {Path(r["path"]).name: r["reason"] for r in read_csv(outputs["rejected"])}
    for name, reason in expected.items():
        assert reason in rejected[name], (name, rejected.get(name))
    assert len(read_csv(outputs["splits"])) == 48


def test_too_few_images_left_fails_clearly(tmp_path: Path, tiny_tree: Path) -> None:
    for path in list((tiny_tree / "spot").iterdir())[3:]:
        path.unlink()
    with pytest.raises(IndvisionError, match="'spot' has 3"):
        run_ingest(tmp_path, tiny_tree)


def test_single_class_fails_clearly(tmp_path: Path, tiny_tree: Path) -> None:
    shutil.rmtree(tiny_tree / "scratch")
    shutil.rmtree(tiny_tree / "spot")
    with pytest.raises(IndvisionError, match="at least two classes"):
        run_ingest(tmp_path, tiny_tree)


def test_exact_duplicates_are_reported_and_never_in_two_splits(tmp_path: Path,
                                                              tiny_tree: Path) -> None:
    for path in sorted((tiny_tree / "ok").glob("*.png"))[:5]:
        shutil.copy(path, path.with_name("copy_" + path.name))
    _run, outputs = run_ingest(tmp_path, tiny_tree)
    report = json.loads(outputs["report"].read_text())
    assert report["duplicates"]["removed"] == 5
    rows = read_csv(outputs["splits"])
    hashes = [r["sha256"] for r in rows]
    assert len(hashes) == len(set(hashes))


def test_conflicting_duplicate_labels_drop_all_copies(tmp_path: Path, tiny_tree: Path) -> None:
    source = sorted((tiny_tree / "ok").glob("*.png"))[0]
    shutil.copy(source, tiny_tree / "spot" / "mislabelled.png")
    _run, outputs = run_ingest(tmp_path, tiny_tree)
    rejected = read_csv(outputs["rejected"])
    assert sum("labels" in r["reason"] for r in rejected) == 2


def test_split_is_deterministic_by_seed(tmp_path: Path, tiny_tree: Path) -> None:
    _, a = run_ingest(tmp_path / "a", tiny_tree, seed=5)
    _, b = run_ingest(tmp_path / "b", tiny_tree, seed=5)
    _, c = run_ingest(tmp_path / "c", tiny_tree, seed=6)
    assert a["splits"].read_bytes() == b["splits"].read_bytes()
    assert a["splits"].read_bytes() != c["splits"].read_bytes()


def test_group_regex_keeps_views_together(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "views", per_class=20)
    for folder in tree.iterdir():  # a second view of every object
        for path in list(folder.glob("*_a.png")):
            shutil.copy(path, path.with_name(path.name.replace("_a", "_b")))
            image = cv2.imread(str(path))
            cv2.imwrite(str(path.with_name(path.name.replace("_a", "_b"))), 255 - image)
    _run, outputs = run_ingest(tmp_path, tree, group_regex=r"^(\d+)_")
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for row in read_csv(outputs["splits"]):
        splits_of_group[row["group"]].add(row["split"])
    assert len(splits_of_group) == 60
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_csv_source_with_bom_missing_files_and_groups(tmp_path: Path, tiny_tree: Path) -> None:
    lines = ["path,label,group,comment"]
    for label in ("ok", "spot"):
        for i, path in enumerate(sorted((tiny_tree / label).glob("*.png"))):
            lines.append(f"{label}/{path.name},{label},g{i // 2},x")
    lines += ["ok/missing.png,ok,,x", "spot/000_a.png,,,x"]
    csv_path = tiny_tree / "labels.csv"
    csv_path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    _run, outputs = run_ingest(tmp_path, csv_path)
    rows = read_csv(outputs["splits"])
    assert {r["label"] for r in rows} == {"ok", "spot"}
    assert all(r["group"].startswith("g") for r in rows)
    reasons = [r["reason"] for r in read_csv(outputs["rejected"])]
    assert any("file not found" in r for r in reasons)
    assert any("empty label" in r for r in reasons)


def test_csv_without_required_columns_names_the_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("file,class\na.png,ok\n", encoding="utf-8")
    with pytest.raises(IndvisionError, match=re.escape(str(csv_path)) + ".*missing column"):
        run_ingest(tmp_path, csv_path)


@pytest.mark.shared
def test_real_packages_no_parcel_in_two_splits(tmp_path: Path) -> None:
    packages = needs_shared("data", "packages")
    _run, outputs = run_ingest(tmp_path, packages, group_regex=r"^(\d+)_")
    splits_of_parcel: dict[str, set[str]] = defaultdict(set)
    rows = read_csv(outputs["splits"])
    for row in rows:
        parcel = re.match(r"^(\d+)_", Path(row["path"]).name).group(1)
        splits_of_parcel[parcel].add(row["split"])
    assert len(rows) == 300
    assert all(len(s) == 1 for s in splits_of_parcel.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_a_bad_synthetic_kind_fails_when_the_pipeline_is_read() -> None:
    from indvision import config
    from indvision.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ingest: unknown synthetic kind 'defct' \(did you "
                                          r"mean 'defect'\?\)"):
        config.load_pipeline("defect", ["ingest.synthetic=defct"])


def test_max_train_per_class_shrinks_train_and_val_and_keeps_the_test_split(
        tmp_path: Path, tiny_tree: Path) -> None:
    _, full = run_ingest(tmp_path / "full", tiny_tree, seed=3)
    _, small = run_ingest(tmp_path / "small", tiny_tree, seed=3, max_train_per_class=4)
    full_rows, small_rows = read_csv(full["splits"]), read_csv(small["splits"])
    test_of = lambda rows: sorted(r["path"] for r in rows if r["split"] == "test")  # noqa: E731
    assert test_of(small_rows) == test_of(full_rows)
    for label in ("ok", "scratch", "spot"):
        train = [r for r in small_rows if r["split"] == "train" and r["label"] == label]
        val = [r for r in small_rows if r["split"] == "val" and r["label"] == label]
        full_train = {r["path"] for r in full_rows if r["split"] == "train"
                      and r["label"] == label}
        full_val = [r for r in full_rows if r["split"] == "val" and r["label"] == label]
        assert len(train) == 4 and {r["path"] for r in train} <= full_train
        # validation shrinks in the training split's proportion, never to nothing
        assert len(val) == max(1, round(len(full_val) * 4 / len(full_train)))
    report = json.loads(small["report"].read_text())
    assert report["subsampled_out"] == len(full_rows) - len(small_rows) > 0
    assert report["counts"]["train"]["total"] == 12


def test_max_train_per_class_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_train_per_class"):
        ingest.Config(max_train_per_class=0)


# ----------------------------------------------------------------------------- good only


def test_good_only_keeps_defect_folders_out_of_training(tmp_path: Path, tiny_tree: Path) -> None:
    _run, outputs = run_ingest(tmp_path, tiny_tree, good_class="ok", good_only=True)
    rows = read_csv(outputs["splits"])
    assert {r["label"] for r in rows if r["split"] == "train"} == {"ok"}
    for label in ("scratch", "spot"):  # 16 each: test and validation only, in proportion
        splits = [r["split"] for r in rows if r["label"] == label]
        assert len(splits) == 16 and set(splits) == {"val", "test"}
        assert abs(splits.count("test") - splits.count("val")) <= 1
    assert json.loads(outputs["classes"].read_text()) == ["ok", "anomaly"]
    record = json.loads(outputs["decision"].read_text())
    assert record["classes"] == ["ok", "anomaly"] and record["good_class"] == "ok"
    report = json.loads(outputs["report"].read_text())
    assert report["counts"]["test"]["scratch"] >= 1  # the report keeps the defect types


def test_good_only_works_with_no_defect_image_at_all(tmp_path: Path, tiny_tree: Path) -> None:
    shutil.rmtree(tiny_tree / "scratch")
    shutil.rmtree(tiny_tree / "spot")
    _run, outputs = run_ingest(tmp_path, tiny_tree, good_only=True)  # good_class: auto
    rows = read_csv(outputs["splits"])
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert json.loads(outputs["classes"].read_text()) == ["ok", "anomaly"]


def test_good_only_without_a_good_class_is_one_clear_error(tmp_path: Path,
                                                           tiny_tree: Path) -> None:
    shutil.move(tiny_tree / "ok", tiny_tree / "plain")
    with pytest.raises(IndvisionError, match="good_only needs a good class"):
        run_ingest(tmp_path, tiny_tree, good_only=True)
    with pytest.raises(ValueError, match="good_only needs a good class"):
        ingest.Config(good_only=True, good_class=None)
