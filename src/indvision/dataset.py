"""Datasets on disk: listing a class tree or a CSV, exact duplicates, and reading the splits.

Shared by the ingest stage (which checks, splits and records), the later stages (which read
``splits.csv``) and the ``bench/`` scripts (which list the same folders the same way), so that a
file is listed, deduplicated and grouped by one rule everywhere. numpy-free and TensorFlow-free.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from indvision import atomic, decision, images
from indvision.console import say
from indvision.errors import IndvisionError

SPLITS = ("train", "val", "test")
CSV_COLUMNS = ("path", "label", "group")
#: The columns of ``splits.csv`` (and of a child's ``parent_test.csv``).
SPLIT_COLUMNS = ("path", "label", "split", "group", "sha256", "width", "height")
#: A rejected file: (path, label, reason) — the rows of ``ingest/rejected.csv``.
Rejected = tuple[str, str, str]


@dataclass
class Item:
    """One listed image; ingest fills in what it learns while checking it."""

    path: str
    label: str
    group: str | None = None
    sha256: str = ""
    width: int = 0
    height: int = 0
    split: str = ""


def list_class_tree(root: Path) -> tuple[list[Item], list[Rejected]]:
    """Folder-per-class: every image below ``root/<class>/`` (symlinked folders not followed;
    hidden files skipped; other extensions and broken links rejected with a reason)."""
    if not root.is_dir():
        raise IndvisionError(f"{root}: not a folder (expected {root}/<class>/<images>)")
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
            say(f"ingest: warning: class folder {class_dir} has no images")
    return items, rejected


def list_csv(path: Path) -> tuple[list[Item], list[Rejected]]:
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
    unknown = set(columns) - set(CSV_COLUMNS)
    if unknown:
        say(f"ingest: warning: {path}: ignoring unknown column(s) "
              f"{', '.join(sorted(unknown))}")
    items, rejected = [], []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:  # DictReader keeps a row's extra fields, as a list, under None
            rejected.append((where, "", f"{len(row[None])} more field(s) than the header "
                                        "(an unquoted comma?)"))
            continue
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
        file, label = row.get("path", ""), row.get("label", "")
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


def list_source(source: Path) -> tuple[list[Item], list[Rejected]]:
    """A CSV file or a folder-per-class tree, whichever ``source`` is."""
    return list_csv(source) if source.is_file() else list_class_tree(source)


def dedupe(items: Iterable[Item]) -> tuple[list[Item], list[dict], list[Rejected]]:
    """Keep one copy of byte-identical files (``sha256`` filled in); drop every copy when their
    labels disagree. Returns (kept, duplicate sets, rejected conflicts)."""
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


def assign_groups(items: Iterable[Item], group_regex: str | None) -> str | None:
    """Give every item its object: the CSV's ``group``, else :func:`decision.group_key` on the
    file name (within its label), else the image alone (its content hash). Returns how objects
    were formed: ``"column"``, ``"regex"`` or None (see :data:`indvision.decision.GROUP_BY`)."""
    by = None
    for item in items:
        if item.group:
            by = "column"
            continue
        key = decision.group_key(item.path, group_regex, item.label)
        if key is not None:
            by = by or "regex"
        item.group = key or item.sha256[:16]
    return by


def read_splits(path: Path) -> list[dict[str, str]]:
    """Rows of a ``splits.csv`` as dicts (path, label, split, group, sha256, width, height)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None


def rows_of(rows: Iterable[dict[str, str]], split: str) -> list[dict[str, str]]:
    """The rows of one split (``train``, ``val`` or ``test``), in file order."""
    return [r for r in rows if r["split"] == split]


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> Path:
    """Write a CSV (``header`` then ``rows``) atomically; return its path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(rows)
    return atomic.write_text(path, buffer.getvalue())
