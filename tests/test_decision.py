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
