"""What a parent keeps for its children, and finding a parent again (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indvision import lineage
from indvision.errors import IndvisionError


def rows(label: str, objects: int, views: int = 1, split: str = "train") -> list[dict]:
    return [{"path": f"/d/{label}/{o}_{v}.png", "label": label, "split": split,
             "group": f"{label}{o}", "sha256": f"{label}{o}{v}"}
            for o in range(objects) for v in range(views)]


def test_exemplars_are_bounded_per_class_whole_objects_and_seeded() -> None:
    data = rows("ok", 40, views=2) + rows("dent", 3, views=2)
    chosen = lineage.choose_exemplars(data, per_class=10, seed=1)
    by_class = {c: [r for r in chosen if r["label"] == c] for c in ("ok", "dent")}
    assert len(by_class["ok"]) == 10 and len(by_class["dent"]) == 6  # a rare class: all of it
    groups = {r["group"] for r in by_class["ok"]}
    assert all(sum(r["group"] == g for r in chosen) == 2 for g in groups)  # both views
    assert chosen == lineage.choose_exemplars(data, per_class=10, seed=1)
    assert chosen != lineage.choose_exemplars(data, per_class=10, seed=2)


def test_a_large_test_split_is_sampled_per_class_in_proportion() -> None:
    test = rows("ok", 300, split="test") + rows("dent", 100, split="test")
    assert lineage.sample_test(test, 1000, seed=0) == test
    kept = lineage.sample_test(test, 100, seed=0)
    assert sum(r["label"] == "ok" for r in kept) == 75
    assert sum(r["label"] == "dent" for r in kept) == 25


def fake_run(root: Path, status: str = "done", exported: bool = True) -> Path:
    root.mkdir(parents=True)
    stages = {"ingest": {"status": "done", "outputs": {}}}
    if exported:
        stages["export"] = {"status": "done", "outputs": {}}
    (root / "manifest.json").write_text(json.dumps(
        {"run_id": root.name, "pipeline": "defect", "status": status, "stages": stages}))
    return root


def test_from_names_a_run_a_bundle_in_one_or_the_latest(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "exports" / "defect" / "r1")
    (run / "bundle").mkdir()
    (run / "bundle" / "model.json").write_text("{}")
    (tmp_path / "exports" / "defect" / "latest.json").write_text(
        json.dumps({"run_dir": "r1"}))
    for given in (run, run / "bundle", tmp_path / "exports" / "defect"):
        assert lineage.run_folder(given).resolve() == run.resolve()


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("copied bundle", "copied out of its run folder"),
    ("empty", "not a run folder"),
    ("failed", "is 'failed'; only a finished, exported run can be a parent"),
    ("unexported", "never exported"),
    ("no keep", "kept no replay images"),
])
def test_a_parent_that_cannot_be_one_is_one_clear_line(tmp_path: Path, case: str,
                                                        message: str) -> None:
    given = tmp_path / "parent"
    if case == "copied bundle":
        given.mkdir()
        (given / "model.json").write_text("{}")
    elif case == "empty":
        given.mkdir()
    elif case == "failed":
        fake_run(given, status="failed")
    elif case == "unexported":
        fake_run(given, exported=False)
    elif case == "no keep":
        fake_run(given)
    with pytest.raises(IndvisionError, match=message) as caught:
        lineage.open_parent(given)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("named", ["ABSOLUTE", "../outside", "r1/../../outside", "link",
                                   "C:\\outside", ""])
def test_latest_cannot_lead_from_out_of_the_exports_folder(tmp_path: Path, named: str) -> None:
    """``latest.json``'s ``run_dir`` naming a run outside ``exports/<pipeline>`` (absolute,
    ``..``, a link out) is refused in one line, never followed."""
    outside = fake_run(tmp_path / "outside")
    exports = tmp_path / "exports" / "defect"
    fake_run(exports / "r1")
    (exports / "link").symlink_to(outside)
    named = str(outside) if named == "ABSOLUTE" else named
    (exports / "latest.json").write_text(json.dumps({"run_dir": named}))
    with pytest.raises(IndvisionError, match=r"leaves its folder|resolves outside|not a path") \
            as caught:
        lineage.run_folder(exports)
    assert "\n" not in str(caught.value) and "latest.json" in str(caught.value)


def test_a_kept_row_naming_a_file_outside_keep_is_refused(tmp_path: Path) -> None:
    """``keep.csv``'s ``file`` was joined to ``keep/`` as written: a row
    ``../../elsewhere/<sha256>.png`` (its stem still the sha256) made the child train on a file
    the manifest never checked."""
    keep = tmp_path / "run" / "keep"
    (keep / "images").mkdir(parents=True)
    digest = "ab" * 32
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / f"{digest}.png").write_bytes(b"not checked")
    (keep / "keep.csv").write_text("file,label,split,group,sha256,width,height\n"
                                   f"../../elsewhere/{digest}.png,ok,train,,{digest},,\n")
    with pytest.raises(IndvisionError, match="leaves its folder") as caught:
        lineage._kept_rows(keep, ["ok"])
    assert "\n" not in str(caught.value) and "keep.csv" in str(caught.value)
