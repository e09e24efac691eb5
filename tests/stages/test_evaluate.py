"""The evaluate stage on a real ingest of a tiny tree and a tiny model from the real train stage.

``fresh_trained_run`` and ``grouped_trained_run`` run ingest and train (small_cnn) for real;
evaluate has not run yet in them. One test keeps :func:`_stand_in_train` for a deliberately
untrained model (every prediction wrong enough to fill the misclassified grid).
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import atomic, config, images, metrics, pipeline
from indvision.dataset import read_splits
from indvision.errors import ConfigError, IndvisionError
from indvision.rundir import Run
from indvision.stages import evaluate, ingest
from tests.conftest import make_tree, reingest, train_tiny, write_pipeline

INPUT_SIDE = 32  # smaller than the 48 px images: evaluate must resize through images.load
STAND_IN_EPOCHS = 20


def _ingested_run(out_dir: Path, tree: Path, ingest_settings: str = "{}") -> Run:
    """A run whose ingest stage ran for real on ``tree`` (through the pipeline runner)."""
    yaml_path = write_pipeline(out_dir / "eval_test.yaml",
                               f"name: evaltest\nseed: 7\nstages:\n  ingest: {ingest_settings}\n")
    spec = config.load_pipeline(str(yaml_path), [], data=str(tree))
    return pipeline.run_pipeline(spec, out_dir / "exports")


def _train(run: Run) -> Run:
    """The real train stage with a tiny configuration."""
    return train_tiny(run, size=INPUT_SIDE)


def _stand_in_train(run: Run, epochs: int = STAND_IN_EPOCHS) -> Run:
    """A tiny model under the model convention, fitted ``epochs`` epochs on the train split and
    recorded as ``train``/``model``, ``input_spec`` and ``curves`` (what the real stage writes)."""
    import keras
    from matplotlib.figure import Figure

    keras.utils.set_random_seed(run.seed)
    spec = images.InputSpec(height=INPUT_SIDE, width=INPUT_SIDE)
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    rows = [r for r in read_splits(run.artifact("ingest", "splits")) if r["split"] == "train"]
    x = np.stack([images.load(r["path"], spec) for r in rows]).astype("float32")
    y = np.array([classes.index(r["label"]) for r in rows])

    inputs = keras.Input((INPUT_SIDE, INPUT_SIDE, 3), dtype="float32")
    features = keras.layers.Rescaling(1 / 255)(inputs)
    features = keras.layers.Conv2D(8, 3, activation="relu")(features)
    # average pooling alone stays at chance here in 10 epochs: the max finds the small line/disk
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(features),
                                         keras.layers.GlobalMaxPooling2D()(features)])
    outputs = keras.layers.Dense(len(classes), activation="softmax")(pooled)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0).history

    out = run.stage_dir("train")
    run.start_stage("train")
    with atomic.atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    atomic.write_json(out / "input_spec.json", spec.to_dict())
    figure = Figure(figsize=(4, 3))
    figure.add_subplot().plot(history.get("loss", []), label="loss")
    with atomic.atomic_path(out / "curves.png") as tmp:
        figure.savefig(tmp, format="png")
    run.finish_stage("train", {"model": out / "model.keras", "input_spec": out / "input_spec.json",
                               "curves": out / "curves.png"}, 0.0)
    return run


@pytest.fixture(scope="module")
def fresh_trained_run(tmp_path_factory, tiny_tree_shared) -> Run:
    """Ingest (real) of the tiny tree + the stand-in train; no group regex.

    Not conftest's ``trained_run``: that one has evaluated already; here evaluate must not
    have run yet.
    """
    return _train(_ingested_run(tmp_path_factory.mktemp("evaluate"), tiny_tree_shared,
                                "{good_class: ok}"))


@pytest.fixture(scope="module")
def grouped_trained_run(tmp_path_factory) -> Run:
    """Two views per object (``003_a.png``, ``003_b.png``), ingested with ``^(\\d+)_``."""
    root = tmp_path_factory.mktemp("evaluate_groups")
    tree = make_tree(root / "data", per_class=12)
    for first in sorted(tree.rglob("*_a.png")):
        second = cv2.flip(cv2.imread(str(first)), 1)  # the other camera: same object, new bytes
        cv2.imwrite(str(first.with_name(first.name.replace("_a.png", "_b.png"))), second)
    return _train(_ingested_run(root, tree, "{group_regex: '^(\\d+)_', good_class: ok}"))


def _copy(run: Run, tmp_path: Path) -> Run:
    """A private copy of a run, so a test's evaluate output cannot leak into another test."""
    return Run.open(shutil.copytree(run.root, tmp_path / "run"))


@pytest.fixture(scope="module")
def evaluated(fresh_trained_run, tmp_path_factory):
    run = _copy(fresh_trained_run, tmp_path_factory.mktemp("evaluated"))
    outputs = evaluate.run(evaluate.Config(misclassified_max=5), run)
    return run, outputs


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_writes_every_declared_output(evaluated):
    run, outputs = evaluated
    assert set(outputs) == {"metrics", "predictions", "confusion", "confusion_json", "report",
                            "decision"}
    for name, path in outputs.items():
        assert path.parent == run.root / "evaluate", name
        assert path.is_file() and path.stat().st_size > 0, name
    assert outputs["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confusion = json.loads(outputs["confusion_json"].read_text())
    assert confusion["test"] == json.loads(outputs["metrics"].read_text())["test"]["confusion"]


def test_metrics_json_follows_the_contract_and_agrees_with_predictions_csv(evaluated):
    run, outputs = evaluated
    result = json.loads(outputs["metrics"].read_text())
    classes = json.loads(run.artifact("ingest", "classes").read_text())
    assert {"classes", "good_class", "threshold", "escape_rate_target", "group_regex", "val",
            "test"} <= set(result)
    assert "test_groups" not in result
    assert (result["classes"], result["good_class"], result["group_regex"]) == (classes, "ok", None)
    assert 0.5 <= result["threshold"] <= 1.0
    assert result["escape_rate_target"] == 0.01
    assert result["model_sha256"] == atomic.sha256_file(run.artifact("train", "model"))

    rows = _rows(outputs["predictions"])
    test_paths = [r["path"] for r in read_splits(run.artifact("ingest", "splits"))
                  if r["split"] == "test"]
    assert [r["path"] for r in rows] == test_paths
    test = result["test"]
    assert test["n"] == result["n_test"] == len(rows)
    correct = sum(r["true"] == r["predicted"] for r in rows)
    assert sum(int(r["correct"]) for r in rows) == correct
    assert test["accuracy"] == pytest.approx(correct / len(rows))
    assert test["errors"] == len(rows) - correct
    assert test["accuracy"] > 0.5  # the stand-in learned something: the numbers mean something

    # the decisions can be recomputed from the CSV's scores with the reported threshold
    scores = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    decided = metrics.decide(scores, classes.index("ok"), result["threshold"])
    assert [classes[i] for i in decided] == [r["predicted"] for r in rows]
    assert [float(r["score"]) for r in rows] == [float(r[f"p_{r['predicted']}"]) for r in rows]
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for r in rows:
        confusion[classes.index(r["true"]), classes.index(r["predicted"])] += 1
    assert confusion.tolist() == test["confusion"]
    escapes = sum(r["true"] != "ok" and r["predicted"] == "ok" for r in rows)
    assert test["escapes"] == escapes
    assert test["defect_recall"] == pytest.approx(
        1 - escapes / sum(r["true"] != "ok" for r in rows))


def test_report_is_one_self_contained_page_with_the_numbers(evaluated):
    run, outputs = evaluated
    page = outputs["report"].read_text(encoding="utf-8")
    result = json.loads(outputs["metrics"].read_text())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "<script" not in page
    assert "data:image/png;base64," in page
    assert evaluate.accuracy_text(result["test"]) in page
    assert run.run_id in page and result["dataset_hash"] in page
    assert f"{result['threshold']:.4f}" in page
    curves = base64.b64encode(run.artifact("train", "curves").read_bytes()).decode()
    assert f"data:image/png;base64,{curves}" in page
    assert "No training curves" not in page


def test_report_shows_misclassified_test_images_worst_first(fresh_trained_run, tmp_path):
    run = _stand_in_train(_copy(fresh_trained_run, tmp_path), epochs=0)  # untrained: errs
    outputs = evaluate.run(evaluate.Config(misclassified_max=3), run)
    result = json.loads(outputs["metrics"].read_text())
    errors = result["test"]["errors"]
    assert errors > 3
    page = outputs["report"].read_text(encoding="utf-8")
    cards = re.findall(r'<div class="card( escape)?" title="([^"]*)">', page)
    assert len(cards) == 3
    assert f"Misclassified test images ({errors})" in page and f"first 3 of {errors}" in page
    wrong = {r["path"]: r for r in _rows(outputs["predictions"]) if r["correct"] == "0"}
    assert all(path in wrong for _, path in cards)
    assert [bool(escape) for escape, _ in cards] == [wrong[p]["predicted"] == "ok"
                                                     for _, p in cards]
    assert page.count("data:image/png;base64,") == 1 + 1 + 3  # confusion, curves, thumbnails


def test_misclassified_items_put_escapes_first_then_the_most_confident():
    rows = [{"path": f"/d/{i}.png", "group": str(i)} for i in range(5)]
    labels = np.array([1, 1, 0, 2, 0])
    predicted = np.array([2, 0, 1, 0, 0])  # 0: wrong, 1: escape, 2: false reject, 3: escape
    scores = np.array([[0.1, 0.2, 0.7], [0.6, 0.4, 0], [0.3, 0.7, 0], [0.9, 0, 0.1], [1, 0, 0]])
    items = evaluate.misclassified_items(rows, labels, predicted, scores, ["ok", "b", "c"], 0)
    assert [(i["path"], i["escape"]) for i in items] == [
        ("/d/3.png", True), ("/d/1.png", True), ("/d/0.png", False), ("/d/2.png", False)]
    assert items[0] == {"path": "/d/3.png", "group": "3", "true": "c", "predicted": "ok",
                        "score": 0.9, "escape": True, "good_score": 0.9}
    assert items[2]["good_score"] == 0.1


def test_report_escapes_file_and_class_names():
    result = {
        "good_class": "o<k", "threshold": 0.75, "escape_rate_target": 0.01,
        "gate": {"fail_below": None, "fail_below_defect_recall": None, "passed": True,
                 "failures": [], "notes": []},
        **{part: metrics.classification_metrics([0, 1], [1, 1], ["o<k", "b&d"], "o<k")
           for part in ("val", "test")},
    }
    card = {"path": '/x/<img src=x onerror="alert(1)">.png', "true": "o<k", "predicted": "b&d",
            "score": 0.9, "escape": False, "png": b"\x89PNG"}
    page = evaluate.render_report({"run": "<r>"}, result, b"\x89PNG", None, [card], 1)
    assert "No training curves" in page
    assert "<img src=x" not in page and "o<k" not in page and "<r>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png" in page
    assert "o&lt;k" in page and "b&amp;d" in page


def test_quality_gate_fails_the_stage_with_the_numbers(fresh_trained_run, tmp_path):
    run = _copy(fresh_trained_run, tmp_path)
    with pytest.raises(IndvisionError, match=r"quality gate failed: test accuracy [\d.]+ % "
                       r"\(\d+ errors? / \d+\) is below evaluate\.fail_below 101\.0 %"):
        evaluate.run(evaluate.Config(fail_below=1.01), run)
    gate = json.loads((run.root / "evaluate" / "metrics.json").read_text())["gate"]
    assert gate["passed"] is False  # the report of a failed gate is still written
    # a gate that is met passes
    evaluate.run(evaluate.Config(fail_below=0.0), run)


def test_unknown_good_class_is_a_did_you_mean_error(fresh_trained_run, tmp_path):
    run = _copy(fresh_trained_run, tmp_path)
    with pytest.raises(IndvisionError, match=r"good_class: 'okk' .*did you mean 'ok'\?"):
        reingest(run, good_class="okk")


def test_good_class_candidates_take_the_first_present_or_fall_back_to_argmax(
        fresh_trained_run, tmp_path):
    assert metrics.resolve_good_class(("intact", "ok", "spot"), ["ok", "spot"]) == "ok"
    assert metrics.resolve_good_class(["intact", "good"], ["ok", "spot"]) is None
    assert metrics.resolve_good_class(None, ["ok", "spot"]) is None

    run = reingest(_copy(fresh_trained_run, tmp_path), good_class=("intact", "good"))
    outputs = evaluate.run(evaluate.Config(), run)
    result = json.loads(outputs["metrics"].read_text())
    assert (result["good_class"], result["threshold"]) == (None, None)
    assert "defect_recall" not in result["test"]
    rows = _rows(outputs["predictions"])
    classes = result["classes"]
    scores = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    assert [classes[i] for i in scores.argmax(axis=1)] == [r["predicted"] for r in rows]


def test_grouped_views_are_also_decided_per_object(grouped_trained_run, tmp_path):
    run = _copy(grouped_trained_run, tmp_path)
    outputs = evaluate.run(evaluate.Config(), run)
    result = json.loads(outputs["metrics"].read_text())
    assert result["group_regex"] == "^(\\d+)_"
    rows = _rows(outputs["predictions"])
    groups = {r["group"] for r in rows}
    assert result["test_groups"]["n"] == result["n_test_groups"] == len(groups)
    assert result["test_groups"]["n"] < result["test"]["n"] == len(rows)
    assert all(re.fullmatch(r"(ok|scratch|spot)/\d{3}", g) for g in groups)
    # an object is good only when all its views pass the threshold
    ok = result["classes"].index("ok")
    object_good = {g: all(float(r["p_ok"]) >= result["threshold"] for r in rows
                          if r["group"] == g) for g in groups}
    fused = np.array(result["test_groups"]["confusion"])
    assert fused[:, ok].sum() == sum(object_good.values())
    page = outputs["report"].read_text(encoding="utf-8")
    assert evaluate.accuracy_text(result["test_groups"]) in page


def test_group_true_labels_flag_an_object_with_any_defective_view():
    labels, groups = [0, 1, 0, 0, 2, 2], ["p", "p", "q", "q", "r", "r"]
    assert metrics.group_true_labels(labels, groups, ["p", "q", "r"], 0).tolist() == [1, 0, 2]


def test_config_is_checked_when_the_pipeline_is_read(tmp_path):
    cfg = config.build_config("ingest", ingest.Config, {"good_class": ["ok", "ok_front"]})
    assert cfg.good_class == ("ok", "ok_front")
    assert config.build_config("ingest", ingest.Config, {"good_class": "ok"}).good_class == "ok"
    with pytest.raises(ConfigError, match="escape_rate_target"):
        config.build_config("evaluate", evaluate.Config, {"escape_rate_target": 1.5})
    with pytest.raises(ConfigError, match="empty list"):
        config.build_config("ingest", ingest.Config, {"good_class": []})
    with pytest.raises(ConfigError, match="did you mean 'fail_below'"):
        config.build_config("evaluate", evaluate.Config, {"fail_bellow": 0.9})


def test_gate_names_the_per_object_accuracy_when_views_are_grouped():
    objects = {"accuracy": 0.5, "n": 2, "errors": 1}
    gate = evaluate.check_gate(evaluate.Config(fail_below=0.9), objects, "per object")
    assert gate["passed"] is False
    assert gate["failures"][0].startswith("test accuracy per object 50.0 % (1 error / 2)")
    assert evaluate.check_gate(evaluate.Config(fail_below=0.5), objects, "per object")["passed"]
