"""What ``edge predict`` scores (:mod:`indvision.edge.sources`): files, folders, list files
and CSVs of paths, relative to the list's folder; a CSV without a path column is one error."""

from __future__ import annotations

from pathlib import Path

import pytest

from indvision.edge.sources import expand_sources
from indvision.errors import IndvisionError


def test_sources_expand_folders_lists_and_csvs_in_order(tmp_path: Path) -> None:
    (tmp_path / "tree" / "b").mkdir(parents=True)
    for name in ("tree/b/2.png", "tree/1.jpg", "tree/notes.md", "tree/.hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "night.txt").write_text("# archive\n../tree/1.jpg\n\n/abs/3.png\n")
    (tmp_path / "lists" / "mes.csv").write_text("id,Path\n7,../tree/b/2.png\n8,\n")
    found = list(expand_sources([tmp_path / "tree", tmp_path / "lists" / "night.txt",
                                 tmp_path / "lists" / "mes.csv", tmp_path / "one.bmp"]))
    lists = tmp_path / "lists"
    assert found == [tmp_path / "tree" / "1.jpg", tmp_path / "tree" / "b" / "2.png",
                     lists / "../tree/1.jpg", Path("/abs/3.png"), lists / "../tree/b/2.png",
                     tmp_path / "one.bmp"]


def test_sources_a_csv_without_a_path_column_is_one_error(tmp_path: Path) -> None:
    table = tmp_path / "mes.csv"
    table.write_text("file,label\na.png,ok\n")
    with pytest.raises(IndvisionError, match=r"mes.csv: no 'path' column"):
        list(expand_sources([table]))
