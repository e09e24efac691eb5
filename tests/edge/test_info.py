"""edge info: a bundle's summary and its lineage chain."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from indvision import atomic, edge
from indvision.edge.info import lineage_chain
from tests.stages.conftest import verified_run  # noqa: F401


def bundle_at(exports: Path, run_id: str, parent: str | None = None) -> Path:
    meta = {"classes": ["ok", "dent"], "input_spec": {}, "files": {},
            "lineage": {"parent_run": parent, "parent_model_json_sha256": "ab" * 32,
                        "classes_added": ["dent"]} if parent else None}
    return atomic.write_json(exports / run_id / "bundle" / "model.json", meta).parent


def test_the_chain_follows_parents_beside_the_run_and_says_where_it_ends(tmp_path: Path) -> None:
    bundle_at(tmp_path, "a")
    bundle_at(tmp_path, "b", parent="a")
    child = bundle_at(tmp_path, "c", parent="b")
    chain = lineage_chain(child, json.loads((child / "model.json").read_text()))
    assert [(p["run_id"], p["found"]) for p in chain] == [("b", True), ("a", True)]
    orphan = bundle_at(tmp_path, "d", parent="gone")
    chain = lineage_chain(orphan, json.loads((orphan / "model.json").read_text()))
    assert [(p["run_id"], p["found"]) for p in chain] == [("gone", False)]
    loop = bundle_at(tmp_path, "e", parent="e")
    assert len(lineage_chain(loop, json.loads((loop / "model.json").read_text()))) == 50


def test_cli_info_describes_a_real_bundle(verified_run: Path, capsys) -> None:  # noqa: F811
    assert edge.main(["info", str(verified_run)]) == 0
    text = capsys.readouterr().out
    meta = json.loads((verified_run / "bundle" / "model.json").read_text())
    assert f"/{meta['provenance']['run_id']} (" in text
    assert f"classes    {', '.join(meta['classes'])}" in text
    assert "model.onnx (default): onnx" in text and "shippable" in text
    assert "lineage    none" in text
    assert edge.main(["info", str(verified_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lineage"] == []


def test_info_reads_latest_json_and_model_json_once_each(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What info checks is what it describes: one read of each record, not one per check."""
    folder = tmp_path / "exports" / "defect"
    bundle_at(folder, "r1")
    atomic.write_json(folder / "latest.json", {"bundle": "r1/bundle", "pipeline": None})
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    described = edge.info.summary(str(folder))
    assert described["classes"] == ["ok", "dent"]
    assert opened.count("latest.json") == 1
    assert opened.count("model.json") == 1
