"""Helpers the bench scripts share (they run as ``python bench/<script>.py``, so this folder is on
``sys.path``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


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


def run_pipeline(pipeline: str, out: Path, data: Path, seed: int, *extra: str) -> Path:
    """Run ``pipeline`` on ``data`` with ``seed`` (``extra``: more CLI arguments) and return the
    new run folder — whatever its exit status: a run that fails a gate or is not promoted is an
    answer too."""
    folder = out / pipeline
    before = set(folder.glob("*/manifest.json")) if folder.is_dir() else set()
    command = [sys.executable, "-m", "indvision.pipeline", pipeline, "--data", str(data),
               "--out", str(out), "--set", f"seed={seed}", *extra]
    print("$", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL).returncode
    new = sorted(p.parent for p in set(folder.glob("*/manifest.json")) - before)
    if not new:
        raise SystemExit(f"no run folder appeared under {folder} (exit {status})")
    print(f"  -> {new[-1]} (exit {status})", flush=True)
    return new[-1]


def link_tree(target: Path, folders: dict[str, list[Path]]) -> Path:
    """A folder-per-class tree of symbolic links (``class`` → its files)."""
    for label, files in folders.items():
        (target / label).mkdir(parents=True, exist_ok=True)
        for file in files:
            link = target / label / file.name
            if not link.exists():
                link.symlink_to(file.resolve())
    return target
