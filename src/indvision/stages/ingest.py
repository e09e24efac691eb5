"""Ingest: a folder-per-class tree or a CSV of images → checked, deduplicated, split dataset.

Every image is read through :mod:`indvision.images` (the decoder the device uses); bad files go
to ``rejected.csv`` with a reason, and ingest stops only when too little is left to train on.
Exact duplicates keep one copy, so no image sits in two splits. The split is stratified by
class, seeded and group-aware: all views of one object (a CSV ``group`` column or
``group_regex``: :func:`indvision.dataset.assign_groups`) land in the same split.

The decision record starts here (:mod:`indvision.decision`): the good class and how views form
objects are facts about the data, written once to ``decision.json`` for every later stage. A
child run (``parent``, the pipeline's ``--from``) keeps the parent's classes first, in order,
replays its kept exemplars and leaves out its test images (:mod:`indvision.stages.ingest_parent`).

Outputs: ``splits.csv``, ``classes.json``, ``decision.json``, ``ingest_report.json``,
``rejected.csv``; a child also ``parent.json`` and ``parent_test.csv``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indvision import (
    atomic,
    dataset,
    decision,
    images,
    lineage,
    metrics,
    near_duplicates,
    splitting,
)
from indvision.console import say
from indvision.dataset import SPLIT_COLUMNS, SPLITS, Item, write_csv
from indvision.errors import IndvisionError
from indvision.rundir import Run
from indvision.stages import ingest_parent

NEAR_DUPLICATES = ("report", "drop")


@dataclass(frozen=True)
class Config:
    """Where the images come from, how they are split, and what they mean."""

    source: str | None = None  # folder-per-class tree or CSV; None → synthetic default data
    synthetic: str | None = None  # which synthetic set to generate when source is None
    synthetic_per_class: int = 150
    synthetic_root: str = "data/synthetic"
    group_regex: str | None = None  # on the file name, e.g. '^(\d+)_': one object per match
    # The class meaning "no defect". auto: the one class named like it (ok, good, fine,
    # normal, intact, no_defect, ...: metrics.GOOD_CLASS_NAMES), so one pipeline file serves
    # datasets that call it ok, ok_front or intact; none so named → arg-max decisions. A name
    # must be one of the dataset's classes; a list names candidates, the first present is used;
    # null: arg-max decisions, no threshold.
    good_class: tuple[str, ...] | str | None = metrics.AUTO
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # A smaller dataset with the same test split (learning curves, small-data checks): keep at
    # most this many training objects per class and cut validation in the same proportion, so
    # validation is as small as it would be on a set that size. None keeps everything.
    max_train_per_class: int | None = None
    # Cross-validation (the pipeline's --folds K sets both): test is block ``fold`` of ``folds``
    # in each class's seeded order, so K runs test every object once (indvision.splitting).
    # None: the usual test_fraction split.
    folds: int | None = None
    fold: int = 0
    # Near-duplicates (indvision.near_duplicates: nearly the same pixels): "report" lists the
    # pairs under different labels and counts those across splits in ingest_report.json;
    # "drop" also leaves out both images of every pair whose labels disagree.
    near_duplicates: str = "report"
    min_side: int = 16  # smaller images are rejected
    min_per_class: int = 6  # fewer usable images in a class is an error
    max_pixels: int = images.MAX_PIXELS
    # Start from a parent run (the pipeline's --from): a run folder, a bundle folder in one,
    # or exports/<pipeline> for its latest; see the module docstring. None: a new model.
    parent: str | None = None
    # A child replays its parent's kept exemplars (see the module docstring). False trains on
    # --data alone: naive fine-tuning, which forgets — for comparison, not for the line.
    replay: bool = True
    # Anomaly models (pipelines/anomaly.yaml): only the good class is split into train,
    # validation and test; every other folder is a defect type and goes to validation and test
    # only (never to fitting), in the proportion val_fraction : test_fraction. The good class
    # alone is enough. classes.json is then the model's: [<good class>, "anomaly"].
    good_only: bool = False

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        if self.group_regex is not None:
            try:
                re.compile(self.group_regex)
            except re.error as exc:
                raise ValueError(
                    f"group_regex {self.group_regex!r} is not a valid regex: {exc}") from None
        if self.synthetic is not None:
            from indvision.synth.kinds import check_kind  # no OpenCV: a name check only

            check_kind(self.synthetic)
        if self.near_duplicates not in NEAR_DUPLICATES:
            raise ValueError(f"near_duplicates must be one of {', '.join(NEAR_DUPLICATES)}, "
                             f"not {self.near_duplicates!r}")
        if self.folds is not None and not (self.folds >= 2 and 0 <= self.fold < self.folds):
            raise ValueError(f"folds must be 2 or more and fold in 0..folds-1, got folds "
                             f"{self.folds}, fold {self.fold}")
        if self.max_train_per_class is not None and self.max_train_per_class < 1:
            raise ValueError("max_train_per_class must be at least 1 (or null: keep all)")
        names = self.good_class_candidates
        if self.good_only and self.good_class is None:
            raise ValueError("good_only needs a good class (ingest.good_class: auto or a name): "
                             "it is the class the anomaly model is fitted on")
        if self.good_only and self.parent is not None:
            raise ValueError("--from starts a child classifier; an anomaly model (good_only) "
                             "is fitted again from its good images instead")
        if self.good_class is not None and not names:
            raise ValueError("good_class is an empty list; name at least one class, or use null "
                             "for arg-max decisions")
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"good_class must be class names, got {self.good_class!r}")

    @property
    def good_class_candidates(self) -> tuple[str, ...]:
        """The good-class setting as a tuple of names (empty when unset)."""
        if self.good_class is None:
            return ()
        if isinstance(self.good_class, str):
            return (self.good_class,)
        return tuple(self.good_class)


def run(config: Config, run_dir: Run) -> dict[str, Path]:
    """Read, check, deduplicate and split the dataset; write the split files."""
    parent = lineage.open_parent(config.parent) if config.parent else None
    source = _resolve_source(config, run_dir)
    out = run_dir.stage_dir("ingest")
    kept, rejected, duplicates, near = _checked_items(config, source, parent)
    group_by = dataset.assign_groups(kept, config.group_regex)
    _check_grouping(kept, config.group_regex, group_by, source)
    classes = _check_classes(kept, rejected, config.min_per_class, source,
                             parent.classes if parent else (), config.good_only)
    fitted = ({metrics.resolve_good_class(config.good_class, classes, key="ingest.good_class")}
              if config.good_only else None)
    splitting.assign_splits(kept, config.val_fraction, config.test_fraction, run_dir.seed,
                            config.max_train_per_class, config.folds, config.fold, fitted)
    subsampled = len(kept)
    kept = [i for i in kept if i.split != splitting.UNUSED]
    subsampled -= len(kept)
    if parent is not None:
        classes, kept = _join_parent(config, parent, classes, kept)
    record = _record(config, classes, group_by, kept, source, parent)
    report = _report(kept, classes, rejected, duplicates, source)
    report.update(group_regex=config.group_regex, group_by=group_by,
                  max_train_per_class=config.max_train_per_class,
                  folds=config.folds, fold=config.fold if config.folds else None,
                  subsampled_out=subsampled,
                  near_duplicates=_near_report(near, config.near_duplicates))
    if parent is not None:
        report["parent"] = ingest_parent.parent_record(parent, classes, kept)
    outputs = _write_outputs(out, kept, record, report, rejected)
    if parent is not None:
        outputs.update(ingest_parent.parent_outputs(out, parent, report["parent"]))
        run_dir.manifest["parent"] = parent.run_id
        run_dir.save()
    _say_summary(config, kept, record, report, rejected, subsampled, group_by)
    return outputs


def _checked_items(config: Config, source: Path, parent: lineage.Parent | None
                   ) -> tuple[list[Item], list, list, list[tuple[Item, Item, float]]]:
    """The listed images read and checked, exact duplicates merged, the parent's test images
    left out and (``near_duplicates: drop``) near duplicates that conflict dropped:
    ``(kept, rejected, duplicates, near pairs)``."""
    listed, rejected = dataset.list_source(source)
    say(f"ingest: {len(listed)} files listed from {source}")
    prints: dict[str, tuple[int, np.ndarray]] = {}
    checked = _check_images(listed, rejected, config, prints)
    kept, duplicates, conflicts = dataset.dedupe(checked)
    rejected.extend(conflicts)
    if parent is not None:
        kept = ingest_parent.without_parent_tests(kept, parent, rejected)
    near = _near_pairs(kept, prints)
    if config.near_duplicates == "drop":
        kept = _drop_conflicting(kept, near, rejected)
        still = {id(item) for item in kept}
        near = [(a, b, d) for a, b, d in near if id(a) in still and id(b) in still]
    return kept, rejected, duplicates, near


def _join_parent(config: Config, parent: lineage.Parent, classes: list[str],
                 kept: list[Item]) -> tuple[list[str], list[Item]]:
    """A child's classes (the parent's first, in order) and items (with the replay)."""
    classes = parent.classes + [c for c in classes if c not in parent.classes]
    if config.replay:
        kept = kept + ingest_parent.replay_items(parent, {i.sha256 for i in kept})
    else:
        say("ingest: replay off: the child trains on --data alone and will forget what "
            "it does not see")
    return classes, kept


def _record(config: Config, classes: list[str], group_by: str | None, kept: list[Item],
            source: Path, parent: lineage.Parent | None) -> decision.Decision:
    """The decision record; a child's good class must be its parent's."""
    record = _decision(config, classes, group_by, [i.group for i in kept])
    if config.good_only:
        record = _good_only_record(record, source)
    if parent is not None and parent.good_class is not None \
            and record.good_class != parent.good_class:
        raise IndvisionError(f"the parent run {parent.run_id} decides with good class "
                             f"'{parent.good_class}', this run with '{record.good_class}'; set "
                             f"ingest.good_class to {parent.good_class} (or start without --from)")
    return record


def _write_outputs(out: Path, kept: list[Item], record: decision.Decision, report: dict,
                   rejected: list) -> dict[str, Path]:
    """Write the split files, the decision record and the report; return them by name."""
    return {
        "splits": write_csv(out / "splits.csv", SPLIT_COLUMNS,
                            [[i.path, i.label, i.split, i.group, i.sha256, i.width, i.height]
                             for i in kept]),
        "classes": atomic.write_json(out / "classes.json", list(record.classes)),
        decision.ARTIFACT: atomic.write_json(out / "decision.json", record.to_dict()),
        "report": atomic.write_json(out / "ingest_report.json", report),
        "rejected": write_csv(out / "rejected.csv", ["path", "label", "reason"], rejected),
    }


def _say_summary(config: Config, kept: list[Item], record: decision.Decision, report: dict,
                 rejected: list, subsampled: int, group_by: str | None) -> None:
    """The console lines: counts, what was left out, the objects, the first rejects."""
    counts = report["counts"]
    say(f"ingest: {len(kept)} images in {len(record.classes)} classes "
        f"(train {counts['train']['total']}, val {counts['val']['total']}, "
        f"test {counts['test']['total']}); {len(rejected)} rejected, "
        f"{report['duplicates']['removed']} duplicate copies removed")
    if subsampled:
        say(f"ingest: max_train_per_class {config.max_train_per_class}: {subsampled} "
            "training and validation images left out (the test split is unchanged)")
    if record.grouped:
        say(f"ingest: {report['groups']} objects (views grouped by {group_by}, "
            f"{record.views_per_object} views each mostly): decisions are per object")
    for path, _, reason in rejected[:10]:
        say(f"ingest: rejected {path}: {reason}")
    _say_near(report["near_duplicates"])

def _check_images(listed: list[Item], rejected: list, config: Config,
                  prints: dict[str, tuple[int, np.ndarray]]) -> list[Item]:
    """Decode every listed file once (hash, size and near-duplicate fingerprint from the same
    bytes, the fingerprints into ``prints`` by path); reject the bad."""
    checked: list[Item] = []
    for n, item in enumerate(listed, start=1):
        try:
            data = images.read_bytes(item.path)
            image = images.decode(data, item.path, config.max_pixels)
        except images.ImageError as exc:
            rejected.append((item.path, item.label, exc.reason))
            continue
        height, width = image.shape[:2]
        if min(height, width) < config.min_side:
            rejected.append((item.path, item.label,
                             f"too small ({width}x{height}, min side {config.min_side})"))
            continue
        item.sha256 = hashlib.sha256(data).hexdigest()
        item.width, item.height = width, height
        prints[item.path] = near_duplicates.fingerprint(image)
        checked.append(item)
        if n % 500 == 0:
            say(f"ingest: checked {n}/{len(listed)} images")
    return checked


def _near_pairs(items: list[Item],
                prints: dict[str, tuple[int, np.ndarray]]) -> list[tuple[Item, Item, float]]:
    """The near-duplicate pairs among ``items`` (:mod:`indvision.near_duplicates`' rule)."""
    if len(items) < 2:
        return []
    hashes = [prints[i.path][0] for i in items]
    thumbs = np.stack([prints[i.path][1] for i in items])
    return [(items[a], items[b], diff)
            for a, b, diff in near_duplicates.near_pairs(hashes, thumbs)]


def _drop_conflicting(items: list[Item], near: list[tuple[Item, Item, float]],
                      rejected: list) -> list[Item]:
    """Leave out both images of every near-duplicate pair whose labels disagree."""
    dropped: dict[str, str] = {}
    for a, b, _ in near:
        if a.label != b.label:
            dropped[a.path] = f"near-duplicate of {b.path} (labelled '{b.label}')"
            dropped[b.path] = f"near-duplicate of {a.path} (labelled '{a.label}')"
    rejected.extend((i.path, i.label, dropped[i.path]) for i in items if i.path in dropped)
    return [i for i in items if i.path not in dropped]


def _near_report(near: list[tuple[Item, Item, float]], mode: str,
                 listed: int = 50) -> dict:
    """ingest_report.json's ``near_duplicates``: the rule, the pairs under different labels
    (all counted, the first ``listed`` listed) and those across splits (leakage)."""
    def pair(a: Item, b: Item, diff: float) -> dict:
        return {"a": a.path, "b": b.path, "labels": [a.label, b.label],
                "splits": [a.split, b.split], "mean_diff": diff}

    conflicting = [pair(*p) for p in near if p[0].label != p[1].label]
    across = [pair(*p) for p in near if p[0].split != p[1].split
              and splitting.UNUSED not in (p[0].split, p[1].split)]
    return {"rule": near_duplicates.RULE, "mode": mode, "pairs": len(near),
            "different_labels": len(conflicting), "different_labels_pairs": conflicting[:listed],
            "across_splits": len(across), "across_splits_pairs": across[:listed]}


def _say_near(report: dict) -> None:
    if report["different_labels"]:
        first = report["different_labels_pairs"][0]
        say(f"ingest: warning: {report['different_labels']} near-duplicate pair(s) under "
            f"different labels, e.g. {first['a']} ({first['labels'][0]}) and {first['b']} "
            f"({first['labels'][1]}); listed in ingest_report.json near_duplicates"
            + ("" if report["mode"] == "drop" else
               " (ingest.near_duplicates: drop leaves them out)"))
    if report["across_splits"]:
        say(f"ingest: {report['across_splits']} near-duplicate pair(s) sit in different "
            "splits: a near-copy of a training image in validation or test flatters it")


def _check_grouping(items: list[Item], group_regex: str | None, group_by: str | None,
                    source: Path) -> None:
    """A ``group_regex`` that matches no file name is a mistake, not a choice: stop and say so
    (before anything trains on objects of one view); one that matches some says how many."""
    if group_regex is None or group_by == "column" or not items:
        return
    matched = sum(decision.group_key(i.path, group_regex, i.label) is not None for i in items)
    example = Path(items[0].path).name
    if matched == 0:
        raise IndvisionError(
            f"{source}: ingest.group_regex '{group_regex}' matches none of the {len(items)} "
            f"file names (e.g. {example!r}); fix the pattern (its first group is the object "
            "id) or set ingest.group_regex to null for one object per image")
    if matched < len(items):
        say(f"ingest: group_regex '{group_regex}' matches {matched} of {len(items)} file "
            "names; each other image is an object of its own")


def _decision(config: Config, classes: list[str], group_by: str | None,
              groups: list[str | None]) -> decision.Decision:
    """The decision record's facts about the data: good class and grouping (no threshold)."""
    good_class = metrics.resolve_good_class(config.good_class, classes, key="ingest.good_class")
    if config.good_class == metrics.AUTO:
        if good_class is None:
            say(f"ingest: no class is named like the good class (ok, good, fine, normal, "
                f"intact, ...) among {', '.join(classes)}: arg-max decisions, no escape-rate "
                "threshold; set ingest.good_class to the class meaning no defect")
        else:
            say(f"ingest: good class '{good_class}' (recognised by its name; set "
                "ingest.good_class to choose another, null for arg-max decisions)")
    elif config.good_class is not None and good_class is None:
        say(f"ingest: none of the good-class candidates {list(config.good_class_candidates)} "
              f"is a class here ({', '.join(classes)}): arg-max decisions, no threshold")
    return decision.Decision(
        classes=tuple(classes), good_class=good_class, group_by=group_by,
        group_regex=config.group_regex,
        views_per_object=(decision.most_common_views([str(g) for g in groups])
                          if group_by else None))


def _good_only_record(record: decision.Decision, source: Path) -> decision.Decision:
    """The decision record of an anomaly model: its classes are [good, anomaly] (the dataset's
    other folders are defect types); a dataset with no good class cannot fit one."""
    from indvision import anomaly

    if record.good_class is None:
        raise IndvisionError(f"{source}: ingest.good_only needs a good class, and none of "
                             f"{', '.join(record.classes)} is one; name it in ingest.good_class")
    if anomaly.ANOMALY in record.classes:
        raise IndvisionError(f"{source}: a folder is named '{anomaly.ANOMALY}', the name an "
                             "anomaly model gives everything not good; rename it")
    return dataclasses.replace(record, classes=tuple(anomaly.model_classes(record.good_class)))


def _resolve_source(config: Config, run: Run) -> Path:
    if config.source is None:
        from indvision import synth

        if config.synthetic is None:
            raise IndvisionError("no dataset: pass --data DIR (or set ingest.source), "
                                 "or set ingest.synthetic to generate default images")

        root = Path(config.synthetic_root)
        say(f"ingest: no --data given; using synthetic '{config.synthetic}' images "
              f"under {root / str(config.synthetic)}")
        return synth.ensure(str(config.synthetic), root, seed=0,
                            per_class=config.synthetic_per_class)
    source = Path(config.source).expanduser()
    if not source.exists():
        raise IndvisionError(f"dataset not found: {source}")
    return source


def _check_classes(items: list[Item], rejected: list, min_per_class: int,
                   source: Path, parent_classes: list[str] | tuple[str, ...] = (),
                   good_only: bool = False) -> list[str]:
    """The classes of ``items`` (sorted); each needs ``min_per_class`` images, and with the
    parent's classes there must be two at least (one, the good class, for ``good_only``)."""
    counts = Counter(i.label for i in items)
    rejected_counts = Counter(r[1] for r in rejected)
    too_few = {c: n for c, n in counts.items() if n < min_per_class}
    for label in sorted(rejected_counts):
        if label and label not in counts:
            too_few[label] = 0
    if too_few:
        detail = ", ".join(f"'{c}' has {n}" for c, n in sorted(too_few.items()))
        raise IndvisionError(f"{source}: too few usable images ({detail}; need at least "
                             f"{min_per_class} per class; see rejected.csv reasons above)")
    if len(set(counts) | set(parent_classes)) < (1 if good_only else 2):
        raise IndvisionError(f"{source}: need at least two classes with images, found "
                             f"{sorted(counts) or 'none'}")
    return sorted(counts)


def _report(items: list[Item], classes: list[str], rejected: list, duplicates: list,
            source: Path) -> dict:
    counts: dict[str, dict] = {s: {"total": 0, **{c: 0 for c in classes}} for s in SPLITS}
    for item in items:
        counts[item.split][item.label] += 1
        counts[item.split]["total"] += 1
    blob = json.dumps(sorted((i.sha256, i.label, i.split) for i in items)).encode()
    return {
        "source": str(source),
        "classes": classes,
        "images": len(items),
        "groups": len({i.group for i in items}),
        "counts": counts,
        "rejected": {"total": len(rejected),
                     "by_reason": dict(Counter(r[2].split(" (")[0] for r in rejected))},
        "duplicates": {"sets": len(duplicates),
                       "removed": sum(len(d["removed"]) for d in duplicates),
                       "examples": duplicates[:20]},
        "dataset_hash": hashlib.sha256(blob).hexdigest(),
    }

