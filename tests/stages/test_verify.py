"""Verify: the parity gates from the format table, tamper checks, and latest.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic, config, formats, images, models
from indvision.dataset import read_splits
from indvision.edge import EdgeClassifier
from indvision.errors import ConfigError, IndvisionError
from indvision.rundir import Run
from indvision.stages import verify
from tests.stages.conftest import build_trained_run, copy_run, export_copy, verify_copy


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def run_verify(run: Run, **settings) -> dict[str, Path]:
    """Run verify the way the pipeline does (start, run, finish)."""
    run.start_stage("verify")
    outputs = verify.run(verify.Config(**settings), run)
    run.finish_stage("verify", outputs, 0.0)
    return outputs


def rewrite_hash(bundle: Path, name: str) -> None:
    """Make model.json agree with a changed file, so that only parity can catch the change."""
    meta = read_json(bundle / "model.json")
    meta["files"][name]["sha256"] = atomic.sha256_file(bundle / name)
    atomic.write_json(bundle / "model.json", meta)
    run = Run.open(bundle.parent)  # as a re-export would: the manifest records both files
    with run.updating_output("export", "bundle") as record:
        for changed in (name, "model.json"):
            record["files"][f"bundle/{changed}"] = atomic.sha256_file(bundle / changed)


def test_config_checks_limits() -> None:
    with pytest.raises(ConfigError, match="int8_accuracy_budget"):
        config.build_config("verify", verify.Config, {"int8_accuracy_budget": -1})
    with pytest.raises(ConfigError, match="did you mean 'int8_min_agreement'"):
        config.build_config("verify", verify.Config, {"int8_min_agrement": 0.9})


def test_passing_run_records_parity_and_points_latest_at_the_bundle(verified_run: Path) -> None:
    run = Run.open(verified_run)
    parity = read_json(verified_run / "verify" / "parity.json")
    meta = read_json(verified_run / "bundle" / "model.json")
    assert parity["passed"] is True
    rows = read_splits(run.artifact("ingest", "splits"))
    assert parity["n_test"] == sum(1 for r in rows if r["split"] == "test")
    for fmt in formats.FORMATS.values():
        numbers = parity["formats"][fmt.key]
        entry = meta["files"][fmt.filename]
        assert entry["verified"] is True
        if fmt.kind == "float":
            assert numbers["agreement"] == 1.0 and numbers["max_abs_diff"] <= 1e-4
            assert entry["shippable"] is True
        # the recorded verdict is the table's gate applied to the recorded numbers
        failures = formats.gate_failures(fmt, numbers, verify.Config().limits())
        assert entry["shippable"] is (not failures) and numbers["failures"] == failures
        assert ("reason" in entry) is bool(failures)
    # model.json was rewritten: its new hash is in parity.json and the manifest, not in itself
    sha = atomic.sha256_file(verified_run / "bundle" / "model.json")
    assert parity["model_json_sha256"] == sha
    assert run.manifest["stages"]["export"]["outputs"]["bundle"]["files"][
        "bundle/model.json"] == sha
    latest = read_json(run.exports_dir / "latest.json")
    assert latest["run_id"] == run.run_id and latest["pipeline"] == run.pipeline
    assert (run.exports_dir / latest["bundle"]).resolve() == (verified_run / "bundle").resolve()
    assert (run.exports_dir / latest["run_dir"]).resolve() == verified_run.resolve()
    assert latest["metrics"]["test"]["accuracy"] == meta["metrics"]["test"]["accuracy"]
    assert "model.onnx" in latest["shippable"]
    # the edge runtime finds the bundle through exports/<pipeline>
    assert EdgeClassifier(run.exports_dir).bundle.resolve() == (verified_run / "bundle").resolve()


def test_int8_failing_its_gate_is_not_shippable_but_the_run_passes(exported_run: Path,
                                                                    tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    run_verify(run, int8_min_agreement=1.01)  # no file can reach it: the gate must fail
    meta = read_json(run.root / "bundle" / "model.json")
    int8 = meta["files"]["model_int8.tflite"]
    assert int8["shippable"] is False and "top-1 agreement" in int8["reason"]
    assert meta["files"]["model.onnx"]["shippable"] is True
    assert (run.exports_dir / "latest.json").is_file()
    assert "model_int8.tflite" not in read_json(run.exports_dir / "latest.json")["shippable"]
    with pytest.raises(IndvisionError, match="not shippable"):
        EdgeClassifier(run.root / "bundle", "model_int8.tflite")
    forced = EdgeClassifier(run.root / "bundle", "model_int8.tflite", allow_unshippable=True)
    assert forced.predict(np.zeros((30, 30, 3), np.uint8))["label"] in forced.classes


def test_int8_within_loose_limits_is_shippable(exported_run: Path, tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    run_verify(run, int8_min_agreement=0.0, int8_accuracy_budget=100.0)
    meta = read_json(run.root / "bundle" / "model.json")
    assert meta["files"]["model_int8.tflite"]["shippable"] is True
    EdgeClassifier(run.root / "bundle", "model_int8.tflite")  # accepted


def break_onnx(path: Path, n_classes: int) -> None:
    """Nudge the classifier head's weights: a plausible model that is not the Keras one."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    changed = 0
    for index, tensor in enumerate(model.graph.initializer):
        weights = numpy_helper.to_array(tensor)
        if weights.dtype == np.float32 and weights.ndim == 2 and weights.shape[-1] == n_classes:
            noisy = weights + np.random.default_rng(0).normal(0, 0.05, weights.shape)
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(noisy.astype(np.float32), tensor.name))
            changed += 1
    assert changed == 1, "expected one Dense kernel in the ONNX graph"
    atomic.write_bytes(path, model.SerializeToString())


def test_float_gate_fails_the_run_on_a_wrong_onnx(exported_run: Path, tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    bundle = run.root / "bundle"
    break_onnx(bundle / "model.onnx", len(read_json(bundle / "model.json")["classes"]))
    rewrite_hash(bundle, "model.onnx")  # the hash check passes: only parity can catch it
    run = Run.open(run.root)  # the manifest rewrite_hash updated
    latest = run.exports_dir / "latest.json"
    latest.write_text('{"run_id": "an-earlier-run"}\n')
    before = latest.read_bytes()
    with pytest.raises(IndvisionError, match=r"parity gate failed for model\.onnx.*max \|Δprob\|"):
        run_verify(run)
    assert latest.read_bytes() == before
    parity = read_json(run.root / "verify" / "parity.json")
    assert parity["passed"] is False and parity["formats"]["onnx"]["max_abs_diff"] > 1e-4
    assert parity["formats"]["tflite"]["passed"] is True
    meta = read_json(bundle / "model.json")
    assert meta["files"]["model.onnx"]["shippable"] is False
    with pytest.raises(IndvisionError, match="not shippable"):
        EdgeClassifier(bundle)


def test_no_latest_json_when_the_float_gate_fails_on_a_first_run(exported_run: Path,
                                                                  tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    with pytest.raises(IndvisionError, match="parity gate failed"):
        run_verify(run, float_max_abs_diff=0.0)  # the float files are close, not bit-exact
    assert not (run.exports_dir / "latest.json").exists()


def test_a_cross_validation_fold_is_verified_but_moves_no_latest_json(exported_run: Path,
                                                                        tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    path = run.artifact("ingest", "report")
    atomic.write_json(path, {**read_json(path), "folds": 3, "fold": 1})  # as --folds 3 makes
    with run.updating_output("ingest", "report") as record:
        record.update(sha256=atomic.sha256_file(path), bytes=path.stat().st_size)
    run_verify(run)
    assert read_json(run.root / "verify" / "parity.json")["passed"] is True
    assert not (run.exports_dir / "latest.json").exists()


def test_a_tampered_model_file_is_refused_before_anything_runs(exported_run: Path,
                                                               tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    path = run.root / "bundle" / "model.tflite"
    expected = read_json(run.root / "bundle" / "model.json")["files"]["model.tflite"]["sha256"]
    path.write_bytes(path.read_bytes() + b"\0")
    actual = atomic.sha256_file(path)
    with pytest.raises(IndvisionError) as info:
        run_verify(run)
    message = str(info.value)
    assert "model.tflite" in message and expected in message and actual in message
    assert not (run.root / "verify" / "parity.json").exists()


def test_compare_reports_the_objects_fused_decisions_beside_the_images() -> None:
    # two parcels of two views, good class 1; the "int8" file flips one view of an intact
    # parcel's top-1 that the fused decision still rejects through its other view
    keras_probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])
    int8_probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    parity = verify.compare(int8_probs, keras_probs, labels, 1, 0.5, ["a", "a", "b", "b"])
    assert parity["agreement"] == 0.75 and parity["disagreements"] == 1
    assert parity["objects"] == {"n": 2, "agreement": 1.0, "disagreements": 0, "accuracy": 1.0,
                                 "keras_accuracy": 1.0, "accuracy_drop_points": 0.0}
    assert "objects" not in verify.compare(int8_probs, keras_probs, labels, 1, 0.5)


def test_grouped_bundles_judge_int8_on_objects(exported_run: Path, tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")
    bundle = run.root / "bundle"
    meta = read_json(bundle / "model.json")
    meta["decision"].update(group_by="regex", group_regex="^(.)")  # decide per object
    atomic.write_json(bundle / "model.json", meta)
    rewrite_hash(bundle, "model.onnx")  # the manifest records the edited model.json
    run = Run.open(run.root)
    run_verify(run, int8_min_agreement=1.01)
    parity = read_json(run.root / "verify" / "parity.json")["formats"]["tflite_int8"]
    test_rows = [r for r in read_splits(run.artifact("ingest", "splits")) if r["split"] == "test"]
    assert parity["objects"]["n"] == len({r["group"] for r in test_rows})
    reason = read_json(bundle / "model.json")["files"]["model_int8.tflite"]["reason"]
    assert "object decision agreement" in reason and "top-1" not in reason


@pytest.mark.slow  # trains a mirror-averaged two-member ensemble
def test_an_averaged_model_is_repeated_by_every_format_and_the_edge(tmp_path: Path) -> None:
    """train.mirror_average and train.ensemble put the flip and the members inside the graph:
    the float files must match Keras (verify's gate), the edge must agree, and the scores must
    not change when the image is mirrored (what the averaging promises)."""
    trained = build_trained_run(tmp_path / "trained", mirror_average=True, ensemble=2)
    info = read_json(trained / "train" / "train_info.json")
    assert info["mirror_average"] is True and info["ensemble"] == 2
    run = Run.open(verify_copy(tmp_path / "verified", export_copy(tmp_path / "exported", trained)))

    parity = read_json(run.root / "verify" / "parity.json")
    for key in ("onnx", "tflite"):
        assert parity["formats"][key]["agreement"] == 1.0, key
    # the flip exports as Slice, not ReverseSequence (which OpenCV's dnn cannot load), and
    # verify ran model.onnx on both of its runtimes
    import onnx

    ops = {node.op_type for node in onnx.load(str(run.root / "bundle" / "model.onnx")).graph.node}
    assert "ReverseSequence" not in ops
    for runtime in ("onnxruntime", "opencv"):
        numbers = parity["formats"]["onnx"]["runtimes"][runtime]
        assert numbers["agreement"] == 1.0 and numbers["passed"] is True, runtime
    model = models.load_model(run.artifact("train", "model"))
    assert model.get_layer("mirror") is not None
    assert models.find_submodel(model, "indvision_small_cnn_m2") is not None
    spec = images.InputSpec.from_dict(read_json(run.artifact("train", "input_spec")))
    paths = [r["path"] for r in read_splits(run.artifact("ingest", "splits"))
             if r["split"] == "test"][:6]
    batch = np.stack([images.load(p, spec) for p in paths]).astype(np.float32)
    keras_scores = np.asarray(model.predict(batch, verbose=0))
    mirrored_scores = np.asarray(model.predict(batch[:, :, ::-1], verbose=0))
    np.testing.assert_allclose(mirrored_scores, keras_scores, atol=1e-5)
    edge = EdgeClassifier(run.root / "bundle")
    edge_scores = edge.scores(np.stack([edge.load(p) for p in paths]))
    np.testing.assert_allclose(edge_scores, keras_scores, atol=1e-4)


def test_a_float_files_maps_beyond_the_limit_fail_it_and_int8_maps_are_recorded(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from indvision import formats as formats_mod

    keras_maps = np.full((3, 5, 5), 0.5, np.float32)
    offset = {"value": 0.0}

    def fake_map_runner(path, *args, **kwargs):
        return lambda batch: (np.zeros((len(batch), 2)), keras_maps[:len(batch)] + offset["value"])

    monkeypatch.setattr(formats_mod, "load_map_runner", fake_map_runner)
    batch = np.zeros((3, 8, 8, 3), np.uint8)
    config = verify.Config()
    for value, kind, fails in ((5e-4, "float", False), (2e-3, "float", True),
                               (0.3, "int8", False)):
        offset["value"] = value
        fmt = formats_mod.FORMATS["onnx" if kind == "float" else "tflite_int8"]
        parity, entry = {"failures": [], "passed": True, "shippable": True}, {"shippable": True}
        numbers = verify.verify_maps(tmp_path / fmt.filename, fmt, entry, parity, batch,
                                     keras_maps, config)
        assert numbers["max_abs_diff"] == pytest.approx(value, rel=1e-3)
        assert parity["shippable"] is not fails and entry["shippable"] is not fails
        if fails:
            assert "verify.map_max_abs_diff" in parity["failures"][0]


def test_export_signs_and_verify_signs_its_verdicts_again(trained_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """``INDVISION_SIGNING_KEY`` (as ``export.signing_key``): export signs model.json; verify
    rewrites it with its verdicts and signs again, so the device's check passes on the
    bundle that ships, and the manifest's record of the signature stays true."""
    import time

    from indvision import signing
    from indvision.stages import export

    private, public = signing.keygen(tmp_path / "keys")
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(private))
    run = copy_run(trained_run, tmp_path / "exports")
    run.start_stage("export")
    started = time.perf_counter()
    run.finish_stage("export", export.run(export.Config(formats=("onnx",)), run),
                     time.perf_counter() - started)
    bundle = run.root / "bundle"
    exported = (bundle / "model.json").read_bytes()
    signing.check_signature(bundle, [public])
    root = verify_copy(tmp_path / "verified", run.root)
    bundle = root / "bundle"
    assert (bundle / "model.json").read_bytes() != exported  # verify's verdicts are in it
    classifier = EdgeClassifier(root, trusted_keys=[public])
    assert classifier.verified and classifier.signed_by == signing.key_id(
        signing.load_public_key(public))
    files = Run.open(root).output("export", "bundle")["files"]
    assert files["bundle/model.json.sig"] == atomic.sha256_file(bundle / "model.json.sig")
