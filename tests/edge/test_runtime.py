"""The edge runtime (:mod:`indvision.edge.runtime`): no TensorFlow anywhere in the package,
tamper checks, decisions, images and objects in, results out, threads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic, images, metrics
from indvision.edge import EdgeClassifier
from indvision.errors import IndvisionError
from tests.conftest import PROJECT_ROOT, draw_tiny
from tests.edge.conftest import grouped_bundle, read_json

EDGE_MODULES = {"indvision.edge." + name for name in
                ("__main__", "cli", "evaluate", "golden", "objects", "runtime", "watching",
                 "ray_predict", "sources", "service", "service_routes", "hotswap")}

NO_TENSORFLOW_SCRIPT = """
import importlib, json, pkgutil, sys
import indvision.edge
bundle, image = sys.argv[1], sys.argv[2]
seen = {"modules": sorted(m.name for m in pkgutil.walk_packages(indvision.edge.__path__,
                                                                 "indvision.edge."))}
for name in seen["modules"]:  # every module of the package, present and future
    importlib.import_module(name)
seen["after_import"] = sorted(m for m in ("tensorflow", "keras", "tf2onnx", "ai_edge_litert")
                              if m in sys.modules)
from indvision.edge import EdgeClassifier
onnx = EdgeClassifier(bundle, "model.onnx").predict(image)
seen["after_onnx"] = sorted(m for m in ("tensorflow", "keras", "tf2onnx", "ai_edge_litert")
                            if m in sys.modules)
for name in ("model.tflite", "model_int8.tflite"):
    EdgeClassifier(bundle, name, allow_unshippable=True).predict(image)
seen["after_all"] = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
seen["label"] = onnx["label"]
print(json.dumps(seen))
"""


def test_edge_never_imports_tensorflow(bundle: Path, eval_tree: Path) -> None:
    image = next((eval_tree / "spot").iterdir())
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW_SCRIPT, str(bundle), str(image)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(seen["modules"]) >= EDGE_MODULES, seen["modules"]
    assert seen["after_import"] == []  # importing every module: not even LiteRT
    assert seen["after_onnx"] == []  # not even LiteRT for an ONNX model
    assert seen["after_all"] == []
    assert seen["label"] in ("ok", "scratch", "spot")


def test_a_tampered_model_file_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    expected = read_json(copy / "model.json")["files"]["model.onnx"]["sha256"]
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    actual = atomic.sha256_file(copy / "model.onnx")
    with pytest.raises(IndvisionError) as info:
        EdgeClassifier(copy)
    assert "model.onnx" in str(info.value)
    assert expected in str(info.value) and actual in str(info.value)


def test_unknown_model_and_missing_bundle_are_clear_errors(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(IndvisionError, match=r"did you mean 'model\.tflite'"):
        EdgeClassifier(bundle, "model.tflit")
    with pytest.raises(IndvisionError, match="no such bundle folder"):
        EdgeClassifier(tmp_path / "nowhere")
    with pytest.raises(IndvisionError, match="not a bundle"):
        EdgeClassifier(tmp_path)


def test_predict_accepts_paths_arrays_and_batches(classifier: EdgeClassifier,
                                                  eval_tree: Path) -> None:
    paths = sorted((eval_tree / "scratch").iterdir())[:3]
    by_path = classifier.predict([str(p) for p in paths])
    assert [set(r) for r in by_path] == [{"label", "score", "scores"}] * 3
    raw = [images.read_image(p) for p in paths]
    by_array = classifier.predict(raw)
    for a, b in zip(by_path, by_array, strict=True):
        assert a == b
    single = classifier.predict(paths[0])
    assert single == by_path[0]
    prepared = np.stack([images.load(p, classifier.spec) for p in paths])
    assert classifier.predict(prepared) == by_path  # an N x H x W x 3 batch
    # any size and grey images are prepared with the bundle's InputSpec
    big = cv2.resize(raw[0], (131, 77), interpolation=cv2.INTER_LINEAR)
    assert classifier.predict(big)["label"] in classifier.classes
    assert classifier.predict(raw[0][:, :, 0])["label"] in classifier.classes
    for result in by_path:
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["score"] == result["scores"][result["label"]]
    with pytest.raises(IndvisionError, match="uint8"):
        classifier.predict(raw[0].astype(np.float32))


def test_labels_follow_the_stored_threshold(bundle: Path, eval_tree: Path) -> None:
    strict = EdgeClassifier(bundle)
    strict.threshold = 0.999  # "ok" only when nearly certain
    paths = [str(p) for p in sorted(eval_tree.rglob("*.png"))]
    results = strict.predict(paths)
    probs = np.array([[r["scores"][c] for c in strict.classes] for r in results])
    expected = metrics.decide(probs, strict.classes.index("ok"), 0.999)
    assert [r["label"] for r in results] == [strict.classes[i] for i in expected]
    assert all(r["scores"]["ok"] >= 0.999 for r in results if r["label"] == "ok")
    assert any(r["label"] != strict.classes[int(np.argmax(list(r["scores"].values())))]
               for r in results), "the threshold should overrule the arg-max somewhere"


def test_predict_groups_takes_the_least_good_view(classifier: EdgeClassifier,
                                                  tmp_path: Path) -> None:
    folder = tmp_path / "views"
    folder.mkdir()
    for part, label in enumerate(("ok", "spot", "scratch")):
        for view, view_label in (("top", "ok"), ("side", label)):
            image = draw_tiny(view_label, np.random.default_rng([part, len(view)]))
            cv2.imwrite(str(folder / f"{part}_{view}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    paths = sorted(folder.iterdir())
    groups = classifier.predict_groups(paths, group_regex=r"^(\d+)_")
    assert [g["group"] for g in groups] == ["0", "1", "2"]
    per_image = {str(p): r for p, r in zip(paths, classifier.predict(paths), strict=True)}
    for group in groups:
        assert len(group["members"]) == 2
        members = [per_image[m] for m in group["members"]]
        least_good = min(members, key=lambda r: r["scores"]["ok"])
        assert group["scores"] == least_good["scores"]
        assert group["decided_by"] in group["members"]


def test_threads_share_one_classifier(classifier: EdgeClassifier, eval_tree: Path) -> None:
    paths = [str(p) for p in sorted(eval_tree.rglob("*.png"))]
    expected = classifier.predict(paths)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(classifier.predict, paths * 3))
    assert results == expected * 3


def test_predict_groups_matches_the_objects_predict_prints(classifier: EdgeClassifier,
                                                           tmp_path: Path) -> None:
    from indvision.edge import predict_objects
    from tests.edge.conftest import VIEWS_REGEX, write_views

    paths = write_views(tmp_path / "views")
    groups = classifier.predict_groups(paths, VIEWS_REGEX)
    lines: list[dict] = []
    assert predict_objects(classifier, paths, lines.append, VIEWS_REGEX) == 0
    assert [list(line) for line in lines] == [
        ["group", "label", "score", "scores", "views", "decided_by"]] * 3
    for line, group in zip(lines, groups, strict=True):
        assert line["views"] == group["members"]
        assert {k: v for k, v in line.items() if k != "views"} == {
            k: v for k, v in group.items() if k != "members"}


def test_views_per_object_comes_from_model_json(bundle: Path, tmp_path: Path) -> None:
    assert EdgeClassifier(bundle).views_per_object is None
    grouped = grouped_bundle(bundle, tmp_path / "a", group_regex=r"^(\d+)_", views_per_object=4)
    classifier = EdgeClassifier(grouped)
    assert classifier.group_regex == r"^(\d+)_" and classifier.views_per_object == 4
    bad = grouped_bundle(bundle, tmp_path / "b", views_per_object="two")
    with pytest.raises(IndvisionError, match=r"decision\.views_per_object must be a positive"):
        EdgeClassifier(bad)


def test_a_classifiers_map_points_at_the_drawn_defect(classifier: EdgeClassifier) -> None:
    """The tiny classifier (a 5 x 5 map) on parts with a dark spot drawn at a known place: the
    decided class's map is higher on the cells over the spot than on the cells away from it,
    in every one of 10 parts."""
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        image = np.clip(rng.normal(int(rng.integers(90, 170)), 12, (48, 48, 3)), 0, 255)
        image = image.astype(np.uint8)
        cx, cy = (int(v) for v in rng.integers(12, 36, 2))
        cv2.circle(image, (cx, cy), 8, (20, 20, 20), -1)
        result = classifier.predict(image, heatmap=True)
        grid = result["map"]
        assert result["label"] == "spot" and grid.shape == (5, 5)
        cell = 48 / grid.shape[0]
        ys, xs = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
        distance = np.hypot((xs + 0.5) * cell - cx, (ys + 0.5) * cell - cy)
        assert grid[distance <= 8 + cell / 2].mean() > grid[distance > 8 + cell].mean(), seed


def test_options_come_as_keywords_an_options_record_or_both(bundle: Path) -> None:
    """``EdgeClassifier``'s settings are one :class:`Options`; the keywords callers pass are
    its fields, and a keyword given beside an ``Options`` wins."""
    from indvision.edge.runtime import Options

    by_keyword = EdgeClassifier(bundle, group_regex=r"^(\d+)_", threads=1)
    assert by_keyword.group_regex == r"^(\d+)_" and by_keyword.options.threads == 1
    both = EdgeClassifier(bundle, options=Options(group_regex="a", spin_wait=False),
                          group_regex="b")
    assert both.group_regex == "b" and both.options.spin_wait is False
    with pytest.raises(TypeError, match="no_such_option"):
        EdgeClassifier(bundle, no_such_option=True)
