"""The decision record and the one rule that names objects (indvision.decision)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indvision import dataset, decision
from indvision.errors import IndvisionError
from indvision.rundir import Run


def test_group_key_uses_the_regex_on_the_file_name():
    path = "/data/damaged/x_top.jpg"
    assert decision.group_key("/data/damaged/0042_top.jpg", r"^(\d+)_") == "0042"
    assert decision.group_key(path, r"^(\d+)_", fallback=path) == "/data/damaged/x_top.jpg"
    assert decision.group_key("/data/a/0042_top.jpg", None, fallback="/data/a/0042_top.jpg") \
        == "/data/a/0042_top.jpg"


def test_group_key_is_scoped_by_a_known_label_and_takes_the_whole_match_without_a_group():
    assert decision.group_key("/d/ok/0001_top.png", r"^(\d+)_", "ok") == "ok/0001"
    assert decision.group_key("/d/dent/0001_top.png", r"^(\d+)_", "dent") == "dent/0001"
    assert decision.group_key("/d/0001_top.png", r"^\d+") == "0001"
    assert decision.group_key("/d/top.png", r"^(\d+)_") is None


def test_ingest_groups_by_csv_column_or_by_regex_the_same_way():
    """The same three files grouped by a CSV column or by the regex: the same partition."""
    paths = ["/d/ok/1_a.png", "/d/ok/1_b.png", "/d/ok/2_a.png"]
    by_regex = [dataset.Item(p, "ok", sha256=str(i) * 64) for i, p in enumerate(paths)]
    by_column = [dataset.Item(p, "ok", group=g) for p, g in zip(paths, "112", strict=True)]
    assert dataset.assign_groups(by_regex, r"^(\d+)_") == "regex"
    assert dataset.assign_groups(by_column, None) == "column"
    assert [i.group for i in by_regex] == ["ok/1", "ok/1", "ok/2"]
    assert [i.group for i in by_column] == ["1", "1", "2"]
    ungrouped = [dataset.Item(p, "ok", sha256=str(i) * 64) for i, p in enumerate(paths)]
    assert dataset.assign_groups(ungrouped, None) is None
    assert len({i.group for i in ungrouped}) == 3  # each image its own object


def test_most_common_views():
    assert decision.most_common_views(["a", "a", "b", "b", "c"]) == 2
    assert decision.most_common_views(["a", "b"]) == 1
    assert decision.most_common_views([]) is None


def test_a_record_decides_as_metrics_does_and_round_trips():
    record = decision.Decision(("damaged", "intact"), good_class="intact", group_by="regex",
                               group_regex=r"^(\d+)_", views_per_object=2)
    assert record.good_index == 1 and record.grouped and record.threshold is None
    calibrated = record.with_threshold(0.8, "groups", 0.02)
    scores = np.array([[0.3, 0.7], [0.1, 0.9]])
    assert record.decide(scores).tolist() == [1, 1]  # arg-max until a threshold exists
    assert calibrated.decide(scores).tolist() == [0, 1]  # P(intact) 0.7 < 0.8: damaged
    truth, decided = calibrated.decide_objects(scores, [1, 1], ["p", "p"])
    assert truth.tolist() == [1] and decided.tolist() == [0]  # one bad view rejects the parcel
    assert decision.Decision.from_dict(calibrated.to_dict()) == calibrated
    assert calibrated.groups_of([{"group": "p"}, {"group": "q"}]) == ["p", "q"]
    assert decision.Decision(("a", "b")).groups_of([{"group": "p"}]) is None


def test_bundles_from_before_group_by_decided_per_object_when_they_had_a_regex():
    old = {"good_class": "ok", "threshold": 0.6, "escape_rate_target": 0.01,
           "group_regex": r"^(\d+)_"}
    record = decision.Decision.from_dict(old, classes=["bad", "ok"])
    assert record.group_by == "regex" and record.good_index == 1 and record.threshold == 0.6
    plain = decision.Decision.from_dict({"good_class": None, "threshold": None,
                                         "group_regex": None}, classes=["a", "b"])
    assert not plain.grouped


def test_a_record_refuses_a_good_class_that_is_not_a_class():
    with pytest.raises(ValueError, match="not one of"):
        decision.Decision(("a", "b"), good_class="ok")
    with pytest.raises(ValueError, match="group_by"):
        decision.Decision(("a", "b"), group_by="folder")


def test_read_for_run_prefers_evaluates_record_and_names_a_run_without_one(tmp_path: Path):
    run = Run.create(tmp_path, "p", 0, {}, "hash")
    with pytest.raises(IndvisionError, match="no decision record"):
        decision.read_for_run(run)
    for stage, threshold in (("ingest", None), ("evaluate", 0.7)):
        path = run.stage_dir(stage) / "decision.json"
        record = decision.Decision(("bad", "ok"), good_class="ok", threshold=threshold)
        path.write_text(json.dumps(record.to_dict()))
        run.start_stage(stage)
        run.finish_stage(stage, {"decision": path}, 0.0)
        assert decision.read_for_run(run).threshold == threshold


GROUPED_PIPELINE = """
name: {name}
seed: 5
stages:
  ingest: {{good_class: ok{regex}}}
  train: {{backbone: small_cnn, weights: none, height: 32, width: 32, batch_size: 8,
           head_steps: 9, object_steps: 6, workers: 1, tensorboard: false}}
  evaluate: {{escape_rate_target: 0.1}}
  export: {{formats: [onnx, tflite_int8], calibration_images: 16}}
  verify: {{}}
"""


def _two_view_objects(root: Path, per_class: int = 10) -> list[tuple[str, str, str]]:
    """Objects of two views ``<id>_a.png`` / ``<id>_b.png`` in class folders; a defective
    object shows its defect in view a only. Returns (relative path, label, object id) rows."""
    import cv2

    from tests.conftest import draw_tiny

    rows = []
    for c, label in enumerate(("ok", "scratch")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            for view, drawn in (("a", label), ("b", "ok")):
                name = f"{c}{i:03d}_{view}.png"
                cv2.imwrite(str(root / label / name),
                            draw_tiny(drawn, np.random.default_rng([c, i, ord(view)]), 40))
                rows.append((f"{label}/{name}", label, f"{c}{i:03d}"))
    return rows


def _partition(rows: list[dict[str, str]]) -> list[tuple[tuple[str, str, str], ...]]:
    """The objects of splits.csv rows as sets of (path, label, split), names left out."""
    members: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        members.setdefault(r["group"], []).append((r["path"], r["label"], r["split"]))
    return sorted(tuple(sorted(m)) for m in members.values())


@pytest.mark.slow  # trains, exports and verifies two tiny runs
def test_a_csv_group_column_decides_exactly_like_the_group_regex(tmp_path: Path) -> None:
    from indvision import config, pipeline
    from tests.conftest import write_pipeline

    tree = tmp_path / "data"
    listing = _two_view_objects(tree)
    csv_path = tree / "views.csv"
    csv_path.write_text("path,label,group\n" + "".join(f"{p},{label},{g}\n"
                                                        for p, label, g in listing))
    runs = {}
    for name, data, regex in (("by_regex", tree, ", group_regex: '^(\\d+)_'"),
                              ("by_column", csv_path, "")):
        yaml = write_pipeline(tmp_path / f"{name}.yaml",
                              GROUPED_PIPELINE.format(name=name, regex=regex))
        runs[name] = pipeline.run_pipeline(config.load_pipeline(str(yaml), data=str(data)),
                                           tmp_path / "exports")
    regex, column = runs["by_regex"], runs["by_column"]

    def read(run: Run, stage: str, file: str) -> dict:
        return json.loads((run.root / stage / file).read_text())

    # the same objects in the same splits
    rows = {k: dataset.read_splits(r.artifact("ingest", "splits")) for k, r in runs.items()}
    assert _partition(rows["by_regex"]) == _partition(rows["by_column"])
    assert len({r["group"] for r in rows["by_regex"]}) == len(listing) // 2
    facts = {k: read(r, "ingest", "decision.json") for k, r in runs.items()}
    assert (facts["by_regex"]["group_by"], facts["by_column"]["group_by"]) == ("regex", "column")
    assert facts["by_regex"]["views_per_object"] == facts["by_column"]["views_per_object"] == 2
    # the objects phase trained on the same objects: the same history, epoch by epoch
    histories = [(r.root / "train" / "history.csv").read_text() for r in (regex, column)]
    assert "objects" in histories[0] and histories[0] == histories[1]
    # per-object metrics, verify's verdicts and the bundle's decision
    evaluations = [read(r, "evaluate", "metrics.json") for r in (regex, column)]
    assert evaluations[0]["test_groups"] == evaluations[1]["test_groups"]
    assert evaluations[0]["test_groups"]["n"] < evaluations[0]["test"]["n"]
    parities = [read(r, "verify", "parity.json")["formats"] for r in (regex, column)]
    for key in ("onnx", "tflite_int8"):
        assert parities[0][key]["objects"] == parities[1][key]["objects"], key
        assert parities[0][key]["shippable"] == parities[1][key]["shippable"], key
    decisions = [read(r, "bundle", "model.json")["decision"] for r in (regex, column)]
    differs = {"group_by", "group_regex"}
    assert {k: v for k, v in decisions[0].items() if k not in differs} == \
        {k: v for k, v in decisions[1].items() if k not in differs}
    assert decisions[0]["threshold_calibrated_on"] == "groups"
