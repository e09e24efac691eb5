"""What is checked is what runs: a file swapped on disk between its check and its load (a
shared drive, an inotify hook) never answers. Each test performs the swap at the point where
the runtime used to open the file a second time, on a bundle built by hand (a tiny ONNX graph
with constant probabilities: no trained model needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic, formats, signing
from indvision.edge import EdgeClassifier
from indvision.errors import IndvisionError

onnx = pytest.importorskip("onnx", reason="building the test graphs needs onnx (pip install onnx)")
SIZE = 8


def tiny_onnx(logits: list[float], map_value: float | None = None) -> bytes:
    """An ONNX graph whose probabilities are softmax(``logits``) for every image, with a
    constant ``N x H x W`` map of ``map_value`` as second output when given."""
    from onnx import TensorProto, helper, numpy_helper

    n = len(logits)
    inits = [numpy_helper.from_array(np.zeros((3, n), np.float32), "w"),
             numpy_helper.from_array(np.asarray(logits, np.float32), "b"),
             numpy_helper.from_array(np.asarray([1, 2], np.int64), "axes")]
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n])]
    if map_value is not None:
        inits += [numpy_helper.from_array(np.asarray([3], np.int64), "caxis"),
                  numpy_helper.from_array(np.asarray(0.0, np.float32), "zero"),
                  numpy_helper.from_array(np.asarray(map_value, np.float32), "mv")]
        nodes += [helper.make_node("ReduceMean", ["image", "caxis"], ["grey"], keepdims=0),
                  helper.make_node("Mul", ["grey", "zero"], ["z"]),
                  helper.make_node("Add", ["z", "mv"], ["map"])]
        outputs.append(helper.make_tensor_value_info("map", TensorProto.FLOAT,
                                                     ["N", SIZE, SIZE]))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    model = helper.make_model(helper.make_graph(nodes, "tiny", [image], outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


CHECKED = tiny_onnx([0.0, 2.0], map_value=0.25)  # P(bad) 0.88, map 0.25
SWAPPED = tiny_onnx([5.0, 0.0], map_value=0.75)  # P(ok) 0.99, map 0.75: must never answer


def make_bundle(folder: Path, data: bytes = CHECKED) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(data)
    meta = {"classes": ["ok", "bad"], "input_spec": {"height": SIZE, "width": SIZE},
            "files": {"model.onnx": {"format": "onnx",
                                     "sha256": hashlib.sha256(data).hexdigest()}},
            "decision": {"good_class": "ok", "threshold": 0.5}, "map": {"kind": "constant"}}
    atomic.write_json(folder / "model.json", meta)
    return folder


def batch() -> np.ndarray:
    return np.full((2, SIZE, SIZE, 3), 100, np.uint8)


def test_a_model_file_swapped_after_its_hash_check_never_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    original = formats.load_runner

    def swap_then_load(path, *args, **kwargs):  # the attacker wins the race
        (bundle / "model.onnx").write_bytes(SWAPPED)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(formats, "load_runner", swap_then_load)
    for runtime in ("onnxruntime", "opencv"):
        (bundle / "model.onnx").write_bytes(CHECKED)
        probs = EdgeClassifier(bundle, runtime=runtime).scores(batch())
        np.testing.assert_allclose(probs[:, 1], 0.8808, atol=1e-3)


def test_the_map_runner_is_built_from_the_checked_bytes(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    classifier = EdgeClassifier(bundle)
    (bundle / "model.onnx").write_bytes(SWAPPED)  # hours later, before the first heatmap
    probs, maps = classifier.scores_and_maps(batch())
    np.testing.assert_allclose(probs[:, 1], 0.8808, atol=1e-3)
    np.testing.assert_allclose(maps, 0.25, atol=1e-6)


def test_a_model_json_swapped_after_its_signature_check_never_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cryptography", reason="signatures need cryptography")
    private, public = signing.keygen(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "bundle")
    signing.sign_bundle(bundle, private)
    evil = json.loads((bundle / "model.json").read_text())
    evil["files"]["model.onnx"]["sha256"] = hashlib.sha256(SWAPPED).hexdigest()
    original = signing.check_signature

    def check_then_swap(*args, **kwargs):  # the signed file passes, then both are replaced
        result = original(*args, **kwargs)
        (bundle / "model.json").write_text(json.dumps(evil))
        (bundle / "model.onnx").write_bytes(SWAPPED)
        return result

    monkeypatch.setattr(signing, "check_signature", check_then_swap)
    with pytest.raises(IndvisionError, match=r"model\.onnx: sha256 .* does not match"):
        EdgeClassifier(bundle, trusted_keys=[public])


def test_a_model_json_over_the_bound_is_refused_in_one_line(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    with (bundle / "model.json").open("ab") as handle:
        handle.truncate(formats.MAX_MODEL_JSON_BYTES + 1)
    with pytest.raises(IndvisionError, match=r"model\.json: model\.json larger than"):
        EdgeClassifier(bundle)
