"""What ``edge predict`` scores: image files, folders, list files and CSVs of image paths.

An archive to re-score is rarely one folder: it is a list a query produced, or a CSV exported
from the MES. :func:`expand_sources` turns each argument into image paths, in order:

- a folder → its image files, recursively, sorted (:func:`indvision.edge.runtime.image_files`);
- a ``.txt`` or ``.lst`` file → one path per line (blank lines and ``#`` comments skipped);
- a ``.csv`` file → its ``path`` column (a header row is required, as for ingest's CSVs);
- anything else → itself, as an image file (an unreadable one becomes an error row later).

Relative paths in a list or CSV are relative to that file's folder, as in ingest's CSVs. A list
or CSV that cannot be read, or a CSV without a ``path`` column, is one clear error naming it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from indvision.errors import IndvisionError

LIST_SUFFIXES = (".txt", ".lst")


def expand_sources(sources: Sequence[str | os.PathLike]) -> Iterator[Path]:
    """Image paths from files, folders, list files and CSVs, in the order given."""
    from indvision.edge.runtime import image_files

    for item in sources:
        path = Path(item)
        suffix = path.suffix.lower()
        if path.is_file() and suffix in LIST_SUFFIXES:
            yield from _list_file(path)
        elif path.is_file() and suffix == ".csv":
            yield from _csv_file(path)
        else:
            yield from image_files([path])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IndvisionError(f"cannot read the list {path}: {exc}") from None


def _list_file(path: Path) -> Iterator[Path]:
    for line in _read(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield path.parent / line


def _csv_file(path: Path) -> Iterator[Path]:
    reader = csv.DictReader(io.StringIO(_read(path)))
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    if "path" not in columns:
        raise IndvisionError(f"{path}: no 'path' column; expected a header row naming it, "
                             f"found {sorted(columns)}")
    for row in reader:
        value = (row.get(columns["path"]) or "").strip()
        if value:
            yield path.parent / value
