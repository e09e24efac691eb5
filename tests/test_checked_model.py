"""What is checked is what loads: a parent's ``model.keras`` is read once, hashed (and, under
trusted keys, compared with the sha256 its signed ``model.json`` names), and Keras loads those
bytes — so a file swapped on disk after the check never warm-starts a child or judges one.

The parent run is built by hand (a manifest, a tiny two-layer Keras model, a bundle folder
with a signed ``model.json``): no training. Each swap test replaces the file at the moment
the code used to open it a second time (``models.load_model``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic, images, models, signing
from indvision.errors import IndvisionError
from indvision.rundir import Run

keras = pytest.importorskip("keras", reason="loading Keras models needs keras (indvision[train])")

from indvision import checked_model  # noqa: E402  (needs keras)
from indvision.stages import evaluate  # noqa: E402
from indvision.training import warmstart  # noqa: E402

SIZE, CLASSES = 2, 2


def tiny_model(fill: float, name: str = "m") -> keras.Model:
    """A classifier-shaped model (a hidden layer and the ``probabilities`` head) whose every
    weight is ``fill``: which file was loaded shows in any weight."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    flat = keras.layers.Flatten(name="flat")(inputs)
    hidden = keras.layers.Dense(3, name="hidden")(flat)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name=models.HEAD_LAYER)(hidden)
    model = keras.Model(inputs, outputs, name=name)
    model.set_weights([np.full(w.shape, fill, w.dtype) for w in model.get_weights()])
    return model


def keras_bytes(model: keras.Model, folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.name}-{id(model)}.keras"
    model.save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The parent's model (weights 0.5) and the attacker's (weights 9.0), as .keras bytes."""
    folder = tmp_path_factory.mktemp("blobs")
    return {"checked": keras_bytes(tiny_model(0.5), folder),
            "swapped": keras_bytes(tiny_model(9.0), folder)}


def parent_run(root: Path, data: bytes, key: Path | None = None,
               signed_sha256: str | None = None) -> Path:
    """A finished, exported run folder holding ``data`` as ``train/model.keras``; its bundle's
    ``model.json`` names ``signed_sha256`` (default: ``data``'s) and is signed with ``key``."""
    model = root / "train" / "model.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    bundle = root / "bundle"
    bundle.mkdir()
    atomic.write_json(bundle / "model.json", {
        "classes": ["ok", "bad"], "input_spec": {"height": 8, "width": 8}, "files": {},
        "provenance": {"keras_model_sha256": signed_sha256 or sha}})
    if key is not None:
        signing.sign_bundle(bundle, key)
    atomic.write_json(root / "manifest.json", {
        "run_id": "parent", "pipeline": "p", "status": "done", "config": {"stages": {}},
        "stages": {"train": {"status": "done", "outputs": {"model": {
                       "path": "train/model.keras", "sha256": sha, "bytes": len(data)}}},
                   "export": {"status": "done", "outputs": {"bundle": {
                       "path": "bundle", "files": {}}}}}})
    return model


def swap_on_load(monkeypatch: pytest.MonkeyPatch, target: Path, data: bytes) -> list[str]:
    """Replace ``target`` with ``data`` whenever Keras is asked to load a model (the attacker
    wins the race between the check and the load); returns the paths Keras was given."""
    original, asked = models.load_model, []

    def swap_then_load(path):
        target.write_bytes(data)
        asked.append(str(path))
        return original(path)

    monkeypatch.setattr(models, "load_model", swap_then_load)
    return asked


def hidden_weight(model: keras.Model) -> float:
    return float(model.get_layer("hidden").get_weights()[0].flat[0])


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: signing.keygen(tmp_path / "keys" / name) for name in ("build", "other")}


def test_a_parent_swapped_after_its_check_never_warm_starts_the_child(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    path = parent_run(tmp_path / "parent", blobs["checked"])
    asked = swap_on_load(monkeypatch, path, blobs["swapped"])
    child = tiny_model(0.0)
    assert warmstart.start_from_parent(child, path, seed=0) == 0
    assert path.read_bytes() == blobs["swapped"]  # the swap happened ...
    assert hidden_weight(child) == 0.5  # ... and the checked bytes are what the child got
    assert asked and all(Path(p).resolve() != path.resolve() for p in asked)


def test_a_parent_changed_since_its_record_is_refused_in_one_line(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    path = parent_run(tmp_path / "parent", blobs["checked"])
    path.write_bytes(blobs["swapped"])  # the manifest still records the checked model's hash
    with pytest.raises(IndvisionError, match=r"model\.keras: sha256 .* differs from") as err:
        warmstart.start_from_parent(tiny_model(0.0), path, seed=0)
    assert "\n" not in str(err.value)


def test_a_good_signed_parent_warm_starts_under_trusted_keys(
        tmp_path: Path, blobs: dict[str, bytes], keys: dict[str, tuple[Path, Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = keys["build"]
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(public))
    path = parent_run(tmp_path / "parent", blobs["checked"], key=private)
    child = tiny_model(0.0)
    warmstart.start_from_parent(child, path, seed=0)
    assert hidden_weight(child) == 0.5


def test_a_parent_whose_signed_record_names_another_model_is_refused(
        tmp_path: Path, blobs: dict[str, bytes], keys: dict[str, tuple[Path, Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker rewrote model.keras and the (unsigned) manifest consistently; only the
    signed ``provenance.keras_model_sha256`` still names the model that was signed."""
    private, public = keys["build"]
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(public))
    signed = hashlib.sha256(blobs["checked"]).hexdigest()
    path = parent_run(tmp_path / "parent", blobs["swapped"], key=private, signed_sha256=signed)
    loaded = swap_on_load(monkeypatch, path, blobs["swapped"])
    with pytest.raises(IndvisionError, match=r"provenance\.keras_model_sha256") as err:
        warmstart.start_from_parent(tiny_model(0.0), path, seed=0)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert loaded == []  # refused before Keras saw a byte


@pytest.mark.parametrize("damage", ["unsigned", "other key", "model.json edited"])
def test_a_parent_without_a_good_trusted_signature_is_refused(
        tmp_path: Path, blobs: dict[str, bytes], keys: dict[str, tuple[Path, Path]],
        monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    private, public = keys["build"]
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(public))
    signer = {"unsigned": None, "other key": keys["other"][0]}.get(damage, private)
    path = parent_run(tmp_path / "parent", blobs["checked"], key=signer)
    if damage == "model.json edited":
        meta_path = path.parent.parent / "bundle" / "model.json"
        meta = json.loads(meta_path.read_text())
        meta["classes"] = ["ok", "worse"]
        meta_path.write_text(json.dumps(meta))
    loaded = swap_on_load(monkeypatch, path, blobs["checked"])
    with pytest.raises(IndvisionError) as err:
        warmstart.start_from_parent(tiny_model(0.0), path, seed=0)
    assert "\n" not in str(err.value)
    assert {"unsigned": "unsigned bundle", "other key": "not by a trusted key",
            "model.json edited": "does not match its signature"}[damage] in str(err.value)
    assert loaded == []


def test_a_model_outside_a_run_folder_is_refused_under_trusted_keys(
        tmp_path: Path, blobs: dict[str, bytes], keys: dict[str, tuple[Path, Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(keys["build"][1]))
    loose = tmp_path / "somewhere" / "x" / "model.keras"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(blobs["checked"])
    with pytest.raises(IndvisionError, match="not the model of a run folder"):
        checked_model.load_parent(loose)


def test_evaluate_scores_the_checked_model_not_a_swapped_one(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    path = parent_run(tmp_path / "run", blobs["checked"])
    swap_on_load(monkeypatch, path, blobs["swapped"])
    model = checked_model.load_fitting(path, images.InputSpec(height=SIZE, width=SIZE), CLASSES)
    assert hidden_weight(model) == 0.5 and path.read_bytes() == blobs["swapped"]


def test_the_promotion_gate_never_judges_with_a_swapped_parent(
        tmp_path: Path, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate's parent load (``_promotion``) goes through the same one read; everything
    around it that needs a real run (splits, decision records, scoring) is stubbed."""
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV, raising=False)
    path = parent_run(tmp_path / "parent", blobs["checked"])
    parent_root = path.parent.parent
    spec = atomic.write_json(parent_root / "train" / "input_spec.json",
                             {"height": SIZE, "width": SIZE})
    manifest = json.loads((parent_root / "manifest.json").read_text())
    manifest["stages"]["train"]["outputs"]["input_spec"] = {
        "path": "train/input_spec.json", "sha256": atomic.sha256_file(spec)}
    atomic.write_json(parent_root / "manifest.json", manifest)
    child = tmp_path / "child"
    record = atomic.write_json(child / "ingest" / "parent.json", {
        "run_dir": str(parent_root), "run_id": "parent", "model": str(path),
        "model_sha256": hashlib.sha256(blobs["checked"]).hexdigest(), "classes": ["ok", "bad"]})
    atomic.write_json(child / "manifest.json", {
        "run_id": "child", "pipeline": "p", "status": "running", "config": {"stages": {}},
        "stages": {"ingest": {"status": "done", "outputs": {
            name: {"path": "ingest/parent.json", "sha256": atomic.sha256_file(record)}
            for name in ("parent", "parent_test")}}}})  # parent_test: read_splits is stubbed
    monkeypatch.setattr(evaluate, "read_splits", lambda _: [])
    monkeypatch.setattr(evaluate.decision, "read_for_run", lambda _: None)
    judged = []

    def first_score(model, *args, **kwargs):
        judged.append(hidden_weight(model))
        raise RuntimeError("stop: the parent has been loaded")

    monkeypatch.setattr(evaluate, "score_images", first_score)
    swap_on_load(monkeypatch, path, blobs["swapped"])
    with pytest.raises(RuntimeError, match="stop"):
        evaluate._promotion(evaluate.Config(), Run.open(child), None, None,
                            images.InputSpec(height=SIZE, width=SIZE))
    assert judged == [0.5] and path.read_bytes() == blobs["swapped"]


def test_an_oversized_model_file_is_refused_before_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked_model, "MAX_KERAS_BYTES", 1000)
    big = tmp_path / "model.keras"
    big.write_bytes(b"\0" * 1001)
    with pytest.raises(IndvisionError, match="larger than 1000 bytes"):
        checked_model.read_checked(big, None, None)
