"""Signed bundles on the edge: the consistent-rewrite attack today's hash checks miss is
refused with a trusted key; a wrong key, a damaged signature, a swapped model file are one
line each; the CLI makes keys, signs, and says when signatures are not checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from indvision import atomic, edge, signing
from indvision.edge import EdgeClassifier
from indvision.errors import IndvisionError
from tests.edge.conftest import read_json
from tests.stages.conftest import verified_run  # noqa: F401


@pytest.fixture
def signed(bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the session bundle (outside its run folder) signed with a fresh key:
    (bundle, private key, public key)."""
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    private, public = signing.keygen(tmp_path / "keys")
    signing.sign_bundle(copy, private)
    return copy, private, public


def rewrite_consistently(bundle: Path, model: bytes | None = None, **decision) -> None:
    """What an attacker with the bundle but not the key can do: change the model file and/or
    model.json, then rewrite every hash record so they agree."""
    meta = read_json(bundle / "model.json")
    if model is not None:
        (bundle / "model.onnx").write_bytes(model)
        meta["files"]["model.onnx"]["sha256"] = atomic.sha256_file(bundle / "model.onnx")
    meta["decision"].update(decision)
    atomic.write_json(bundle / "model.json", meta)
    atomic.write_sha256_sidecar(bundle / "model.json")


def swapped_model(path: Path) -> bytes:
    """A different, valid model: every dense kernel (2-D weight) negated."""
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) == 2:
            tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    return model.SerializeToString()


def test_a_consistent_rewrite_passes_the_hashes_but_not_the_signature(
        signed: tuple[Path, Path, Path]) -> None:
    bundle, _, public = signed
    assert EdgeClassifier(bundle, trusted_keys=[public]).signed_by
    rewrite_consistently(bundle, threshold=0.001)  # lets every defect through
    assert EdgeClassifier(bundle).threshold == 0.001  # today's checks: accepted
    with pytest.raises(IndvisionError, match="changed after signing"):
        EdgeClassifier(bundle, trusted_keys=[public])


def test_a_swapped_model_file_is_refused_with_a_key(signed: tuple[Path, Path, Path],
                                                    eval_tree: Path) -> None:
    bundle, _, public = signed
    before = EdgeClassifier(bundle).scores(
        np.stack([EdgeClassifier(bundle).load(p) for p in sorted((eval_tree / "ok").iterdir())]))
    rewrite_consistently(bundle, model=swapped_model(bundle / "model.onnx"))
    swapped = EdgeClassifier(bundle)  # hashes agree: it loads, and answers differently
    after = swapped.scores(np.stack([swapped.load(p)
                                     for p in sorted((eval_tree / "ok").iterdir())]))
    assert not np.allclose(before, after, atol=1e-4)
    with pytest.raises(IndvisionError, match="changed after signing"):
        EdgeClassifier(bundle, trusted_keys=[public])


def test_the_cli_refuses_in_one_line_and_warns_without_keys(
        signed: tuple[Path, Path, Path], eval_tree: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, _, public = signed
    image = str(sorted((eval_tree / "ok").iterdir())[0])
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    assert edge.main(["predict", str(bundle), image, "--no-progress"]) == 0
    assert "this bundle is signed, but its signature is not checked" in capsys.readouterr().err
    (bundle / signing.SIGNATURE).rename(bundle / "moved.sig")  # unsigned: runs as it always did
    assert edge.main(["predict", str(bundle), image, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    (bundle / "moved.sig").rename(bundle / signing.SIGNATURE)
    assert edge.main(["predict", str(bundle), image, "--trust", str(public)]) == 0
    assert "not checked" not in capsys.readouterr().err
    _, other = signing.keygen(tmp_path / "other")
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(other))
    assert edge.main(["predict", str(bundle), image]) == 1
    err = capsys.readouterr().err
    assert "not by a trusted key" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_keygen_sign_and_info_from_the_cli(bundle: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    assert edge.main(["keygen", str(tmp_path / "keys")]) == 0
    assert "public key" in capsys.readouterr().out
    key = tmp_path / "keys" / signing.PRIVATE_NAME
    assert edge.main(["sign", str(copy), "--key", str(key), "--signer", "qa"]) == 0
    assert "added a signature" in capsys.readouterr().out
    assert edge.main(["sign", str(copy), "--key", str(key)]) == 0
    assert "replaced its own earlier signature" in capsys.readouterr().out
    assert edge.main(["info", str(copy)]) == 0
    assert "signed     " in capsys.readouterr().out
    assert edge.main(["keygen", str(tmp_path / "keys")]) == 1
    assert "already exists" in capsys.readouterr().err
