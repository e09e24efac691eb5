"""Finding a run, a bundle and ``latest.json`` (:mod:`indvision.layout`): what is named stays
inside its folder, every read is bounded, and a pointer to another pipeline is refused."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from indvision import layout, lineage, signing
from indvision.errors import IndvisionError
from indvision.rundir import Run

LAYOUT_SOURCE = Path(layout.__file__)


def stand_in(folder: Path, pipeline: str = "line") -> Path:
    """A bundle folder with a model.json (enough: finding happens before any model loads)."""
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"pipeline": pipeline}))
    return folder


def fake_run(root: Path, pipeline: str = "line") -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"run_id": root.name, "pipeline": pipeline,
                                                    "status": "done", "stages": {}}))
    stand_in(root / "bundle", pipeline)
    return root


def point(folder: Path, **record: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.json").write_text(json.dumps(record))
    return folder


def test_layout_imports_only_the_standard_library_and_errors() -> None:
    tree = ast.parse(LAYOUT_SOURCE.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    outside = {name for name in imported
               if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}}
    assert outside == {"indvision.errors"}


def test_a_name_inside_the_folder_is_kept(tmp_path: Path) -> None:
    (tmp_path / "r1" / "bundle").mkdir(parents=True)
    found = layout.inside(tmp_path, "r1/bundle", "bundle", tmp_path / "latest.json")
    assert found == tmp_path / "r1" / "bundle"


@pytest.mark.parametrize("named, message", [
    ("ABSOLUTE", "leaves its folder"), ("../outside", "leaves its folder"),
    ("r1/../../outside", "leaves its folder"), ("C:\\outside", "leaves its folder"),
    ("link", "resolves outside its folder"), ("", "is not a path"), (None, "is not a path"),
])
def test_a_name_that_leaves_its_folder_is_one_line(tmp_path: Path, named: object,
                                                   message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "exports" / "line"
    folder.mkdir(parents=True)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    named = str(outside) if named == "ABSOLUTE" else named
    with pytest.raises(IndvisionError, match=message) as caught:
        layout.inside(folder, named, "bundle", folder / "latest.json")
    assert "\n" not in str(caught.value) and str(folder / "latest.json") in str(caught.value)


@pytest.mark.parametrize("find", [layout.run_of, lambda p: layout.bundle_of(p)[0]])
def test_a_run_a_bundle_or_a_pipeline_folder_finds_the_same_run(tmp_path: Path, find) -> None:
    exports = tmp_path / "exports" / "line"
    run = fake_run(exports / "r1")
    point(exports, run_dir="r1", bundle="r1/bundle", pipeline="line")
    expected = run if find is layout.run_of else run / "bundle"
    for given in (run, run / "bundle", exports):
        assert find(given).resolve() == expected.resolve()


def test_bundle_of_returns_the_one_read_of_latest_json(tmp_path: Path) -> None:
    exports = tmp_path / "exports" / "line"
    fake_run(exports / "r1")
    point(exports, bundle="r1/bundle", pipeline="line", model_json_sha256="abc")
    bundle, followed = layout.bundle_of(exports)
    assert followed is not None and followed.record["model_json_sha256"] == "abc"
    assert followed.path == exports / "latest.json" and bundle == followed.bundle
    assert layout.bundle_of(exports / "r1")[1] is None


def test_a_latest_json_over_1_mib_is_refused_by_every_finder(tmp_path: Path) -> None:
    """lineage's ``--from`` read latest.json whole (atomic.read_json): now bounded like the
    edge's."""
    exports = tmp_path / "exports" / "line"
    fake_run(exports / "r1")
    point(exports, run_dir="r1", bundle="r1/bundle", pad=" " * (layout.MAX_LATEST_BYTES + 1))
    for find in (lineage.run_folder, layout.bundle_of):
        with pytest.raises(IndvisionError, match=r"latest\.json larger than 1048576 bytes"):
            find(exports)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero (a device file)")
def test_a_latest_json_that_is_a_device_is_refused_unread(tmp_path: Path) -> None:
    exports = tmp_path / "exports" / "line"
    exports.mkdir(parents=True)
    (exports / "latest.json").symlink_to("/dev/zero")
    with pytest.raises(IndvisionError, match="not a regular file"):
        layout.read_latest(exports)


def test_a_latest_json_naming_another_pipelines_run_is_refused(tmp_path: Path) -> None:
    """lineage followed ``run_dir`` whatever pipeline the run was of; the edge already refused
    a bundle of another pipeline."""
    exports = tmp_path / "exports" / "line"
    fake_run(exports / "r1", pipeline="other-line")
    point(exports, run_dir="r1", bundle="r1/bundle", pipeline="line")
    with pytest.raises(IndvisionError, match="pipeline 'other-line', not 'line'"):
        lineage.run_folder(exports)
    bundle, followed = layout.bundle_of(exports)
    with pytest.raises(IndvisionError, match="pipeline 'other-line', not 'line'"):
        layout.check_pipeline(followed, json.loads((bundle / "model.json").read_text()))


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\b", "..", ".", "", "C:x"])
def test_a_pipeline_name_that_is_not_one_folder_name_is_refused(tmp_path: Path,
                                                                 name: str) -> None:
    """Run.create put runs in ``out_dir / pipeline`` as given: ``name: ../escape`` in a
    pipeline file wrote outside the exports folder."""
    exports = tmp_path / "box" / "exports"
    exports.mkdir(parents=True)
    with pytest.raises(IndvisionError, match="must be one folder name"):
        Run.create(exports, name, 0, {}, "h")
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["exports"]
    assert list(exports.iterdir()) == []


def test_a_plain_pipeline_name_is_its_folder_under_exports(tmp_path: Path) -> None:
    assert layout.pipeline_folder(tmp_path, "defect-line") == tmp_path / "defect-line"


def test_the_manifests_record_of_the_bundle_files(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    run.mkdir()
    assert layout.recorded_bundle_files(run) == {}
    files = {"bundle/model.json": "abc"}
    (run / "manifest.json").write_text(json.dumps({"stages": {"export": {
        "status": "done", "outputs": {"bundle": {"path": "bundle", "files": files}}}}}))
    assert layout.recorded_bundle_files(run) == files
    (run / "manifest.json").write_text(json.dumps({"stages": {"export": {"status": "failed"}}}))
    assert layout.recorded_bundle_files(run) == {}


def test_signing_reads_a_bounded_model_json(tmp_path: Path) -> None:
    """sign_bundle read model.json whole; a huge one is refused before anything is read."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with (bundle / "model.json").open("wb") as handle:  # sparse: nothing is written
        handle.truncate(layout.MAX_MODEL_JSON_BYTES + 1)
    private, _public = signing.keygen(tmp_path / "keys")
    with pytest.raises(IndvisionError, match=r"model\.json larger than"):
        signing.sign_bundle(bundle, private)
    assert not (bundle / "model.json.sig").exists()


def test_read_bounded_refuses_a_folder_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IndvisionError, match="is a folder, not a file"):
        layout.read_bounded(tmp_path, 10, "model file")
    with pytest.raises(IndvisionError, match="model file not found"):
        layout.read_bounded(tmp_path / "missing", 10, "model file")
    (tmp_path / "small").write_bytes(b"12345")
    assert layout.read_bounded(tmp_path / "small", 5, "x") == b"12345"
