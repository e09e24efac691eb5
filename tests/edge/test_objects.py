"""Objects from views (:mod:`indvision.edge.objects`), without a model: fusing scores (the
object takes its least-good view) and deciding when an object still arriving is complete."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from indvision import decision, metrics
from indvision.edge.objects import (
    ObjectRule,
    PendingObjects,
    decide_object,
    fuse_objects,
    object_rule,
)
from indvision.errors import IndvisionError

CLASSES = ("ok", "spot")
REGEX = r"^(\d+)_"


def results(rows: np.ndarray) -> list[dict]:
    """A stand-in for EdgeClassifier.results: good class "ok" (index 0), arg-max."""
    return [{"label": CLASSES[int(np.argmax(r))], "score": float(np.max(r)),
             "scores": dict(zip(CLASSES, map(float, r), strict=True))}
            for r in rows]


def test_fuse_objects_takes_the_least_good_view() -> None:
    paths = ["a/1_top.png", "a/1_side.png", "a/2_top.png", "b/lonely.png", "a/2_side.png"]
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.6, 0.4], [0.95, 0.05]])
    objects = fuse_objects(paths, probs, REGEX, 0, results)
    assert [o["group"] for o in objects] == ["1", "2", "b/lonely.png"]  # first-seen order
    assert [o["views"] for o in objects] == [["a/1_top.png", "a/1_side.png"],
                                             ["a/2_top.png", "a/2_side.png"], ["b/lonely.png"]]
    assert [o["decided_by"] for o in objects] == ["a/1_side.png", "a/2_top.png", "b/lonely.png"]
    assert [o["label"] for o in objects] == ["spot", "ok", "ok"]
    *_, fused = metrics.fuse_groups(probs, [decision.group_key(p, REGEX, fallback=p)
                                              for p in paths], 0)
    assert [o["scores"] for o in objects] == [r["scores"] for r in results(fused)]
    assert list(objects[0]) == ["group", "label", "score", "scores", "views", "decided_by"]
    assert fuse_objects([], np.zeros((0, 2)), REGEX, 0, results) == []


def row(ok: float) -> np.ndarray:
    return np.array([ok, 1.0 - ok])


def test_an_object_is_complete_with_its_views() -> None:
    pending = PendingObjects(REGEX, views=2, timeout=None)
    assert pending.add("1_top.png", row(0.9), now=0.0) == []
    assert pending.add("2_top.png", row(0.9), now=0.1) == []
    done = pending.add("1_side.png", None, now=0.2)  # unreadable views count too
    assert done == [[("1_top.png", done[0][0][1]), ("1_side.png", None)]]
    assert len(pending) == 1
    assert pending.expired(now=100.0) == []  # no timeout: only the count or the end
    assert [[p for p, _ in views] for views in pending.flush()] == [["2_top.png"]]
    assert len(pending) == 0 and pending.flush() == []


def test_an_object_is_complete_when_no_view_arrived_for_the_timeout() -> None:
    pending = PendingObjects(REGEX, views=None, timeout=1.0)
    pending.add("1_top.png", row(0.9), now=0.0)
    pending.add("2_top.png", row(0.9), now=0.5)
    pending.add("1_side.png", row(0.2), now=0.8)  # a new view restarts object 1's clock
    assert pending.expired(now=1.4) == []
    assert [[p for p, _ in v] for v in pending.expired(now=1.5)] == [["2_top.png"]]
    assert [[p for p, _ in v] for v in pending.expired(now=1.8)] == [["1_top.png", "1_side.png"]]


def test_a_file_the_regex_does_not_match_is_an_object_at_once() -> None:
    pending = PendingObjects(REGEX, views=3, timeout=None)
    assert [[p for p, _ in v] for v in pending.add("x/lonely.png", row(0.5), 0.0)] == [
        ["x/lonely.png"]]
    assert len(pending) == 0


def test_decide_object_uses_the_readable_views_only() -> None:
    views = [("1_top.png", row(0.9)), ("1_side.png", None), ("1_back.png", row(0.4))]
    line = decide_object(views, REGEX, 0, results)
    assert line["views"] == ["1_top.png", "1_back.png"] and line["decided_by"] == "1_back.png"
    assert line["label"] == "spot"
    assert decide_object([("1_top.png", None)], REGEX, 0, results) is None


def test_object_rule_comes_from_the_bundle_or_the_options() -> None:
    plain = SimpleNamespace(group_regex=None, views_per_object=None)
    assert object_rule(plain) is None
    assert object_rule(plain, REGEX, 2, 0.5) == ObjectRule(REGEX, 2, 0.5)
    grouped = SimpleNamespace(group_regex=REGEX, views_per_object=3)
    assert object_rule(grouped) == ObjectRule(REGEX, 3, None)
    assert object_rule(grouped, views=2).views == 2  # the option wins
    with pytest.raises(IndvisionError, match="--views must be at least 1"):
        object_rule(grouped, views=0)
    with pytest.raises(IndvisionError, match="--object-timeout must be > 0"):
        object_rule(grouped, timeout=0.0)
    with pytest.raises(IndvisionError, match="not a valid regular expression"):
        object_rule(plain, "(unclosed")
