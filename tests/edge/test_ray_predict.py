"""Batch inference on Ray Data (:mod:`indvision.edge.ray_predict`): the same answers as the local
``predict``, bad images as error rows, objects fused after the map, refusals in one line.
Runs on a local Ray (``num_cpus=2``); skips where the ``[scale]`` extra is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from indvision import edge
from indvision.edge import EdgeClassifier
from indvision.edge import ray_predict as scale
from indvision.edge.ray_predict import Job
from indvision.errors import IndvisionError
from tests.edge.conftest import VIEWS_REGEX, write_views
from tests.stages.conftest import verified_run  # noqa: F401

ray = pytest.importorskip("ray", reason="Ray is the optional [scale] extra: "
                                        "pip install -e '.[scale]'")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def read_jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for part in sorted(folder.iterdir())
            for line in part.read_text(encoding="utf-8").splitlines()]


def test_ray_predict_gives_the_local_answers_and_error_rows(
        bundle: Path, eval_tree: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    images = sorted((eval_tree / "ok").iterdir()) + sorted((eval_tree / "spot").iterdir())
    listing = tmp_path / "archive.txt"  # a list file: one path a line, relative to it
    listing.write_text("\n".join([*map(str, images), "# a comment", "broken.png"]) + "\n")
    out = tmp_path / "results.jsonl"
    code = edge.main(["predict", str(bundle), str(listing), "--ray", "--out", str(out),
                      "--actors", "2"])
    assert code == 1  # one image could not be read: the job finished, the exit code says so
    assert "17 images on 2 actor(s): 17 rows" in capsys.readouterr().err
    rows = {row["path"]: row for row in read_jsonl(out)}
    assert set(rows) == {*map(str, images), str(bad)}
    assert rows[str(bad)]["error"] and rows[str(bad)]["label"] is None
    want = EdgeClassifier(bundle).predict([str(p) for p in images])
    for path, expected in zip(images, want, strict=True):
        row = rows[str(path)]
        assert row["error"] is None and row["label"] == expected["label"]
        assert row["score"] == pytest.approx(expected["score"], abs=1e-6)
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert not list(tmp_path.glob(".results.jsonl.partial-*"))  # renamed into place


def test_ray_predict_fuses_objects_after_the_map(bundle: Path, tmp_path: Path) -> None:
    paths = write_views(tmp_path / "views")
    broken = tmp_path / "views" / "1_back.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "objects.parquet"
    done = scale.run(Job(str(bundle), out, group_regex=VIEWS_REGEX),
                          sorted((tmp_path / "views").iterdir()))
    assert done["errors"] == 1
    rows = pq.read_table(out).to_pylist()
    errors = [r for r in rows if r["error"] is not None]
    assert [r["path"] for r in errors] == [str(broken)]
    objects = {r["group"]: r for r in rows if r["error"] is None}
    want = EdgeClassifier(bundle).predict_groups(paths, VIEWS_REGEX)
    assert set(objects) == {w["group"] for w in want} == {"0", "1", "2"}
    for expected in want:
        row = objects[expected["group"]]
        assert row["views"] == expected["members"]
        assert row["label"] == expected["label"]
        assert row["decided_by"] == expected["decided_by"]
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--ray"], "--ray needs --out"),
    (["--ray", "--out", "r.csv"], "name it .parquet or .jsonl"),
    (["--ray", "--out", "r.jsonl", "--collect", "c"], "--collect works on the local path"),
    (["--out", "r.jsonl"], "--out, --actors and --threads go with --ray"),
    (["--ray", "--out", "r.jsonl", "--threads", "0"], "must be at least 1"),
])
def test_ray_predict_refuses_bad_flags_in_one_line(
        bundle: Path, eval_tree: Path, args: list[str], message: str,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert edge.main(["predict", str(bundle), str(eval_tree), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_ray_predict_never_overwrites_results(bundle: Path, eval_tree: Path,
                                              tmp_path: Path) -> None:
    (tmp_path / "done.parquet").mkdir()
    with pytest.raises(IndvisionError, match="already exists"):
        Job(str(bundle), tmp_path / "done.parquet")


def write_parts(folder: Path, suffix: str, parts: int, rows: int) -> None:
    """A result folder as Ray's writers leave it: ``parts`` files of read rows, the last one
    ending in an unreadable image's row (after hundreds of readable ones)."""
    import pyarrow as pa

    folder.mkdir()
    good = {"label": "ok", "score": 0.9, "scores": {"ok": 0.9, "spot": 0.1}, "error": None}
    bad = {"label": None, "score": None, "scores": None, "error": "not an image"}
    for part in range(parts):
        table = [{"path": f"/x/{part}_{i}.png", **good} for i in range(rows)]
        if part == parts - 1:
            table.append({"path": "/x/ok/broken.png", **bad})
        if suffix == ".jsonl":
            text = "".join(json.dumps(row) + "\n" for row in table)
            (folder / f"part_{part:06d}.json").write_text(text, encoding="utf-8")
        else:
            pq.write_table(pa.Table.from_pylist(table, schema=scale.schema(["ok", "spot"],
                                                                          False)),
                           folder / f"part_{part:06d}.parquet")


@pytest.mark.parametrize("suffix", scale.WRITERS)
@pytest.mark.parametrize(("parts", "rows"), [(1, 12000), (3, 300)])  # past one JSON block
def test_count_rows_reads_a_late_error_row_with_the_written_schema(
        tmp_path: Path, suffix: str, parts: int, rows: int) -> None:
    folder = tmp_path / f"results{suffix}"
    write_parts(folder, suffix, parts, rows)
    assert scale.count_rows(folder, suffix) == (parts * rows + 1, 1)


@pytest.fixture(scope="module")
def late_error_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 readable tiny PNGs, then (last in sorted order) a file that is not an image: its
    error row comes after every block's readable rows."""
    import cv2
    import numpy as np

    from tests.conftest import draw_tiny

    folder = tmp_path_factory.mktemp("late-error") / "ok"
    folder.mkdir()
    for i in range(300):
        image = draw_tiny(("ok", "spot", "scratch")[i % 3], np.random.default_rng(i))
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "zzzz_broken.png").write_text("not an image")
    return folder


def rows_by_path(out: Path) -> dict[str, dict]:
    rows = (pq.read_table(out).to_pylist() if out.suffix == ".parquet" else read_jsonl(out))
    return {row["path"]: {k: v for k, v in row.items() if v is not None} for row in rows}


@pytest.mark.parametrize(("suffix", "actors"), [(".jsonl", "1"), (".jsonl", "2"),
                                                (".parquet", "2")])
def test_a_late_error_row_keeps_every_row_equal_to_local_predict(
        bundle: Path, late_error_tree: Path, tmp_path: Path, suffix: str, actors: str,
        capsys: pytest.CaptureFixture) -> None:
    assert edge.main(["predict", str(bundle), str(late_error_tree)]) == 1
    local = {row["path"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    out = tmp_path / f"results{suffix}"
    code = edge.main(["predict", str(bundle), str(late_error_tree), "--ray", "--out", str(out),
                      "--actors", actors])
    err = capsys.readouterr().err  # main returned: no exception escaped (Ray's own logging
    assert code == 1 and "301 rows" in err  # may print to a stream pytest closed; not ours)
    got = rows_by_path(out)
    assert set(got) == set(local) and len(got) == 301
    for path, want in local.items():
        assert got[path].keys() == want.keys(), path
        assert got[path].get("error") == want.get("error")
        assert got[path].get("label") == want.get("label")
        assert got[path].get("scores", {}) == pytest.approx(want.get("scores", {}), abs=1e-6)


def test_a_failed_count_keeps_the_written_rows_and_says_so(
        bundle: Path, late_error_tree: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def broken(folder: Path, suffix: str) -> tuple[int, int]:
        raise OSError("disk went away")

    monkeypatch.setattr(scale, "count_rows", broken)
    out = tmp_path / "kept.jsonl"
    code = edge.main(["predict", str(bundle), str(late_error_tree), "--ray", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1  # main returned: the error was one line, not an exception
    assert "every row was written" in err and "disk went away" in err
    assert len(read_jsonl(out)) == 301  # renamed into place before the count
