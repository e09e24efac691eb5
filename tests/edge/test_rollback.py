"""A ``latest.json`` pointed at an older signed bundle of the same pipeline is a rollback:
refused in one line unless a person asks (``--allow-rollback``), under trusted keys and only
through ``latest.json`` (:mod:`indvision.edge.accepted`). Real signed bundles, built by hand
(a tiny constant ONNX graph, verified and signed with a real key): no training needed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic, signing
from indvision.edge import EdgeClassifier
from indvision.edge.cli import main
from indvision.errors import IndvisionError

onnx = pytest.importorskip("onnx", reason="building the test graph needs onnx (pip install onnx)")
pytest.importorskip("cryptography", reason="signatures need cryptography")
SIZE = 8
OLD, NEW = ("20261201-000000-aaaa", "2026-12-01T00:00:00+00:00"), \
    ("20261205-000000-bbbb", "2026-12-05T00:00:00+00:00")


def tiny_onnx() -> bytes:
    """An ONNX graph answering softmax([0, 2]) for every image."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros((3, 2), np.float32), "w"),
             numpy_helper.from_array(np.asarray([0.0, 2.0], np.float32), "b"),
             numpy_helper.from_array(np.asarray([1, 2], np.int64), "axes")]
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])
    model = helper.make_model(helper.make_graph(nodes, "tiny", [image], [probs], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return signing.keygen(tmp_path / "keys")


def signed_bundle(exports: Path, run: tuple[str, str], private: Path,
                  pipeline: str = "line") -> Path:
    """``exports/<run_id>/bundle``: a verified model.onnx, provenance as export writes it,
    signed with ``private``."""
    folder = exports / run[0] / "bundle"
    folder.mkdir(parents=True)
    data = tiny_onnx()
    (folder / "model.onnx").write_bytes(data)
    atomic.write_json(folder / "model.json", {
        "pipeline": pipeline, "classes": ["ok", "bad"],
        "input_spec": {"height": SIZE, "width": SIZE},
        "files": {"model.onnx": {"format": "onnx", "sha256": hashlib.sha256(data).hexdigest(),
                                 "verified": True, "shippable": True}},
        "decision": {"good_class": "ok", "threshold": 0.5},
        "provenance": {"run_id": run[0], "pipeline": pipeline, "created": run[1]}})
    signing.sign_bundle(folder, private)
    return folder


def point(exports: Path, run: tuple[str, str], pipeline: str = "line") -> Path:
    """Rewrite ``exports/latest.json`` as verify does, at ``run``'s bundle."""
    model_json = (exports / run[0] / "bundle" / "model.json").read_bytes()
    atomic.write_json(exports / "latest.json", {
        "run_id": run[0], "bundle": f"{run[0]}/bundle", "pipeline": pipeline,
        "model_json_sha256": hashlib.sha256(model_json).hexdigest()})
    return exports


@pytest.fixture
def pair(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """``exports/line`` with an older and a newer signed bundle, latest.json at the newer."""
    exports = tmp_path / "exports" / "line"
    for run in (OLD, NEW):
        signed_bundle(exports, run, keys[0])
    return point(exports, NEW)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), 100, np.uint8))
    return path


def state(folder: Path) -> dict:
    return json.loads((folder / "accepted.json").read_text())["pipelines"]


def test_latest_json_flipped_to_an_older_signed_bundle_is_refused_in_one_line(
        pair: Path, keys: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture,
        _state_in_tmp: Path) -> None:
    trust = ["--trust", str(keys[1])]
    assert main(["predict", str(pair), str(image), *trust]) == 0
    assert state(_state_in_tmp)["line"]["run_id"] == NEW[0]
    capsys.readouterr()
    point(pair, OLD)  # whoever can write latest.json: back to the replaced model
    assert main(["predict", str(pair), str(image), *trust]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert (f"latest.json: points at {OLD[0]} (created {OLD[1]}), older than {NEW[0]} "
            f"(created {NEW[1]}) accepted before for pipeline 'line'") in captured.err
    assert captured.err.rstrip().endswith("pass --allow-rollback to run it")
    assert state(_state_in_tmp)["line"]["run_id"] == NEW[0]


def test_allow_rollback_runs_it_and_records_it(
        pair: Path, keys: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture,
        _state_in_tmp: Path) -> None:
    trust = ["--trust", str(keys[1])]
    assert main(["predict", str(pair), str(image), *trust]) == 0
    point(pair, OLD)
    capsys.readouterr()
    assert main(["predict", str(pair), str(image), *trust, "--allow-rollback"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "bad"
    assert state(_state_in_tmp)["line"]["run_id"] == OLD[0]
    assert main(["predict", str(point(pair, NEW)), str(image), *trust]) == 0  # forward again


def test_a_newer_bundle_is_accepted_and_recorded(
        pair: Path, keys: tuple[Path, Path], _state_in_tmp: Path) -> None:
    point(pair, OLD)
    assert EdgeClassifier(pair, trusted_keys=[keys[1]]).signed_by is not None
    assert state(_state_in_tmp)["line"] == {"run_id": OLD[0], "created": OLD[1],
                                            "key_id": signing.key_id(
                                                signing.load_public_key(keys[1]))}
    EdgeClassifier(point(pair, NEW), trusted_keys=[keys[1]])
    assert state(_state_in_tmp)["line"]["run_id"] == NEW[0]
    EdgeClassifier(pair, trusted_keys=[keys[1]])  # the same bundle again is no rollback
    with pytest.raises(IndvisionError, match="older than"):
        EdgeClassifier(point(pair, OLD), trusted_keys=[keys[1]])


def test_the_same_created_time_is_ordered_by_run_id(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    exports = tmp_path / "exports" / "line"
    first, second = ("20261205-000000-aaaa", NEW[1]), ("20261205-000000-bbbb", NEW[1])
    for run in (first, second):
        signed_bundle(exports, run, keys[0])
    EdgeClassifier(point(exports, second), trusted_keys=[keys[1]])
    with pytest.raises(IndvisionError, match=f"points at {first[0]} .* older than {second[0]}"):
        EdgeClassifier(point(exports, first), trusted_keys=[keys[1]])


def test_no_trusted_key_or_a_bundle_named_directly_is_not_checked(
        pair: Path, keys: tuple[Path, Path], _state_in_tmp: Path) -> None:
    EdgeClassifier(point(pair, OLD))  # no keys: created is only what the file says
    EdgeClassifier(point(pair, NEW))
    assert not (_state_in_tmp / "accepted.json").exists()
    EdgeClassifier(pair, trusted_keys=[keys[1]])
    EdgeClassifier(point(pair, OLD))  # keys unset again: runs as it always did
    # a person naming the older bundle folder is asking for it; the record stays
    EdgeClassifier(pair / OLD[0] / "bundle", trusted_keys=[keys[1]])
    EdgeClassifier(pair / OLD[0], trusted_keys=[keys[1]])
    assert state(_state_in_tmp)["line"]["run_id"] == NEW[0]


@pytest.mark.parametrize("damage", [b"{not json", b'{"format": "other"}',
                                    b'{"format": "indvision-accepted/1", "pipelines": '
                                    b'{"line": {"run_id": 1}}}', b" " * (2**20 + 1)])
def test_a_damaged_state_file_is_one_line(
        pair: Path, keys: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture,
        _state_in_tmp: Path, damage: bytes) -> None:
    (_state_in_tmp / "accepted.json").write_bytes(damage)
    assert main(["predict", str(pair), str(image), "--trust", str(keys[1])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{_state_in_tmp / 'accepted.json'}: damaged record of accepted bundles" in err


def test_serve_follow_refuses_a_rollback_and_keeps_serving(
        pair: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI's own load (hotswap.ModelSlot + Follower): --allow-rollback lets the
    first load through, never a later swap."""
    from indvision.edge import service

    seen: dict = {}

    def fake_serve(slot, host, port, token, limits, follower, allowed_hosts) -> None:
        seen["first"] = slot.get().meta["provenance"]["run_id"]
        point(pair, NEW)
        seen["forward"] = follower.check()
        point(pair, OLD)
        seen["back"] = follower.check()
        seen["serving"] = slot.get().meta["provenance"]["run_id"]
        seen["reason"] = slot.last_refusal["reason"]

    monkeypatch.setattr(service, "serve", fake_serve)
    EdgeClassifier(pair, trusted_keys=[keys[1]])  # NEW accepted once
    point(pair, OLD)
    assert main(["serve", str(pair), "--follow", "--follow-interval", "3600",
                 "--trust", str(keys[1]), "--allow-rollback"]) == 0
    assert seen["first"] == OLD[0] and seen["forward"] is True
    assert seen["back"] is False and seen["serving"] == NEW[0]
    assert "older than" in seen["reason"] and "--allow-rollback" in seen["reason"]


def test_latest_json_is_read_once_for_the_bundle_its_hash_and_its_pipeline(
        pair: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model.json hash and pipeline checks use the record the bundle was found by:
    latest.json rewritten after that read (cut mid-copy, say) is never read again (it was,
    with no try: a JSONDecodeError traceback)."""
    from indvision import layout

    original = layout.read_latest

    def read_then_cut(folder: Path) -> dict:
        record = original(folder)
        (Path(folder) / "latest.json").write_text('{"bundle": "2026')
        return record

    monkeypatch.setattr(layout, "read_latest", read_then_cut)
    assert EdgeClassifier(pair).meta["provenance"]["run_id"] == NEW[0]
