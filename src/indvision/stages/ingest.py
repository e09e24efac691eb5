"""Ingest: a folder-per-class tree or a CSV of images → checked, deduplicated, split dataset.

Every image is read through :mod:`indvision.images` (the decoder the model will see on the
device). Bad files are listed in ``rejected.csv`` with a reason and ingest carries on; it stops
with a clear message only when too little is left to train on. Exact duplicates (same bytes)
keep one copy, so no image can sit in both the training and the test split. The split is
stratified by class, deterministic for a seed, and group-aware: all images of one group (one
parcel's two camera views, say) land in the same split.

Outputs: ``splits.csv`` (path, label, split, group, sha256, width, height), ``classes.json``,
``ingest_report.json`` (counts, rejects, duplicates, dataset hash) and ``rejected.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indvision import atomic, images
from indvision.errors import IndvisionError
from indvision.rundir import Run

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Config:
    """Where the images come from and how they are split."""

    source: str | None = None  # folder-per-class tree or CSV; None → synthetic default data
    synthetic: str | None = None  # which synthetic set to generate when source is None
    synthetic_per_class: int = 150
    synthetic_root: str = "data/synthetic"
    group_regex: str | None = None  # on the file name, e.g. '^(\d+)_': one group per match
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_side: int = 16  # smaller images are rejected
    min_per_class: int = 6  # fewer usable images in a class is an error
    max_pixels: int = images.MAX_PIXELS

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


@dataclass
class Item:
    path: str
    label: str
    group: str | None = None
    sha256: str = ""
    width: int = 0
    height: int = 0
    split: str = ""


def run(config: Config, run: Run) -> dict[str, Path]:
    """Read, check, deduplicate and split the dataset; write the split files."""
    source = _resolve_source(config, run)
    out = run.stage_dir("ingest")
    listed, rejected = (_read_csv(source) if source.is_file() else _read_tree(source))
    print(f"ingest: {len(listed)} files listed from {source}", flush=True)

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
        checked.append(item)
        if n % 500 == 0:
            print(f"ingest: checked {n}/{len(listed)} images", flush=True)

    kept, duplicates, conflicts = _dedupe(checked)
    rejected.extend(conflicts)
    _assign_groups(kept, config.group_regex)
    classes = _check_classes(kept, rejected, config.min_per_class, source)
    _split(kept, config.val_fraction, config.test_fraction, run.seed)

    report = _report(kept, classes, rejected, duplicates, source)
    report["group_regex"] = config.group_regex
    outputs = {
        "splits": _write_csv(out / "splits.csv",
                             ["path", "label", "split", "group", "sha256", "width", "height"],
                             [[i.path, i.label, i.split, i.group, i.sha256, i.width, i.height]
                              for i in kept]),
        "classes": atomic.write_json(out / "classes.json", classes),
        "report": atomic.write_json(out / "ingest_report.json", report),
        "rejected": _write_csv(out / "rejected.csv", ["path", "label", "reason"], rejected),
    }
    counts = report["counts"]
    print(f"ingest: {len(kept)} images in {len(classes)} classes "
          f"(train {counts['train']['total']}, val {counts['val']['total']}, "
          f"test {counts['test']['total']}); {len(rejected)} rejected, "
          f"{report['duplicates']['removed']} duplicate copies removed", flush=True)
    for path, _, reason in rejected[:10]:
        print(f"ingest: rejected {path}: {reason}", flush=True)
    return outputs


def _resolve_source(config: Config, run: Run) -> Path:
    if config.source is None:
        from indvision import synth

        if config.synthetic is None:
            raise IndvisionError("no dataset: pass --data DIR (or set ingest.source), "
                                 "or set ingest.synthetic to generate default images")

        root = Path(config.synthetic_root)
        print(f"ingest: no --data given; using synthetic '{config.synthetic}' images "
              f"under {root / str(config.synthetic)}", flush=True)
        return synth.ensure(str(config.synthetic), root, seed=0,
                            per_class=config.synthetic_per_class)
    source = Path(config.source).expanduser()
    if not source.exists():
        raise IndvisionError(f"dataset not found: {source}")
    return source


def _read_tree(root: Path) -> tuple[list[Item], list[tuple[str, str, str]]]:
    """Folder-per-class: every image below ``root/<class>/`` (symlinked folders not followed)."""
    items, rejected = [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise IndvisionError(f"{root}: no class folders (expected {root}/<class>/<images>)")
    for class_dir in class_dirs:
        found = 0
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if path.suffix.lower() not in images.IMAGE_EXTENSIONS:
                    rejected.append((str(path), class_dir.name,
                                     f"not an image file extension ({path.suffix or 'none'})"))
                    continue
                if path.is_symlink() and not path.exists():  # name the link, not its target
                    rejected.append((str(path), class_dir.name,
                                     f"broken symbolic link (to {os.readlink(path)})"))
                    continue
                items.append(Item(path=str(path.resolve()), label=class_dir.name))
                found += 1
        if not found:
            print(f"ingest: warning: class folder {class_dir} has no images", flush=True)
    return items, rejected


def _read_csv(path: Path) -> tuple[list[Item], list[tuple[str, str, str]]]:
    """CSV with columns ``path,label[,group]``; paths relative to the CSV's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = {"path", "label"} - set(columns)
    if missing:
        raise IndvisionError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             f"expected a header 'path,label[,group]', found {columns}")
    unknown = set(columns) - {"path", "label", "group"}
    if unknown:
        print(f"ingest: warning: {path}: ignoring unknown column(s) "
              f"{', '.join(sorted(unknown))}", flush=True)
    items, rejected = [], []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        file, label = row.get("path", ""), row.get("label", "")
        where = f"{path}:{line}"
        if not file:
            rejected.append((where, label, "empty path"))
            continue
        full = (path.parent / file).resolve()
        if not label:
            rejected.append((str(full), "", f"empty label ({where})"))
        elif not full.is_file():
            rejected.append((str(full), label, f"file not found ({where})"))
        else:
            items.append(Item(path=str(full), label=label, group=row.get("group") or None))
    return items, rejected


def _dedupe(items: list[Item]) -> tuple[list[Item], list[dict], list[tuple[str, str, str]]]:
    """Keep one copy of byte-identical files; drop all copies when their labels disagree."""
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_hash[item.sha256].append(item)
    kept, duplicates, conflicts = [], [], []
    for copies in by_hash.values():
        copies.sort(key=lambda i: i.path)
        labels = {c.label for c in copies}
        if len(labels) > 1:
            for c in copies:
                conflicts.append((c.path, c.label, "identical bytes appear with labels "
                                  f"{sorted(labels)}; all copies dropped"))
            continue
        kept.append(copies[0])
        if len(copies) > 1:
            duplicates.append({"kept": copies[0].path, "removed": [c.path for c in copies[1:]]})
    kept.sort(key=lambda i: i.path)
    return kept, duplicates, conflicts


def _assign_groups(items: list[Item], group_regex: str | None) -> None:
    """Group from the CSV, else from the regex on the file name, else the file itself."""
    pattern = re.compile(group_regex) if group_regex else None
    for item in items:
        if item.group:
            continue
        name = Path(item.path).name
        match = pattern.search(name) if pattern else None
        if match:
            item.group = f"{item.label}/{match.group(1) if match.groups() else match.group(0)}"
        else:
            item.group = item.sha256[:16]


def _check_classes(items: list[Item], rejected: list, min_per_class: int,
                   source: Path) -> list[str]:
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
    if len(counts) < 2:
        raise IndvisionError(f"{source}: need at least two classes with images, found "
                             f"{sorted(counts) or 'none'}")
    return sorted(counts)


def _split(items: list[Item], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Stratified, group-aware, deterministic split: whole groups go to one split."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, members in sorted(groups.items()):
        label = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[label].append(group)
    for label, names in sorted(by_class.items()):
        order = np.random.default_rng([seed, *label.encode()]).permutation(len(names))
        n = len(names)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for member in groups[names[index]]:
                member.split = split


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


def _write_csv(path: Path, header: list[str], rows: list) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic.write_text(path, buffer.getvalue())


def read_splits(path: Path) -> list[dict[str, str]]:
    """Rows of a ``splits.csv`` as dicts (used by the later stages)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
