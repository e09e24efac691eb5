"""The edge runtime: no TensorFlow, tamper checks, decisions, CLI predict/evaluate/watch."""

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

from indvision import atomic, edge, images, metrics
from indvision.edge import EdgeClassifier
from indvision.errors import IndvisionError
from tests.conftest import PROJECT_ROOT, draw_tiny, make_tree

# Session-built runs shared with tests/stages/ (built once, cached on disk).
from tests.stages.conftest import exported_run, trained_run, verified_run  # noqa: F401


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundle(verified_run: Path) -> Path:  # noqa: F811
    return verified_run / "bundle"


@pytest.fixture(scope="module")
def classifier(bundle: Path) -> EdgeClassifier:
    return EdgeClassifier(bundle)


@pytest.fixture(scope="module")
def eval_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh images (another seed than training) in the bundle's class folders."""
    return make_tree(tmp_path_factory.mktemp("edge") / "eval", per_class=8, seed=7)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indvision.edge", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


NO_TENSORFLOW_SCRIPT = """
import json, sys
from indvision.edge import EdgeClassifier
bundle, image = sys.argv[1], sys.argv[2]
seen = {}
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


def test_cli_predict_prints_one_json_line_per_image(bundle: Path, eval_tree: Path,
                                                    tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_cli("predict", str(bundle), str(eval_tree / "ok"), str(bad))
    assert result.returncode == 1  # one image failed; the others were still predicted
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 9
    assert lines[-1]["path"] == str(bad) and "error" in lines[-1]
    expected = EdgeClassifier(bundle).predict([line["path"] for line in lines[:-1]])
    for line, want in zip(lines[:-1], expected, strict=True):
        assert line["label"] == want["label"]
        assert line["scores"] == pytest.approx(want["scores"], abs=1e-6)
    assert "1 of 9 images could not be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_evaluate_reports_metrics(bundle: Path, eval_tree: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert edge.main(["evaluate", str(bundle), str(eval_tree)]) == 0
    report = json.loads(capsys.readouterr().out)
    classifier = EdgeClassifier(bundle)
    paths = [p for c in classifier.classes for p in sorted((eval_tree / c).iterdir())]
    truth = [classifier.classes.index(p.parent.name) for p in paths]
    predicted = [classifier.classes.index(r["label"]) for r in classifier.predict(paths)]
    assert report["n"] == 24
    assert report["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(predicted)))
    assert report["confusion"] == metrics.classification_metrics(
        truth, predicted, classifier.classes)["confusion"]
    assert set(report["per_class"]) == {"ok", "scratch", "spot"}
    assert {"precision", "recall", "f1"} <= set(report["per_class"]["spot"])
    assert "macro_f1" in report and report["skipped"] == []
    assert "groups" not in report  # the bundle has no group regex and none was given


def test_cli_evaluate_fuses_groups(bundle: Path, eval_tree: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    # files 000..003 of a class are one object's views; 004..007 do not match: one group each
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--group-regex",
                      r"^0(0)[0-3]_"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 24
    assert report["group_regex"] == r"^0(0)[0-3]_"
    assert report["groups"]["n"] == 3 * (1 + 4)
    assert sum(report["groups"]["confusion"][0]) == 5  # ok's groups stay ok's


def test_cli_evaluate_unknown_class_folder_fails_clearly(bundle: Path, eval_tree: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    tree = shutil.copytree(eval_tree, tmp_path / "tree")
    (tree / "dent").mkdir()
    shutil.copy(next((tree / "ok").iterdir()), tree / "dent" / "x.png")
    assert edge.main(["evaluate", str(bundle), str(tree)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "'dent' is not a class of this bundle" in lines[0]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert edge.main(["predict", str(tmp_path / "missing"), str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no such bundle" in err[0]


def test_cli_resolves_exports_pipeline_to_the_latest_bundle(verified_run: Path,  # noqa: F811
                                                            eval_tree: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    image = str(next((eval_tree / "ok").iterdir()))
    assert edge.main(["predict", str(verified_run.parent), image]) == 0
    via_latest = json.loads(capsys.readouterr().out)
    assert edge.main(["predict", str(verified_run / "bundle"), image]) == 0
    assert via_latest == json.loads(capsys.readouterr().out)


def test_watch_folder_predicts_each_file_once(classifier: EdgeClassifier, eval_tree: Path,
                                              tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted((eval_tree / "spot").iterdir())[:2]:
        shutil.copy(source, folder / source.name)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n half")
    lines: list[dict] = []
    count = edge.watch(classifier, str(folder), lines.append, interval=0.01, max_frames=3)
    assert count == 3
    assert [Path(r["path"]).name for r in lines] == ["000_a.png", "001_a.png", "zz_broken.png"]
    assert "error" in lines[2] and "label" in lines[0]


def test_watch_video_predicts_frames_as_rgb(classifier: EdgeClassifier, tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(4):  # strongly coloured frames: RGB and BGR give different scores
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 0] = 30 + 40 * i
        frame[:, :, 2] = 230
        cv2.circle(frame, (32, 24), 8, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    lines: list[dict] = []
    assert edge.watch(classifier, str(path), lines.append, max_frames=10) == 4  # ends at EOF
    capture = cv2.VideoCapture(str(path))
    for line in lines:
        ok, bgr = capture.read()
        assert ok
        rgb = classifier.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        as_bgr = classifier.predict(np.ascontiguousarray(bgr))
        assert line["scores"] == rgb["scores"]
        assert line["scores"] != as_bgr["scores"]
    capture.release()
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    lines.clear()
    assert edge.watch(classifier, str(path), lines.append, max_frames=2) == 2


def test_watch_rejects_an_unknown_source(classifier: EdgeClassifier, tmp_path: Path) -> None:
    with pytest.raises(IndvisionError, match="not a folder, video file or camera"):
        edge.watch(classifier, str(tmp_path / "nothing"), print)


def test_cli_golden_record_catches_a_changed_model(bundle: Path, eval_tree: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    golden = tmp_path / "golden.json"
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--write-golden", str(golden)]) == 0
    capsys.readouterr()
    assert len(read_json(golden)["images"]) == 24
    # the same model, and the other float file, reproduce it within 1e-4
    for model in ("model.onnx", "model.tflite"):
        assert edge.main(["evaluate", str(bundle), str(eval_tree), "--model", model,
                          "--golden", str(golden)]) == 0
        report = json.loads(capsys.readouterr().out)["golden"]
        assert report["passed"] and report["compared"] == 24
    # int8 moves scores by far more than 1e-4: a regression
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--model", "model_int8.tflite",
                      "--allow-unshippable", "--golden", str(golden),
                      "--golden-tolerance", "1e-4"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)["golden"]
    assert not report["passed"] and report["max_abs_diff"] > 1e-4 and report["model_changed"]
    assert captured.err.startswith("error: golden regression")
    # an image of the golden record that is gone is a regression too
    tree = shutil.copytree(eval_tree, tmp_path / "tree")
    (tree / "ok" / "000_a.png").unlink()
    assert edge.main(["evaluate", str(bundle), str(tree), "--golden", str(golden)]) == 1
    assert json.loads(capsys.readouterr().out)["golden"]["missing"] == ["ok/000_a.png"]


def test_cli_output_into_a_closed_pipe_ends_without_traceback(bundle: Path,
                                                              eval_tree: Path) -> None:
    """``python -m indvision.edge predict ... | head -n 1``: once the reader has gone, writing
    raises BrokenPipeError; that must end the program quietly, not with a traceback. The
    child's stdout is a pipe whose read end is already closed, so every write hits it."""
    code = ("import os, sys\n"
            "read_end, write_end = os.pipe(); os.close(read_end); os.dup2(write_end, 1)\n"
            "from indvision.edge import main\n"
            f"sys.exit(main(['predict', {str(bundle)!r}, {str(eval_tree)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
