"""Tampering: a changed ``model.json`` (or model file) is refused by verify and by the edge
runtime, naming the file and both hashes.

``model.json`` cannot hold its own hash. Its sha256 is recorded in three places: the run's
``manifest.json`` (export's record of the bundle, updated by verify when it rewrites the file),
``exports/<pipeline>/latest.json`` and a ``model.json.sha256`` sidecar verify writes into the
bundle (it travels with a copied bundle). Verify checks the manifest's record (and the sidecar
when there is one); ``EdgeClassifier`` checks every record that applies to how it was opened.
A changed *model file* is caught by its hash in ``model.json`` (tests/edge/test_runtime.py and
tests/stages/test_verify.py cover that in-process; the CLI case is here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import atomic
from indvision.dataset import read_splits
from indvision.edge import EdgeClassifier
from indvision.errors import IndvisionError
from indvision.stages import verify
from tests.conftest import PROJECT_ROOT
from tests.stages.conftest import copy_run, exported_run, trained_run, verified_run  # noqa: F401


def edit_model_json(bundle: Path) -> tuple[str, str]:
    """A plausible malicious edit (pass everything as good); returns (old, new) sha256."""
    path = bundle / "model.json"
    before = atomic.sha256_file(path)
    meta = json.loads(path.read_text())
    meta["decision"]["threshold"] = 0.0
    path.write_text(json.dumps(meta, indent=2))
    return before, atomic.sha256_file(path)


@pytest.fixture
def exports_copy(verified_run: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A copy of ``exports/<pipeline>/`` holding the verified run and its latest.json."""
    return Path(shutil.copytree(verified_run.parent, tmp_path / "exports" / "tiny"))


def test_verify_records_model_json_everywhere(verified_run: Path) -> None:  # noqa: F811
    bundle = verified_run / "bundle"
    sha = atomic.sha256_file(bundle / "model.json")
    assert (bundle / "model.json.sha256").read_text() == f"{sha}  model.json\n"  # sha256sum -c
    assert json.loads((verified_run / "verify" / "parity.json").read_text())[
        "model_json_sha256"] == sha
    assert json.loads((verified_run.parent / "latest.json").read_text())[
        "model_json_sha256"] == sha
    record = json.loads((verified_run / "manifest.json").read_text())["stages"]["export"]
    assert record["outputs"]["bundle"]["files"]["bundle/model.json"] == sha
    for opened_as in (bundle, verified_run, verified_run.parent):  # no false alarm either way
        assert EdgeClassifier(opened_as).bundle.resolve() == bundle.resolve()


def test_verify_refuses_a_model_json_edited_after_export(exported_run: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    recorded, edited = edit_model_json(run.root / "bundle")
    run.start_stage("verify")
    with pytest.raises(IndvisionError) as info:
        verify.run(verify.Config(), run)
    message = str(info.value)
    assert str(run.root / "bundle" / "model.json") in message
    assert recorded in message and edited in message and "manifest.json" in message
    assert not (run.root / "verify" / "parity.json").exists()
    assert not (run.exports_dir / "latest.json").exists()


def test_edge_refuses_an_edited_model_json_in_a_copied_bundle(verified_run: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(verified_run / "bundle", tmp_path / "device" / "bundle"))
    recorded, edited = edit_model_json(bundle)
    with pytest.raises(IndvisionError) as info:
        EdgeClassifier(bundle)
    message = str(info.value)
    assert str(bundle / "model.json") in message and "model.json.sha256" in message
    assert recorded in message and edited in message


def test_edge_refuses_it_through_latest_json_without_the_sidecar(exports_copy: Path) -> None:
    (run_dir,) = [p for p in exports_copy.iterdir() if p.is_dir()]
    (run_dir / "bundle" / "model.json.sha256").unlink()  # the tamperer removed the sidecar too
    (run_dir / "manifest.json").unlink()  # ...and the manifest: latest.json still knows
    recorded, edited = edit_model_json(run_dir / "bundle")
    with pytest.raises(IndvisionError) as info:
        EdgeClassifier(exports_copy)
    message = str(info.value)
    assert str(exports_copy / "latest.json") in message
    assert recorded in message and edited in message


def test_edge_refuses_it_through_the_run_manifest(exports_copy: Path) -> None:
    (run_dir,) = [p for p in exports_copy.iterdir() if p.is_dir()]
    (run_dir / "bundle" / "model.json.sha256").unlink()
    (exports_copy / "latest.json").unlink()
    recorded, edited = edit_model_json(run_dir / "bundle")
    for opened_as in (run_dir, run_dir / "bundle"):
        with pytest.raises(IndvisionError, match=f"{edited} differs from {recorded} recorded "
                                                 f"in {run_dir / 'manifest.json'}"):
            EdgeClassifier(opened_as)


@pytest.mark.parametrize("target", ["model.json", "model.onnx"])
def test_edge_cli_refuses_a_tampered_bundle_in_one_line(verified_run: Path,  # noqa: F811
                                                        tmp_path: Path, target: str) -> None:
    bundle = Path(shutil.copytree(verified_run / "bundle", tmp_path / "bundle"))
    if target == "model.json":
        edit_model_json(bundle)
    else:
        data = bytearray((bundle / target).read_bytes())
        data[-10] ^= 0xFF
        (bundle / target).write_bytes(bytes(data))
    image = read_splits(verified_run / "ingest" / "splits.csv")[0]["path"]
    result = subprocess.run([sys.executable, "-m", "indvision.edge", "predict", str(bundle),
                             str(image)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bundle / target}: sha256 ")
    assert atomic.sha256_file(bundle / target) in line
