"""Watching a folder under attack, with a stand-in classifier (no trained model needed): a link
out of the folder is not read, and what was seen stays bounded as files come and go."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from indvision.edge import watching


class StandIn:
    """Loads and scores without a model; records every file it was asked to read."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def load(self, path: Path) -> np.ndarray:
        self.loaded.append(Path(path).resolve())
        return np.zeros((4, 4, 3), np.float32)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return np.tile([0.9, 0.1], (len(batch), 1))

    def results(self, probs: np.ndarray) -> list[dict]:
        return [{"label": "ok", "score": float(row[0])} for row in probs]


@pytest.mark.skipif(os.name != "posix", reason="links are POSIX here")
def test_a_link_to_a_file_outside_the_watched_folder_is_not_processed(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"x")
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "b_link.png").symlink_to(secret)
    (folder / "c.png").write_bytes(b"x")
    stand_in, lines = StandIn(), []
    assert watching.watch(stand_in, str(folder), lines.append, interval=0.0, max_frames=2) == 2
    assert [Path(line["path"]).name for line in lines] == ["a.png", "c.png"]
    assert secret.resolve() not in stand_in.loaded


def test_what_was_seen_stays_bounded_as_files_come_and_go(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    arrivals = watching._arrivals(StandIn(), folder, interval=0.0)
    sizes = []
    for i in range(50):
        path = folder / f"{i:03d}.png"
        path.write_bytes(b"x")
        while (item := next(arrivals)) is None:
            pass
        assert item[0] == path
        path.unlink()
        assert next(arrivals) is None  # the end of that poll
        next(arrivals)  # the next poll sees the folder empty
        sizes.append(len(arrivals.gi_frame.f_locals["done"]))
    assert max(sizes[1:]) <= 1
    (folder / "000.png").write_bytes(b"x")  # a file that comes back is predicted again
    while (item := next(arrivals)) is None:
        pass
    assert item[0] == folder / "000.png"
