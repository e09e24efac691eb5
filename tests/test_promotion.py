"""The promotion gate's verdict: per old class recall and the escape rate, parent vs child."""

from __future__ import annotations

from indvision.promotion import judge

LABELS = ["ok", "ok", "ok", "dent", "dent", "scratch", "scratch", "new"]
KEYS = [f"img{i}.png" for i in range(len(LABELS))]
OLD = ["dent", "ok", "scratch"]


def test_a_child_that_keeps_every_answer_passes_and_changes_are_listed() -> None:
    parent = ["ok", "ok", "dent", "dent", "dent", "scratch", "scratch", "new"]
    child = ["ok", "ok", "ok", "dent", "dent", "scratch", "scratch", "new"]  # one gained
    verdict = judge(LABELS, parent, child, KEYS, OLD, "ok", 0.0)
    assert verdict["passed"] and verdict["failures"] == []
    assert verdict["changed"] == [{"item": "img2.png", "label": "ok", "parent": "dent",
                                   "child": "ok"}]
    assert (verdict["lost"], verdict["gained"]) == (0, 1)
    assert (verdict["parent_errors"], verdict["child_errors"]) == (1, 0)
    assert set(verdict["classes"]) == set(OLD)  # the new class is not the parent's to judge


def test_one_lost_answer_of_an_old_class_is_refused_by_default_and_said() -> None:
    parent = list(LABELS)
    child = ["ok", "ok", "ok", "dent", "dent", "scratch", "dent", "new"]
    verdict = judge(LABELS, parent, child, KEYS, OLD, "ok", 0.0)
    assert not verdict["passed"]
    assert verdict["failures"] == ["class 'scratch' recall 100.0 % → 50.0 % (−50.0 points, "
                                   "allowed 0.0)"]
    assert verdict["classes"]["scratch"]["drop"] == 0.5
    assert judge(LABELS, parent, child, KEYS, OLD, "ok", 0.5)["passed"]  # within the budget


def test_an_escape_is_a_regression_even_when_recall_is_counted_elsewhere() -> None:
    parent = list(LABELS)
    child = ["ok", "ok", "ok", "ok", "dent", "scratch", "scratch", "new"]  # a dent passes
    verdict = judge(LABELS, parent, child, KEYS, OLD, "ok", 0.0)
    assert not verdict["passed"]
    assert any(f.startswith("escape rate 0.0 % → 20.0 %") for f in verdict["failures"])
    assert any(f.startswith("class 'dent'") for f in verdict["failures"])
