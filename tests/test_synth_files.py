"""synth.generate builds its tree through randomly named temp folders: a link planted at the
old predictable names (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``) is never followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from indvision import synth
from indvision.synth import files


def test_links_planted_at_the_predictable_temp_names_are_not_followed(tmp_path: Path) -> None:
    out = synth.generate("defect", tmp_path / "set", seed=0, per_class=1)  # replaced below
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    for name in (f".set.tmp-{os.getpid()}", f".set.old-{os.getpid()}"):
        (tmp_path / name).symlink_to(elsewhere, target_is_directory=True)
    synth.generate("defect", out, seed=1, per_class=2)
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]  # untouched
    assert not out.is_symlink() and (out / files.META_NAME).is_file()
    assert sum(1 for _ in out.rglob("*.png")) > 2  # the new tree, whole
    assert stat.S_IMODE(out.stat().st_mode) == files._folder_mode()
    planted = {f".set.tmp-{os.getpid()}", f".set.old-{os.getpid()}"}
    leftovers = {p.name for p in tmp_path.iterdir()} - {"set", "elsewhere", *planted}
    assert leftovers == set()  # no temp folder of its own left behind

