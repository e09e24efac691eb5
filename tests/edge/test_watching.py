"""Watching (:mod:`indvision.edge.watching`): folders being filled (per image, per object) and
video frames."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import edge
from indvision.edge import EdgeClassifier, ObjectRule
from indvision.errors import IndvisionError
from tests.edge.conftest import VIEWS_REGEX, write_views


def test_watch_folder_predicts_each_file_once(classifier: EdgeClassifier, eval_tree: Path,
                                              tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted((eval_tree / "spot").iterdir())[:2]:
        shutil.copy(source, folder / source.name)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n half")
    lines: list[dict] = []
    count = edge.watch(classifier, str(folder), lines.append, interval=0.01, max_frames=3)
    assert count == 3
    assert [Path(r["path"]).name for r in lines] == ["000_a.png", "001_a.png", "zz_broken.png"]
    assert "error" in lines[2] and "label" in lines[0]


def test_watch_video_predicts_frames_as_rgb(classifier: EdgeClassifier, tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(4):  # strongly coloured frames: RGB and BGR give different scores
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 0] = 30 + 40 * i
        frame[:, :, 2] = 230
        cv2.circle(frame, (32, 24), 8, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    lines: list[dict] = []
    assert edge.watch(classifier, str(path), lines.append, max_frames=10) == 4  # ends at EOF
    capture = cv2.VideoCapture(str(path))
    for line in lines:
        ok, bgr = capture.read()
        assert ok
        rgb = classifier.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        as_bgr = classifier.predict(np.ascontiguousarray(bgr))
        assert line["scores"] == rgb["scores"]
        assert line["scores"] != as_bgr["scores"]
    capture.release()
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    lines.clear()
    assert edge.watch(classifier, str(path), lines.append, max_frames=2) == 2


def test_watch_rejects_an_unknown_source(classifier: EdgeClassifier, tmp_path: Path) -> None:
    with pytest.raises(IndvisionError, match="not a folder, video file or camera"):
        edge.watch(classifier, str(tmp_path / "nothing"), print)


# ----------------------------------------------------------------------------- per object

def test_watch_folder_emits_an_object_once_it_has_its_views(classifier: EdgeClassifier,
                                                            tmp_path: Path) -> None:
    paths = write_views(tmp_path / "views")
    (tmp_path / "views" / "2_top.png").unlink()  # object 2 has one view so far
    lines: list[dict] = []
    count = edge.watch(classifier, str(tmp_path / "views"), lines.append, interval=0.01,
                       max_frames=5, objects=ObjectRule(VIEWS_REGEX, views=2, timeout=60))
    assert count == 5  # views
    assert [line["group"] for line in lines] == ["0", "1", "2"]  # 2: flushed at the end
    expected = classifier.predict_groups([p for p in paths if p.name != "2_top.png"],
                                         VIEWS_REGEX)
    for line, want in zip(lines, expected, strict=True):
        assert line["views"] == want["members"]
        assert line["label"] == want["label"] and line["decided_by"] == want["decided_by"]
        assert line["scores"] == pytest.approx(want["scores"], abs=1e-6)


def test_watch_folder_completes_an_object_after_its_timeout(classifier: EdgeClassifier,
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "views"
    write_views(folder, parts=2)
    late = (folder / "1_top.png").read_bytes()
    (folder / "1_top.png").unlink()

    def arrive_late() -> None:  # long after object 1's 0.05 s timeout
        time.sleep(1.0)
        (folder / ".1_top.png").write_bytes(late)
        (folder / ".1_top.png").rename(folder / "1_top.png")

    writer = threading.Thread(target=arrive_late)
    writer.start()
    lines: list[dict] = []
    try:
        edge.watch(classifier, str(folder), lines.append, interval=0.01, max_frames=4,
                   objects=ObjectRule(VIEWS_REGEX, views=None, timeout=0.05))
    finally:
        writer.join()
    assert [(line["group"], [Path(v).name for v in line["views"]]) for line in lines] == [
        ("0", ["0_side.png", "0_top.png"]), ("1", ["1_side.png"]), ("1", ["1_top.png"])]


def test_cli_watch_per_object_with_an_unreadable_view(bundle: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "views"
    paths = write_views(folder, parts=2)
    (folder / "1_top.png").write_bytes(b"\x89PNG\r\n\x1a\n half")
    assert edge.main(["watch", str(bundle), str(folder), "--group-regex", VIEWS_REGEX,
                      "--views", "2", "--object-timeout", "60", "--interval", "0.01",
                      "--max-frames", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("group") for line in lines] == ["0", None, "1"]
    assert lines[1] == {"path": str(folder / "1_top.png"), "error": lines[1]["error"]}
    assert lines[2]["views"] == [str(folder / "1_side.png")]  # decided on its readable view
    want = EdgeClassifier(bundle).predict_groups(paths[:2], VIEWS_REGEX)[0]
    assert lines[0]["views"] == want["members"] and lines[0]["label"] == want["label"]
    # --per-image: the old lines
    assert edge.main(["watch", str(bundle), str(folder), "--group-regex", VIEWS_REGEX,
                      "--per-image", "--interval", "0.01", "--max-frames", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["path"]).name for line in lines] == [
        "0_side.png", "0_top.png", "1_side.png", "1_top.png"]


def test_cli_watch_object_options_need_a_group_rule(bundle: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert edge.main(["watch", str(bundle), str(tmp_path), "--views", "2"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --views and --object-timeout need a group rule")
    assert edge.main(["watch", str(bundle), str(tmp_path), "--group-regex", VIEWS_REGEX,
                      "--views", "0"]) == 1
    assert "--views must be at least 1" in capsys.readouterr().err


def test_watch_video_stays_per_frame_with_a_group_rule(classifier: EdgeClassifier,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 120, np.uint8))
    writer.release()
    lines: list[dict] = []
    assert edge.watch(classifier, str(path), lines.append,
                      objects=ObjectRule(VIEWS_REGEX, views=2)) == 3
    assert [line["frame"] for line in lines] == [0, 1, 2]


def test_watch_writes_heatmaps_for_folder_images_and_video_frames(classifier: EdgeClassifier,
                                                                  eval_tree: Path,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted((eval_tree / "spot").iterdir())[:2]:
        shutil.copy(source, folder / source.name)
    lines: list[dict] = []
    edge.watch(classifier, str(folder), lines.append, interval=0.01, max_frames=2,
               heatmaps=tmp_path / "maps")
    assert [Path(line["heatmap"]).name for line in lines] == ["000_a.heatmap.png",
                                                              "001_a.heatmap.png"]
    plain = classifier.predict([line["path"] for line in lines])
    assert [line["scores"] for line in lines] == [p["scores"] for p in plain]
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(2):
        writer.write(np.full((48, 64, 3), 120, np.uint8))
    writer.release()
    frames: list[dict] = []
    edge.watch(classifier, str(video), frames.append, heatmaps=tmp_path / "maps")
    assert [Path(f["heatmap"]).name for f in frames] == ["frame_000000.heatmap.png",
                                                         "frame_000001.heatmap.png"]
    assert all(cv2.imread(f["heatmap"]).shape[:2] == (40, 40) for f in frames)
    with pytest.raises(IndvisionError, match="per image"):
        edge.watch(classifier, str(folder), frames.append,
                   objects=ObjectRule(VIEWS_REGEX, 2, None), heatmaps=tmp_path / "maps")
