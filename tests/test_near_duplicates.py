"""Near-duplicates: the thumbnail rule, the hash index finding candidates, ingest's report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import near_duplicates as nd
from indvision import pipeline
from tests.conftest import draw_tiny, make_tree, needs_shared, write_pipeline


def scene(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(draw_tiny("spot", rng, 48), (size, size), interpolation=cv2.INTER_LINEAR)


def jpeg_copy(rgb: np.ndarray, quality: int = 80, brighter: int = 0) -> np.ndarray:
    _, data = cv2.imencode(".jpg", np.clip(rgb.astype(int) + brighter, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def pairs_of(*rgbs: np.ndarray) -> list[tuple[int, int]]:
    prints = [nd.fingerprint(rgb) for rgb in rgbs]
    return [(a, b) for a, b, _ in nd.near_pairs([h for h, _ in prints],
                                                np.stack([t for _, t in prints]))]


def test_a_reencoded_or_reexposed_copy_is_near_another_image_is_not() -> None:
    original = scene(1)
    assert pairs_of(original, jpeg_copy(original, 60), jpeg_copy(original, 90, brighter=4),
                    scene(2)) == [(0, 1), (0, 2), (1, 2)]


def test_two_small_objects_on_one_background_are_not_near() -> None:
    background = np.full((128, 128, 3), 140, np.uint8)
    one, other = background.copy(), background.copy()
    cv2.rectangle(one, (20, 20), (44, 44), (30, 30, 30), -1)
    cv2.circle(other, (100, 90), 12, (240, 240, 240), -1)
    assert pairs_of(one, other) == []  # close on average, far where the objects are


def test_the_hash_index_finds_every_pair_a_full_comparison_finds() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, 300, dtype=np.int64)]
    for i in range(0, 60, 2):  # plant pairs 0..8 bits apart
        flips = rng.choice(64, size=i % 9, replace=False)
        hashes[i + 1] = hashes[i] ^ sum(1 << int(b) for b in flips)
    thumbs = np.zeros((300, nd.THUMB * nd.THUMB), np.uint8)  # all thumbnails equal
    found = {(a, b) for a, b, _ in nd.near_pairs(hashes, thumbs)}
    brute = {(a, b) for a in range(300) for b in range(a + 1, 300)
             if bin(hashes[a] ^ hashes[b]).count("1") <= nd.MAX_HASH_BITS}
    assert found == brute and len(brute) >= 30


@pytest.mark.parametrize("mode", ["report", "drop"])
def test_ingest_reports_or_drops_a_near_copy_under_another_label(
        tmp_path: Path, mode: str) -> None:
    tree = make_tree(tmp_path / "tree", per_class=10)
    copy = cv2.imread(str(tree / "ok" / "003_a.png"))
    cv2.imwrite(str(tree / "spot" / "copied.jpg"), jpeg_copy(copy, 85))
    yaml = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingest: "
                          f"{{near_duplicates: {mode}}}\n")
    assert pipeline.main([str(yaml), "--data", str(tree), "--out", str(tmp_path / "x")]) == 0
    (run,) = (tmp_path / "x" / "p").iterdir()
    report = json.loads((run / "ingest" / "ingest_report.json").read_text())["near_duplicates"]
    rejected = (run / "ingest" / "rejected.csv").read_text()
    if mode == "report":
        assert report["different_labels"] == 1
        (pair,) = report["different_labels_pairs"]
        assert sorted(Path(p).name for p in (pair["a"], pair["b"])) == ["003_a.png",
                                                                        "copied.jpg"]
        assert "copied.jpg" not in rejected
    else:
        assert report["different_labels"] == 0
        assert "copied.jpg" in rejected and "near-duplicate of" in rejected
        assert "003_a.png" in rejected


def test_on_casting_the_known_mislabelled_part_is_found(tmp_path: Path) -> None:
    casting = needs_shared("data", "casting")
    yaml = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingest: {}\n")
    assert pipeline.main([str(yaml), "--data", str(casting), "--out", str(tmp_path / "x")]) == 0
    (run,) = (tmp_path / "x" / "p").iterdir()
    report = json.loads((run / "ingest" / "ingest_report.json").read_text())["near_duplicates"]
    names = sorted(tuple(sorted(Path(p).name for p in (pair["a"], pair["b"])))
                   for pair in report["different_labels_pairs"])
    assert names == [("cast_def_0_4073.jpeg", "cast_ok_0_3158.jpeg"),
                     ("cast_def_0_4073.jpeg", "cast_ok_0_6582.jpeg")]
