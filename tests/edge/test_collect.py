"""--collect: which predictions are kept, the bounds, atomic writes, a folder ingest accepts."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic, pipeline
from indvision.edge.collect import CSV_NAME, CollectConfig, Collector, reasons_for
from indvision.errors import IndvisionError
from tests.conftest import draw_tiny, write_pipeline


def result(label: str, **scores: float) -> dict:
    return {"label": label, "score": scores[label], "scores": scores}


def test_reasons_uncertain_rejected_and_sample() -> None:
    config = CollectConfig(margin=0.2, band=0.1, sample=0.5)
    close_call = result("ok", ok=0.55, dent=0.45)
    assert reasons_for(close_call, config, None, None, draw=0.9) == ["uncertain"]
    sure_but_near_threshold = result("dent", ok=0.15, dent=0.85)
    assert reasons_for(sure_but_near_threshold, config, "ok", 0.2, 0.9) == ["uncertain"]
    sure = result("ok", ok=0.97, dent=0.03)
    assert reasons_for(sure, config, "ok", 0.5, draw=0.9) == []
    assert reasons_for(sure, config, "ok", 0.5, draw=0.1) == ["sample"]
    rejects = CollectConfig(rejected=True, sample=0.0)
    assert reasons_for(result("dent", ok=0.02, dent=0.98), rejects, "ok", 0.5, 0.9) == \
        ["rejected"]


def images_in(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}_a.png"
        image = draw_tiny("spot" if i % 2 else "ok", np.random.default_rng(i))
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def rows_of(folder: Path) -> list[dict]:
    with open(folder / CSV_NAME, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def collector(folder: Path, stream: io.StringIO | None = None, **settings: object) -> Collector:
    config = CollectConfig(**{"margin": 1.0, "sample": 0.0, "seed": 0, **settings})
    return Collector(folder, config, "ok", 0.5, "run-7", stream=stream or io.StringIO())


def test_kept_images_land_in_label_folders_with_a_row_each(tmp_path: Path) -> None:
    sources = images_in(tmp_path / "line", 4)
    keep = collector(tmp_path / "keep")
    for path in sources:
        assert keep.offer(result("dent", ok=0.4, dent=0.6), source=path) == ["uncertain"]
    keep.close()
    rows = rows_of(tmp_path / "keep")
    assert [r["file"] for r in rows] == [f"dent/{p.name}" for p in sources]
    assert rows[0]["source"] == str(sources[0]) and rows[0]["bundle_run"] == "run-7"
    assert rows[0]["reason"] == "uncertain" and float(rows[0]["margin"]) == pytest.approx(0.2)
    assert (tmp_path / "keep" / "dent" / sources[0].name).read_bytes() == sources[0].read_bytes()


def test_full_drops_the_oldest_and_says_so_once(tmp_path: Path) -> None:
    sources = images_in(tmp_path / "line", 5)
    said = io.StringIO()
    keep = collector(tmp_path / "keep", said, max_images=3)
    for path in sources:
        keep.offer(result("ok", ok=0.6, dent=0.4), source=path)
    keep.close()
    assert [r["file"] for r in rows_of(tmp_path / "keep")] == \
        [f"ok/{p.name}" for p in sources[2:]]
    assert sorted(p.name for p in (tmp_path / "keep" / "ok").iterdir()) == \
        [p.name for p in sources[2:]]
    assert said.getvalue().count("is full") == 1 and "oldest" in said.getvalue()


def test_full_can_stop_instead_and_a_byte_budget_counts_too(tmp_path: Path) -> None:
    sources = images_in(tmp_path / "line", 5)
    said = io.StringIO()
    size = sources[0].stat().st_size
    keep = collector(tmp_path / "keep", said, when_full="stop", max_bytes=int(size * 2.5))
    for path in sources:
        keep.offer(result("ok", ok=0.6, dent=0.4), source=path)
    keep.close()
    assert len(rows_of(tmp_path / "keep")) == 2
    assert "collection stopped" in said.getvalue()


def test_a_frame_is_kept_as_png(tmp_path: Path) -> None:
    keep = collector(tmp_path / "keep")
    frame = draw_tiny("spot", np.random.default_rng(1))
    keep.offer({"frame": 12, **result("ok", ok=0.5, dent=0.5)}, image=frame)
    keep.close()
    (row,) = rows_of(tmp_path / "keep")
    assert row["file"] == "ok/frame_00000012.png" and row["source"] == "frame 12"
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "keep" / row["file"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, frame)


def test_a_failed_write_leaves_no_half_file_and_is_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (source,) = images_in(tmp_path / "line", 1)
    said = io.StringIO()
    keep = collector(tmp_path / "keep", said)

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    keep.offer(result("ok", ok=0.5, dent=0.5), source=source)
    with pytest.raises(IndvisionError, match="No space left on device"):
        keep.close()
    monkeypatch.undo()
    assert [p for p in (tmp_path / "keep").rglob("*") if p.is_file()] == []
    assert said.getvalue().startswith("collect: error: ") and "predictions go on" in \
        said.getvalue()


def test_a_folder_that_cannot_be_written_fails_before_any_prediction(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(IndvisionError, match=f"--collect {blocker / 'keep'}: cannot write"):
        collector(blocker / "keep")


def test_a_collected_folder_sorted_by_a_person_is_valid_data(tmp_path: Path) -> None:
    sources = images_in(tmp_path / "line", 16)
    keep = collector(tmp_path / "keep")
    for i, path in enumerate(sources):
        label = "ok" if i % 2 == 0 else "spot"
        keep.offer(result(label, ok=0.5, spot=0.5), source=path)
    keep.close()
    atomic.write_text(tmp_path / "keep" / "notes.txt", "")  # what a person leaves behind
    yaml = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingest: {}\n")
    assert pipeline.main([str(yaml), "--data", str(tmp_path / "keep"),
                          "--out", str(tmp_path / "x")]) == 0


def planted_rows(folder: Path, files: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,source,time,bundle_run,label,score,margin,reason"]
    lines += [f"{name},x,t,r,ok,0.5,0.0,uncertain" for name in files]
    (folder / CSV_NAME).write_text("\n".join(lines) + "\n")


@pytest.mark.skipif(os.name != "posix", reason="links are POSIX here")
def test_rows_naming_files_outside_the_folder_are_never_deleted(tmp_path: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    for name in ("victim.txt", "absolute.txt", "linked.txt"):
        (victims / name).write_text("precious")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "out").symlink_to(victims)  # a folder inside pointing out
    planted_rows(keep, ["../victims/victim.txt", str(victims / "absolute.txt"),
                        "out/linked.txt"])
    said = io.StringIO()
    sources = images_in(tmp_path / "line", 3)
    take = collector(keep, said, max_images=1)
    for path in sources:
        take.offer(result("ok", ok=0.6, dent=0.4), source=path)
    take.close()
    assert sorted(p.read_text() for p in victims.iterdir()) == ["precious"] * 3
    assert [r["file"] for r in rows_of(keep)] == [f"ok/{sources[-1].name}"]
    assert "ignored, never deleted" in said.getvalue()


@pytest.mark.skipif(os.name != "posix", reason="links are POSIX here")
def test_a_planted_write_test_link_does_not_truncate_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / f".write-test-{os.getpid()}").symlink_to(victim)
    collector(keep).close()
    assert victim.read_text() == "precious"


@pytest.mark.skipif(os.name != "posix", reason="links are POSIX here")
def test_a_label_folder_that_is_a_link_out_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "ok").symlink_to(outside)
    (source,) = images_in(tmp_path / "line", 1)
    take = collector(keep)
    take.offer(result("ok", ok=0.6, dent=0.4), source=source)
    with pytest.raises(IndvisionError, match="is a link"):
        take.close()
    assert list(outside.iterdir()) == []


def test_a_writer_that_falls_behind_drops_and_counts_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from indvision.edge import collect

    gate = threading.Event()
    real_keep = Collector._keep
    monkeypatch.setattr(Collector, "_keep", lambda self, *item: (gate.wait(30),
                                                                  real_keep(self, *item)))
    (source,) = images_in(tmp_path / "line", 1)
    said = io.StringIO()
    take = collector(tmp_path / "keep", said)
    extra = 5
    for _ in range(collect.QUEUE_BOUND + 1 + extra):  # one is held by the blocked writer
        take.offer(result("ok", ok=0.6, dent=0.4), source=source)
    assert take.dropped >= extra and take.queue.qsize() <= collect.QUEUE_BOUND
    gate.set()
    take.close()
    assert said.getvalue().count("writer is behind") == 1
    assert len(rows_of(tmp_path / "keep")) == collect.QUEUE_BOUND + 1 + extra - take.dropped


def test_a_nearly_full_disk_stops_collecting_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    from indvision.edge import collect

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(collect.shutil, "disk_usage",
                        lambda _path: usage(10**9, 10**9 - 1000, 1000))
    sources = images_in(tmp_path / "line", 3)
    said = io.StringIO()
    take = collector(tmp_path / "keep", said)
    reasons = [take.offer(result("ok", ok=0.6, dent=0.4), source=p) for p in sources]
    take.close()
    assert reasons[0] == ["uncertain"]  # predictions go on; the offer is weighed
    assert [p for p in (tmp_path / "keep").rglob("*") if p.is_file()] == []
    assert said.getvalue().count("collection stopped") == 1 and "MB free" in said.getvalue()


def test_files_left_by_a_crash_count_against_the_limit_and_are_kept(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    leftovers = images_in(keep / "ok", 2)  # written, then a crash before collected.csv
    sources = images_in(tmp_path / "line", 3)
    said = io.StringIO()
    take = collector(keep, said, max_images=3)
    for path in sources:
        take.offer(result("dent", ok=0.4, dent=0.6), source=path)
    take.close()
    assert [r["file"] for r in rows_of(keep)] == [f"dent/{sources[-1].name}"]
    assert all(path.is_file() for path in leftovers)
    assert "2 files not in collected.csv" in said.getvalue()


def test_a_folder_swapped_for_a_link_mid_run_is_not_followed_by_drop_oldest(
        tmp_path: Path) -> None:
    """The collect folder is moved away and a link to another folder put in its place while
    the collector runs: making room unlinks the oldest file in the folder it opened, never the
    same-named file the link leads to."""
    sources = images_in(tmp_path / "line", 3)
    first = collector(tmp_path / "keep", max_images=2)
    for path in sources[:2]:
        first.offer(result("ok", ok=0.6, dent=0.4), source=path)
    first.close()
    keep = collector(tmp_path / "keep", max_images=2)  # opens the folder with two rows
    victim = tmp_path / "victim"
    (victim / "ok").mkdir(parents=True)
    precious = victim / "ok" / sources[0].name  # the name the oldest row gives
    precious.write_bytes(b"not the collector's")
    os.rename(tmp_path / "keep", tmp_path / "moved")
    (tmp_path / "keep").symlink_to(victim, target_is_directory=True)
    keep.offer(result("ok", ok=0.6, dent=0.4), source=sources[2])
    keep.close()
    assert precious.read_bytes() == b"not the collector's"
    assert not (tmp_path / "moved" / "ok" / sources[0].name).exists()  # its own oldest went
