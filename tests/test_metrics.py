"""indvision.metrics against numbers worked out by hand (numpy only: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from indvision import metrics

CLASSES = ["a", "b", "c"]
# true a (4): predicted a, a, b, c  → row [2, 1, 1]
# true b (3): predicted b, b, a     → row [1, 2, 0]
# true c (3): predicted c, c, b     → row [0, 1, 2]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]


def test_classification_metrics_match_a_hand_computed_confusion_matrix():
    result = metrics.classification_metrics(Y_TRUE, Y_PRED, CLASSES)

    assert result["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert result["n"] == 10
    assert result["errors"] == 4
    assert result["accuracy"] == pytest.approx(0.6)
    # column sums (predicted as): a 3, b 4, c 3; row sums (support): a 4, b 3, c 3
    expected = {
        # precision  recall  F1 = 2PR / (P + R)
        "a": (2 / 3, 2 / 4, 4 / 7),  # 2·(2/3)(1/2) / (7/6) = 4/7 ≈ 0.5714
        "b": (2 / 4, 2 / 3, 4 / 7),
        "c": (2 / 3, 2 / 3, 2 / 3),
    }
    for name, (precision, recall, f1) in expected.items():
        got = result["per_class"][name]
        assert got["precision"] == pytest.approx(precision), name
        assert got["recall"] == pytest.approx(recall), name
        assert got["f1"] == pytest.approx(f1), name
    assert [result["per_class"][n]["support"] for n in CLASSES] == [4, 3, 3]
    assert result["macro_f1"] == pytest.approx(38 / 63)  # (4/7 + 4/7 + 2/3) / 3 ≈ 0.6032
    assert "defect_recall" not in result


def test_macro_f1_averages_the_classes_a_split_holds_or_predicts():
    # a child's own test split: its new class alone, every image right
    alone = metrics.classification_metrics([2, 2, 2], [2, 2, 2], CLASSES)
    assert alone["macro_f1"] == pytest.approx(1.0) and alone["accuracy"] == 1.0
    # a class predicted but never true is a mistake that counts (its F1 is 0)
    wrong = metrics.classification_metrics([2, 2, 2, 2], [2, 2, 2, 0], CLASSES)
    assert wrong["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2)


def test_classification_metrics_with_a_good_class_count_escapes_and_false_rejects():
    result = metrics.classification_metrics(Y_TRUE, Y_PRED, CLASSES, good_class="a")
    # 6 defective (b, c) items predicted b, b, a, c, c, b: one escape (passed as a)
    assert result["escapes"] == 1
    assert result["defect_recall"] == pytest.approx(5 / 6)
    # 4 good (a) items predicted a, a, b, c: two false rejects
    assert result["false_rejects"] == 2
    assert result["false_reject_rate"] == pytest.approx(0.5)


def test_classification_metrics_never_divides_by_zero_for_an_unpredicted_class():
    result = metrics.classification_metrics([0, 1, 2], [0, 0, 0], CLASSES)
    assert result["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result["per_class"]["a"]["precision"] == pytest.approx(1 / 3)


SCORES = np.array([
    [0.60, 0.30, 0.10],  # good is the arg-max but below a 0.7 threshold → best defect (1)
    [0.30, 0.20, 0.50],  # good is not the arg-max, yet reaches a 0.25 threshold
    [0.90, 0.05, 0.05],
])


def test_decide_is_argmax_without_good_class_or_threshold():
    assert metrics.decide(SCORES).tolist() == [0, 2, 0]
    assert metrics.decide(SCORES, good_index=0).tolist() == [0, 2, 0]


def test_decide_with_threshold_passes_only_rows_whose_good_score_reaches_it():
    assert metrics.decide(SCORES, good_index=0, threshold=0.7).tolist() == [1, 2, 0]
    assert metrics.decide(SCORES, good_index=0, threshold=0.25).tolist() == [0, 0, 0]
    assert metrics.decide(SCORES, good_index=0, threshold=0.9).tolist() == [1, 2, 0]  # 0.9 ≥ 0.9


def _escape_rate(scores, labels, good_index, threshold):
    predicted = metrics.decide(scores, good_index, threshold)
    defective = labels != good_index
    return float((predicted[defective] == good_index).mean())


# good class 0; five defective items with P(good) 0.9, 0.8, 0.3, 0.2, 0.1; three good items
GOOD_SCORES = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.95, 0.85, 0.7])
LABELS = np.array([1, 2, 1, 2, 1, 0, 0, 0])
VAL_SCORES = np.stack([GOOD_SCORES, (1 - GOOD_SCORES) / 2, (1 - GOOD_SCORES) / 2], axis=1)


def test_threshold_allows_exactly_the_target_share_of_escapes():
    # target 0.2 of 5 defects → 1 escape allowed: sit just above the 2nd highest (0.8)
    threshold = metrics.threshold_for_escape_rate(VAL_SCORES, LABELS, 0, target=0.2)
    assert 0.8 < threshold < 0.8 + 1e-12
    assert _escape_rate(VAL_SCORES, LABELS, 0, threshold) == pytest.approx(0.2)
    # a good item at 0.85 still passes; the one at 0.7 is now a false reject
    assert metrics.decide(VAL_SCORES, 0, threshold)[5:].tolist() == [0, 0, 1]


def test_threshold_for_target_zero_sits_just_above_the_highest_defect():
    threshold = metrics.threshold_for_escape_rate(VAL_SCORES, LABELS, 0, target=0.0)
    assert 0.9 < threshold < 0.9 + 1e-12
    assert _escape_rate(VAL_SCORES, LABELS, 0, threshold) == 0.0
    # 0.19 of 5 defects is 0.95 of an item: still no escape allowed
    assert metrics.threshold_for_escape_rate(VAL_SCORES, LABELS, 0, target=0.19) == threshold


def test_threshold_never_goes_below_the_floor():
    low = np.array([[0.3, 0.7], [0.2, 0.8], [0.9, 0.1]])
    labels = np.array([1, 1, 0])
    assert metrics.threshold_for_escape_rate(low, labels, 0, target=0.0) == 0.5
    assert metrics.threshold_for_escape_rate(low, labels, 0, target=0.0, floor=0.6) == 0.6
    # every defect may escape, or there are none: the floor
    assert metrics.threshold_for_escape_rate(VAL_SCORES, LABELS, 0, target=1.0) == 0.5
    assert metrics.threshold_for_escape_rate(low[2:], labels[2:], 0, target=0.0) == 0.5


def test_false_reject_cap_rejects_at_most_the_allowed_share_of_good_items():
    # good items score 0.95, 0.85, 0.7: a third of 3 may be rejected → the one at 0.7
    assert metrics.false_reject_cap(VAL_SCORES, LABELS, 0, 0.34) == 0.85
    assert metrics.false_reject_cap(VAL_SCORES, LABELS, 0, 0.0) == 0.7  # none rejected
    assert metrics.false_reject_cap(VAL_SCORES, LABELS, 0, 1.0) is None  # no cap
    assert metrics.false_reject_cap(VAL_SCORES[:5], LABELS[:5], 0, 0.1) is None  # no good items


def test_fuse_groups_takes_the_least_good_member():
    scores = np.array([
        [0.9, 0.1],  # p1 top
        [0.4, 0.6],  # p1 side: least good → p1 takes this row
        [0.7, 0.3],  # p2 top: least good
        [0.8, 0.2],  # p2 side
        [0.6, 0.4],  # p3 alone
    ])
    names, chosen, fused = metrics.fuse_groups(scores, ["p1", "p1", "p2", "p2", "p3"], 0)
    assert names == ["p1", "p2", "p3"]
    assert chosen.tolist() == [1, 2, 4]
    np.testing.assert_array_equal(fused, scores[[1, 2, 4]])
    assert metrics.decide(fused, 0, 0.65).tolist() == [1, 0, 1]


def test_fuse_groups_without_good_class_averages_and_handles_no_items():
    scores = np.array([[0.9, 0.1], [0.3, 0.7]])
    names, _, fused = metrics.fuse_groups(scores, ["g", "g"], None)
    assert names == ["g"]
    np.testing.assert_allclose(fused, [[0.6, 0.4]])
    names, chosen, fused = metrics.fuse_groups(np.zeros((0, 2)), [], 0)
    assert (names, chosen.size, fused.shape) == ([], 0, (0, 2))




def test_auroc_is_the_chance_a_defect_outscores_a_good_item_ties_counting_half() -> None:
    from indvision.metrics import auroc

    assert auroc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert auroc([0.4, 0.3, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.1, 0.5, 0.5, 0.4], [0, 1, 0, 1]) == 0.625  # sklearn's figure
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([0.1, 0.2], [0, 0]) is None  # no defect: undefined, not a number
