"""What a child run's ingest takes from its parent (:mod:`indvision.lineage`): the parent's
kept training and validation exemplars replayed into the same splits, its kept test images
left out of the child's data (the promotion gate judges the child on them), and
``parent.json`` / ``parent_test.csv`` recording it all. See :mod:`indvision.stages.ingest`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from indvision import atomic, lineage
from indvision.console import say
from indvision.dataset import SPLIT_COLUMNS, Item, write_csv

REPLAY_GROUP = "parent:"  # the group of a replayed image: its object in the parent


def without_parent_tests(items: list[Item], parent: lineage.Parent,
                         rejected: list) -> list[Item]:
    """Leave out the images that are the parent's kept test images (same bytes): the
    promotion gate must judge the child on images it did not train on."""
    tests = {row["sha256"] for row in parent.rows("test")}
    for item in items:
        if item.sha256 in tests:
            rejected.append((item.path, item.label, f"a test image of the parent run "
                             f"{parent.run_id} (the promotion gate judges the child on it)"))
    return [i for i in items if i.sha256 not in tests]


def replay_items(parent: lineage.Parent, present: set[str]) -> list[Item]:
    """The parent's kept training and validation exemplars as items of the same splits
    (one not already among the new images)."""
    return [Item(path=row["path"], label=row["label"], split=row["split"],
                 group=REPLAY_GROUP + (row.get("group") or row["sha256"]),
                 sha256=row["sha256"], width=int(row.get("width") or 0),
                 height=int(row.get("height") or 0))
            for split in ("train", "val") for row in parent.rows(split)
            if row["sha256"] not in present]


def parent_record(parent: lineage.Parent, classes: list[str], items: list[Item]) -> dict:
    """``parent.json``: the parent and what the child took from it."""
    replayed = Counter(i.split for i in items if (i.group or "").startswith(REPLAY_GROUP))
    return {**parent.to_dict(), "classes_added": classes[len(parent.classes):],
            "replayed": {"train": replayed["train"], "val": replayed["val"]},
            "parent_test": len(parent.rows("test"))}


def parent_outputs(out: Path, parent: lineage.Parent, record: dict) -> dict[str, Path]:
    """Write ``parent.json`` and ``parent_test.csv``; say what the child takes."""
    tests = parent.rows("test")
    added = record["classes_added"]
    say(f"ingest: from parent run {parent.run_id}: its classes {', '.join(parent.classes)} "
        f"keep their order; "
        + (f"new class(es) {', '.join(added)}" if added else "no new class")
        + f"; replaying {record['replayed']['train']} training and "
        f"{record['replayed']['val']} validation images; its test split ({len(tests)} "
        "images) judges the child")
    return {
        "parent": atomic.write_json(out / "parent.json", record),
        "parent_test": write_csv(out / "parent_test.csv", SPLIT_COLUMNS,
                                 [[r["path"], r["label"], "test", r.get("group") or "",
                                   r["sha256"], r.get("width", ""), r.get("height", "")]
                                  for r in tests]),
    }
