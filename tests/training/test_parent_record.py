"""A child warm-starts from the parent's bytes its ingest recorded (``ingest/parent.json``),
read once: a parent changed after that record is refused — even when the parent's own
manifest was rewritten to match, which the parent's manifest alone does not catch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from indvision import atomic, signing
from indvision.errors import IndvisionError

pytest.importorskip("keras", reason="warm start loads Keras models (indvision[train])")

from indvision.training import phases
from indvision.training.prepare import Prepared
from tests.test_checked_model import hidden_weight, keras_bytes, parent_run, tiny_model


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("blobs")
    return {"recorded": keras_bytes(tiny_model(0.5), folder),
            "later": keras_bytes(tiny_model(9.0), folder)}


def child_prepared(tmp_path: Path, model: Path) -> Prepared:
    """What ``prepare`` hands a member of a child whose ingest recorded ``model`` as it is now."""
    record = atomic.write_json(tmp_path / "child" / "ingest" / "parent.json", {
        "run_id": "parent", "model": str(model), "model_sha256": atomic.sha256_file(model),
        "classes_added": []})
    return Prepared(["ok", "bad"], 1, 1, None, None, "none", atomic.read_json(record), record)


def test_a_parent_changed_after_the_childs_ingest_is_refused_by_warm_start(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    model = parent_run(tmp_path / "parent", blobs["recorded"])
    prepared = child_prepared(tmp_path, model)
    model.write_bytes(blobs["later"])  # the parent changes, its manifest rewritten to match
    manifest_path = model.parent.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stages"]["train"]["outputs"]["model"]["sha256"] = hashlib.sha256(
        blobs["later"]).hexdigest()
    atomic.write_json(manifest_path, manifest)
    child = tiny_model(0.0)
    refused = r"model\.keras: sha256 .* recorded in .*ingest/parent\.json"
    with pytest.raises(IndvisionError, match=refused) as err:
        phases._start_from_parent(child, prepared.parent_model, seed=0)
    assert "\n" not in str(err.value)
    assert hidden_weight(child) == 0.0  # nothing of the changed parent reached the child


def test_the_recorded_parent_warm_starts_the_child(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    model = parent_run(tmp_path / "parent", blobs["recorded"])
    child = tiny_model(0.0)
    assert phases._start_from_parent(child, child_prepared(tmp_path, model).parent_model,
                                     seed=0) == ("same", None)
    assert hidden_weight(child) == 0.5
