"""The promotion gate: a child replaces its parent on the device only if no old class regresses.

Champion/challenger on the parent's own test split (kept in the parent run, see
:mod:`indvision.lineage`): both models decide every image (per object where views are
grouped) by their own decision records; for each of the parent's classes the child's recall
must stay within ``max_recall_drop`` of the parent's, and where a good class exists the child's
escape rate (defective parts called good) may rise by no more than that either. The default,
0.0, means no old class may lose a single right answer more than it gains.

A child that fails is still exported and reported, but not promoted: verify leaves
``latest.json`` on the parent, and the pipeline ends the run with exit 1 and one line naming
the class that regressed and by how much (:func:`refusal`).

:func:`judge` is pure (labels and decisions in, the verdict out); evaluate calls it and writes
``evaluate/promotion.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from indvision import atomic

ARTIFACT = "promotion"
CHANGED_LISTED = 100  # changed decisions listed in promotion.json (all are counted)


def _recall(labels: Sequence[str], calls: Sequence[str], label: str) -> float | None:
    hits = [call == label for truth, call in zip(labels, calls, strict=True) if truth == label]
    return sum(hits) / len(hits) if hits else None


def _escape_rate(labels: Sequence[str], calls: Sequence[str], good: str) -> float | None:
    defective = [call == good for truth, call in zip(labels, calls, strict=True) if truth != good]
    return sum(defective) / len(defective) if defective else None


def judge(labels: Sequence[str], parent_calls: Sequence[str], child_calls: Sequence[str],
          keys: Sequence[str], old_classes: Sequence[str], good_class: str | None,
          max_recall_drop: float) -> dict[str, Any]:
    """Compare the parent's and the child's decisions (class names) on the parent's test
    items (``keys``: their paths or object ids). Returns the verdict: per old class both
    recalls and the drop, the escape rates, every item whose decision changed, ``passed`` and
    one ``failures`` line per regression."""
    per_class, failures = {}, []
    for name in old_classes:
        before, after = _recall(labels, parent_calls, name), _recall(labels, child_calls, name)
        if before is None:
            continue
        drop = before - after
        per_class[name] = {"n": sum(t == name for t in labels), "parent_recall": before,
                           "child_recall": after, "drop": drop}
        if drop > max_recall_drop + 1e-12:
            failures.append(f"class '{name}' recall {100 * before:.1f} % → {100 * after:.1f} % "
                            f"(−{100 * drop:.1f} points, allowed {100 * max_recall_drop:.1f})")
    escapes = None
    if good_class is not None:
        before = _escape_rate(labels, parent_calls, good_class)
        after = _escape_rate(labels, child_calls, good_class)
        if before is not None:
            escapes = {"parent": before, "child": after, "rise": after - before}
            if after - before > max_recall_drop + 1e-12:
                failures.append(f"escape rate {100 * before:.1f} % → {100 * after:.1f} % "
                                f"(+{100 * (after - before):.1f} points, allowed "
                                f"{100 * max_recall_drop:.1f})")
    changed = [{"item": key, "label": truth, "parent": p, "child": c}
               for key, truth, p, c in zip(keys, labels, parent_calls, child_calls, strict=True)
               if p != c]
    return {
        "n": len(labels), "max_recall_drop": max_recall_drop, "classes": per_class,
        "escape_rate": escapes,
        "parent_errors": sum(t != p for t, p in zip(labels, parent_calls, strict=True)),
        "child_errors": sum(t != c for t, c in zip(labels, child_calls, strict=True)),
        "lost": sum(r["label"] == r["parent"] for r in changed),
        "gained": sum(r["label"] == r["child"] for r in changed),
        "changed_count": len(changed), "changed": changed[:CHANGED_LISTED],
        "passed": not failures, "failures": failures,
    }


def refusal(run: Any) -> str | None:
    """The one line saying why ``run`` (a child) is not promoted, or None (promoted, or not a
    child, or no evaluate stage)."""
    if not run.has_artifact("evaluate", ARTIFACT):
        return None
    verdict = atomic.read_json(run.artifact("evaluate", ARTIFACT))
    if verdict["passed"]:
        return None
    return (f"not promoted: on the parent run {verdict['parent_run']}'s test split "
            f"{'; '.join(verdict['failures'])}; latest.json stays on the parent "
            f"(parent vs child in {run.root / 'evaluate' / 'report.html'})")
