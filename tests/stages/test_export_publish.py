"""Export publishes its bundle through randomly named temp folders: a link planted at the old
predictable names (``.bundle.tmp-<pid>``, ``.bundle.old-<pid>``) is never written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from indvision.stages import export
from tests.stages.conftest import copy_run


def test_links_planted_at_the_predictable_temp_names_are_not_followed(exported_run: Path,
                                                                      tmp_path: Path) -> None:
    run = copy_run(exported_run, tmp_path / "exports")  # bundle/ exists: it is moved aside
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in (f".bundle.tmp-{os.getpid()}", f".bundle.old-{os.getpid()}"):
        (run.root / name).symlink_to(elsewhere, target_is_directory=True)
    outputs = export.run(export.Config(formats=("onnx",)), run)
    assert sorted(p.name for p in outputs["bundle"].iterdir()) == ["model.json", "model.onnx"]
    assert not outputs["bundle"].is_symlink()
    assert list(elsewhere.iterdir()) == []  # nothing written, moved or removed through a link
    mode = stat.S_IMODE(outputs["bundle"].stat().st_mode)
    assert mode == export.folder_mode()  # readable as a plain mkdir'd folder, not 0700
