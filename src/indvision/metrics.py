"""Decisions and metrics in plain numpy, shared by evaluate, verify and the edge runtime.

One implementation, so that the label a device prints is computed exactly as the label the
evaluation report counted.

Decision rule. Without a good class it is the arg-max. With a good class ``g`` (``ok``,
``intact``) and a threshold ``t``, an image is good only when ``P(g) >= t``; otherwise it gets the
most likely defect class. Raising ``t`` trades false rejects for fewer escapes (defective parts
passed as good); evaluate picks the lowest ``t`` that meets the escape-rate target on validation.

Groups. Several images of one object (a parcel's top and side views) are decided together, as a
multi-camera tunnel does: the object takes the scores of its least-good view, so it is defective
when any view is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from indvision.errors import IndvisionError, did_you_mean


def decide(scores: np.ndarray, good_index: int | None = None,
           threshold: float | None = None) -> np.ndarray:
    """Class index per row of ``scores`` (N x C probabilities) under the decision rule above."""
    scores = np.asarray(scores, dtype=np.float64)
    if good_index is None or threshold is None:
        return scores.argmax(axis=1)
    others = scores.copy()
    others[:, good_index] = -np.inf
    return np.where(scores[:, good_index] >= threshold, good_index, others.argmax(axis=1))


def fuse_groups(scores: np.ndarray, groups: Sequence[str],
                good_index: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-group scores: each group takes the row of its least-good member.

    Returns (group names in first-seen order, the member index chosen per group, scores).
    Without a good class the group takes the mean of its members' scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        order.setdefault(group, []).append(index)
    names = list(order)
    chosen, fused = [], []
    for name in names:
        members = order[name]
        if good_index is None:
            chosen.append(members[0])
            fused.append(scores[members].mean(axis=0))
        else:
            pick = members[int(np.argmin(scores[members, good_index]))]
            chosen.append(pick)
            fused.append(scores[pick])
    n_classes = scores.shape[1] if scores.ndim == 2 else 0
    fused_scores = np.array(fused, dtype=np.float64).reshape(len(names), n_classes)
    return names, np.array(chosen, dtype=int), fused_scores


def decide_groups(scores: np.ndarray, labels: Sequence[int], groups: Sequence[str],
                  good_index: int | None, threshold: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per group (first-seen order): its true class (:func:`group_true_labels`) and the
    decision on its fused scores (:func:`fuse_groups`, then :func:`decide`)."""
    names, _, fused = fuse_groups(scores, groups, good_index)
    return (group_true_labels(labels, groups, names, good_index),
            decide(fused, good_index, threshold))


def threshold_for_escape_rate(scores: np.ndarray, labels: np.ndarray, good_index: int,
                              target: float, floor: float = 0.5) -> float:
    """Lowest good-class threshold (at least ``floor``) whose escape rate is ≤ ``target``.

    ``labels`` are true class indices. The escape rate is the share of defective items whose
    good score reaches the threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    defect_good_scores = np.sort(scores[np.asarray(labels) != good_index, good_index])[::-1]
    if defect_good_scores.size == 0:
        return floor
    allowed = int(np.floor(target * defect_good_scores.size + 1e-9))
    if allowed >= defect_good_scores.size:
        return floor
    # every defective item scoring at or above the threshold escapes: sit just above the
    # (allowed+1)-th highest defective good-score
    threshold = float(np.nextafter(defect_good_scores[allowed], np.inf))
    return float(min(max(threshold, floor), 1.0))


def false_reject_cap(scores: np.ndarray, labels: np.ndarray, good_index: int,
                     max_rate: float) -> float | None:
    """Highest good-class threshold that rejects at most ``floor(max_rate × good items)`` of the
    good items (a good item is rejected when its good score is below the threshold); None when
    there are no good items or the rate allows rejecting all of them.

    The escape-rate rule alone follows the single most good-looking defective item: on a small
    validation split the target allows no escape at all, and one mislabelled or unusual image
    scored 0.999 good puts the threshold above every good part. This cap bounds that price.
    """
    scores = np.asarray(scores, dtype=np.float64)
    good_scores = np.sort(scores[np.asarray(labels) == good_index, good_index])
    allowed = int(np.floor(max_rate * good_scores.size + 1e-9))
    if good_scores.size == 0 or allowed >= good_scores.size:
        return None
    return float(good_scores[allowed])  # the `allowed` lowest sit below it


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance that a random positive (defective) item scores
    higher than a random negative one, ties counting half (Mann–Whitney U from average
    ranks). None unless both kinds are present."""
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied values share their mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str],
                           good_class: str | None = None) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

    ``confusion[i][j]`` counts items of true class ``i`` predicted as ``j``. Macro-F1 averages
    the classes that occur in the split or its predictions (scikit-learn's default label set):
    a child's own test split may hold its new class alone, and the classes it does not hold
    have no F1 to average — counted as 0 they made 30 right answers out of 30 a macro-F1 of
    0.167. With a good class,
    also ``defect_recall`` (defective items flagged as any defect: 1 − escape rate) and
    ``false_reject_rate`` (good items flagged as defective).
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        predicted, actual = confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(actual)}
    n = int(y_true.size)
    seen = [name for i, name in enumerate(classes)
            if confusion[i, :].sum() or confusion[:, i].sum()]
    result: dict[str, Any] = {
        "n": n,
        "accuracy": float((y_true == y_pred).mean()) if n else 0.0,
        "errors": int((y_true != y_pred).sum()),
        "macro_f1": float(np.mean([per_class[name]["f1"] for name in seen])) if seen else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }
    if good_class is not None and good_class in classes:
        g = list(classes).index(good_class)
        defective = y_true != g
        good = ~defective
        result["defect_recall"] = (float((y_pred[defective] != g).mean())
                                   if defective.any() else None)
        result["false_reject_rate"] = float((y_pred[good] != g).mean()) if good.any() else None
        result["escapes"] = int((y_pred[defective] == g).sum())
        result["false_rejects"] = int((y_pred[good] != g).sum())
    return result


# Names a class meaning "no defect" goes by, compared lower-case with '-' and ' ' read as '_'.
# ``good_class: auto`` picks the one class of a dataset named like this.
GOOD_CLASS_NAMES = (
    "ok", "okay", "good", "fine", "normal", "pass", "passed", "intact", "free", "no_defect",
    "nodefect", "no_defects", "defect_free", "non_defective", "undamaged", "clean", "nominal",
    "accept", "accepted", "acceptable", "ok_front", "good_parts",
)
AUTO = "auto"


def _normalised(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def recognised_good_classes(classes: Sequence[str]) -> list[str]:
    """The classes whose names are common names of the good class (:data:`GOOD_CLASS_NAMES`)."""
    return [c for c in classes if _normalised(c) in GOOD_CLASS_NAMES]


def resolve_good_class(setting: tuple[str, ...] | str | None, classes: Sequence[str],
                       key: str = "ingest.good_class") -> str | None:
    """The good class to use for this dataset's ``classes``, or None for arg-max decisions.

    ``auto`` takes the one class named like a good class (:data:`GOOD_CLASS_NAMES`: ok, good,
    fine, normal, intact, ...), none when no class is, and refuses to guess between two. A
    single name must be a class (else a did-you-mean error: a typo must not silently turn the
    escape-rate threshold off). A list of candidates picks the first present, else None.
    """
    if setting is None:
        return None
    if setting == AUTO:
        found = recognised_good_classes(classes)
        if len(found) > 1:
            raise IndvisionError(
                f"{key}: {' and '.join(repr(c) for c in found)} both look like the good class "
                f"(no defect); set {key} to the one that is, e.g. --set {key}={found[0]}")
        return found[0] if found else None
    if isinstance(setting, str):
        if setting not in classes:
            raise IndvisionError(
                f"{key}: '{setting}' is not a class of this dataset"
                f"{did_you_mean(setting, classes)}; classes are {', '.join(classes)}. Set it to "
                "one of them, to auto (a class named ok, good, fine, intact, ...), to a list of "
                "candidates ([ok, ok_front, intact]), or to null for arg-max decisions")
        return setting
    for name in setting:
        if name in classes:
            return name
    return None


def group_true_labels(labels: Sequence[int], groups: Sequence[str], names: Sequence[str],
                      good_index: int | None) -> np.ndarray:
    """The true class of each group in ``names``: its members' label when they agree.

    Otherwise (a CSV can group mixed labels) an object is defective when any view is: the most
    common defect label among its members; without a good class, the most common label.
    """
    members: dict[str, list[int]] = {}
    for label, group in zip(labels, groups, strict=True):
        members.setdefault(group, []).append(int(label))
    result = []
    for name in names:
        votes = members[name]
        if good_index is not None and any(v != good_index for v in votes):
            votes = [v for v in votes if v != good_index]
        counts = Counter(votes)
        best = max(counts.values())
        result.append(min(v for v, c in counts.items() if c == best))
    return np.array(result, dtype=int)
