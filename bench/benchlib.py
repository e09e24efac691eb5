"""Helpers the bench scripts share (they run as ``python bench/<script>.py``, so this folder is on
``sys.path``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load_avg() -> str:
    """The machine's load, printed beside every timing: a busy machine explains a slow row."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (a run still going)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def finished_runs(path: Path, marker: str) -> list[Path]:
    """A run folder → itself; a pipeline folder (``exports/<pipeline>``) → its runs holding
    ``marker`` (``verify/parity.json``: exported and verified; ``evaluate/metrics.json``), in
    name order; an empty list when there are none."""
    if (path / "manifest.json").is_file():
        return [path]
    return sorted(p for p in path.iterdir()
                  if (p / "manifest.json").is_file() and (p / marker).is_file())
