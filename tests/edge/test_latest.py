"""latest.json cannot send a device outside its exports folder or to another pipeline's
bundle (:mod:`indvision.layout`). Stand-in bundles (a model.json) are enough: the
refusals happen before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indvision.edge.runtime import resolve_bundle
from indvision.errors import IndvisionError


def stand_in(folder: Path, pipeline: str = "line") -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"pipeline": pipeline, "classes": ["ok"],
                                                   "input_spec": {}, "files": {}}))
    return folder


def follow(exports: Path, bundle: str, pipeline: str = "line") -> Path:
    exports.mkdir(parents=True, exist_ok=True)
    (exports / "latest.json").write_text(json.dumps({"bundle": bundle, "pipeline": pipeline}))
    return exports


def test_a_bundle_inside_the_folder_is_followed(tmp_path: Path) -> None:
    exports = tmp_path / "exports" / "line"
    bundle = stand_in(exports / "r1" / "bundle")
    assert resolve_bundle(follow(exports, "r1/bundle")).resolve() == bundle.resolve()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "link"])
def test_latest_json_pointing_outside_its_folder_is_refused(tmp_path: Path, kind: str) -> None:
    elsewhere = stand_in(tmp_path / "attacker" / "bundle")
    exports = tmp_path / "exports" / "line"
    exports.mkdir(parents=True)
    target = {"absolute": str(elsewhere), "dotdot": "../../attacker/bundle",
              "link": "r9/bundle"}[kind]
    if kind == "link":
        (exports / "r9").symlink_to(elsewhere.parent, target_is_directory=True)
    with pytest.raises(IndvisionError, match=r"latest\.json may only name a bundle inside it"):
        resolve_bundle(follow(exports, target))


def test_a_bundle_of_another_pipeline_is_refused(tmp_path: Path) -> None:
    exports = tmp_path / "exports" / "line"
    stand_in(exports / "r1" / "bundle", pipeline="other-line")
    with pytest.raises(IndvisionError, match="pipeline 'other-line', not 'line'"):
        resolve_bundle(follow(exports, "r1/bundle"))


def test_a_latest_json_over_the_bound_is_refused_in_one_line(tmp_path: Path) -> None:
    exports = tmp_path / "exports" / "line"
    stand_in(exports / "r1" / "bundle")
    padding = " " * (2**20 + 1)
    (exports / "latest.json").write_text(json.dumps({"bundle": "r1/bundle", "pad": padding}))
    with pytest.raises(IndvisionError, match=r"latest\.json: latest\.json larger than") as raised:
        resolve_bundle(exports)
    assert "\n" not in str(raised.value)
