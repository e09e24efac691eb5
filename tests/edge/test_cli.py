"""The edge command line (:mod:`indvision.edge.cli`): predict per image and per object,
evaluate, one-line errors, bundles found through exports/<pipeline>, closed pipes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic, edge, metrics
from indvision.edge import EdgeClassifier
from tests.edge.conftest import VIEWS_REGEX, grouped_bundle, read_json, run_cli, write_views
from tests.stages.conftest import exported_run, verified_run  # noqa: F401


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


# ----------------------------------------------------------------------------- per object

def object_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_cli_predict_prints_one_line_per_object_with_a_group_regex(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = write_views(tmp_path / "views")
    assert edge.main(["predict", str(bundle), str(tmp_path / "views"),
                      "--group-regex", VIEWS_REGEX]) == 0
    lines = object_lines(capsys.readouterr().out)
    groups = EdgeClassifier(bundle).predict_groups(paths, VIEWS_REGEX)
    assert [line["group"] for line in lines] == ["0", "1", "2"]
    for line, group in zip(lines, groups, strict=True):
        assert list(line) == ["group", "label", "score", "scores", "views", "decided_by"]
        assert line["views"] == group["members"] == [str(p) for p in paths
                                                     if p.name.startswith(line["group"])]
        assert line["label"] == group["label"] and line["decided_by"] == group["decided_by"]
        assert line["scores"] == pytest.approx(group["scores"], abs=1e-6)
    # --per-image: the old lines, one per image
    assert edge.main(["predict", str(bundle), str(tmp_path / "views"),
                      "--group-regex", VIEWS_REGEX, "--per-image"]) == 0
    per_image = object_lines(capsys.readouterr().out)
    assert [line["path"] for line in per_image] == [str(p) for p in paths]
    assert all(set(line) == {"path", "label", "score", "scores"} for line in per_image)


def test_cli_predict_decides_an_object_on_its_readable_views(
        bundle: Path, tmp_path: Path) -> None:
    """Through ``python -m indvision.edge``: the unreadable view gets an error line, its
    object the readable views' decision, and the exit code says an image failed."""
    paths = write_views(tmp_path / "views")
    broken = tmp_path / "views" / "1_back.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_cli("predict", str(bundle), str(tmp_path / "views"), "--group-regex",
                     VIEWS_REGEX)
    assert result.returncode == 1, result.stderr
    lines = object_lines(result.stdout)
    assert lines[0] == {"path": str(broken), "error": lines[0]["error"]}
    assert [line["group"] for line in lines[1:]] == ["0", "1", "2"]
    object_1 = lines[2]
    assert object_1["views"] == [str(p) for p in paths if p.name.startswith("1_")]
    want = EdgeClassifier(bundle).predict_groups(object_1["views"], VIEWS_REGEX)[0]
    assert object_1["label"] == want["label"] and object_1["decided_by"] == want["decided_by"]
    assert "1 of 7 images could not be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_predict_follows_the_bundles_group_regex(bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    grouped = grouped_bundle(bundle, tmp_path / "bundle", group_regex=VIEWS_REGEX)
    write_views(tmp_path / "views")
    assert edge.main(["predict", str(grouped), str(tmp_path / "views")]) == 0
    assert [line["group"] for line in object_lines(capsys.readouterr().out)] == ["0", "1", "2"]
    assert edge.main(["predict", str(grouped), str(tmp_path / "views"), "--per-image"]) == 0
    assert len(object_lines(capsys.readouterr().out)) == 6


def test_cli_a_bad_group_regex_is_one_error_line(bundle: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    write_views(tmp_path / "views")
    assert edge.main(["predict", str(bundle), str(tmp_path / "views"),
                      "--group-regex", "(unclosed"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: group regex '(unclosed' is not a valid regular expression")


def test_cli_predict_says_a_csv_grouped_bundle_cannot_group_by_name(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grouped = grouped_bundle(bundle, tmp_path / "bundle", group_by="column", group_regex=None)
    write_views(tmp_path / "views")
    assert edge.main(["predict", str(grouped), str(tmp_path / "views")]) == 0
    captured = capsys.readouterr()
    assert "decides per object by a CSV group column" in captured.err
    assert len(object_lines(captured.out)) == 6  # each image alone
    assert edge.main(["predict", str(grouped), str(tmp_path / "views"),
                      "--group-regex", VIEWS_REGEX]) == 0
    captured = capsys.readouterr()
    assert "CSV group column" not in captured.err and len(object_lines(captured.out)) == 3


def test_cli_progress_goes_to_stderr_and_stdout_stays_json(bundle: Path, eval_tree: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    assert edge.main(["predict", str(bundle), str(eval_tree), "--progress-every", "0"]) == 0
    shown = capsys.readouterr()
    assert len([json.loads(line) for line in shown.out.splitlines()]) == 24
    progress = shown.err.splitlines()
    assert progress[0].startswith("progress: 1/24 images (4 %)")
    assert progress[-1].startswith("progress: 24/24 images in ")
    assert edge.main(["evaluate", str(bundle), str(eval_tree), "--progress-every", "0"]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out)["n"] == 24
    assert "progress: 24/24 images" in shown.err


def test_cli_predict_collects_into_label_folders_with_the_bundles_run(
        bundle: Path, eval_tree: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    result = run_cli("predict", str(bundle), str(eval_tree), "--collect", str(keep),
                     "--collect-margin", "0", "--collect-band", "0", "--collect-sample", "1")
    assert result.returncode == 0, result.stderr
    predicted = {line["path"]: line["label"]
                 for line in map(json.loads, result.stdout.splitlines())}
    with open(keep / "collected.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(predicted) == 24  # a sample of 1: every confident call
    run_id = json.loads((bundle / "model.json").read_text())["provenance"]["run_id"]
    for row in rows:
        assert row["reason"] == "sample" and row["bundle_run"] == run_id
        assert row["file"].split("/")[0] == predicted[row["source"]] == row["label"]
        assert (keep / row["file"]).read_bytes() == Path(row["source"]).read_bytes()


def test_cli_heatmaps_on_a_bundle_without_maps_is_one_error_line(bundle: Path, eval_tree: Path,
                                                                 tmp_path: Path) -> None:
    old = tmp_path / "old_bundle"  # a bundle exported before maps: no 'map' in model.json
    shutil.copytree(bundle, old)
    meta = read_json(old / "model.json")
    meta.pop("map")
    atomic.write_json(old / "model.json", meta)
    atomic.write_sha256_sidecar(old / "model.json")
    image = next((eval_tree / "ok").iterdir())
    result = run_cli("predict", str(old), str(image), "--heatmaps", str(tmp_path / "maps"))
    assert result.returncode != 0
    assert "has no map output" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_predict_writes_the_decided_class_activation_maps(bundle: Path, eval_tree: Path,
                                                              tmp_path: Path) -> None:
    images = sorted((eval_tree / "spot").iterdir())[:3]
    result = run_cli("predict", str(bundle), *map(str, images), "--heatmaps",
                     str(tmp_path / "maps"), "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["heatmap"]).name for line in lines] == [
        f"{p.stem}.heatmap.png" for p in images]
    for line in lines:
        assert cv2.imread(line["heatmap"]).shape[:2] == (40, 40)  # the model's input size
    expected = EdgeClassifier(bundle).predict([str(p) for p in images])
    assert [line["label"] for line in lines] == [e["label"] for e in expected]


def test_classifier_maps_match_keras_and_follow_the_decided_class(verified_run: Path,  # noqa: F811
                                                                  bundle: Path,
                                                                  eval_tree: Path) -> None:
    from indvision import cam, metrics, models

    classifier = EdgeClassifier(bundle)
    paths = [str(p) for p in sorted((eval_tree / "scratch").iterdir())[:4]]
    results = classifier.predict(paths, heatmap=True)
    batch = np.stack([classifier.load(p) for p in paths]).astype(np.float32)
    probabilities, heat = cam.with_heatmap(models.load_model(
        verified_run / "train" / "model.keras")).predict(batch, verbose=0)
    decided = metrics.decide(probabilities, classifier.good_index, classifier.threshold)
    for result, grid, index in zip(results, heat, decided, strict=True):
        assert result["label"] == classifier.classes[index]
        np.testing.assert_allclose(result["map"], grid[..., index], atol=1e-5)
    parity = read_json(verified_run / "verify" / "parity.json")["formats"]
    assert parity["onnx"]["maps"]["max_abs_diff"] <= 1e-4


def test_cli_serve_says_when_its_bundle_is_unverified(exported_run: Path,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A bundle export wrote but verify never checked: serve starts (no trusted keys), but
    says so in one line before it answers anything."""
    from indvision.edge import cli, service

    served = []
    monkeypatch.setattr(service, "serve", lambda *args, **kwargs: served.append(args))
    assert cli.main(["serve", str(exported_run / "bundle")]) == 0
    err = capsys.readouterr().err
    assert served and "bundle/model.onnx has not been verified" in err
