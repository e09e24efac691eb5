"""The files a training keeps as it goes, in the train folder: ``state.json`` (history rows and
each phase's record, what a resumed run continues from), the best epoch's weights as ``.npz``,
``history.csv`` and ``curves.png``. Every write is atomic, so a kill leaves the last good copy.

No Keras here (matplotlib only for the curves, imported when drawn).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic
from indvision.console import say

STATE = "state.json"
TENSORBOARD = "tensorboard"  # one sub-folder per phase key: train/tensorboard/finetune_m2
HISTORY_COLUMNS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr")


def read_state(out: Path) -> dict[str, Any]:
    """The saved state, or a fresh one (a state that cannot be read restarts from epoch 1)."""
    path = out / STATE
    if not path.is_file():
        return {"phases": {}, "history": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        say(f"train: warning: cannot read {path} ({exc}); training starts from epoch 1")
        return {"phases": {}, "history": []}


def write_state(out: Path, state: dict[str, Any]) -> None:
    atomic.write_json(out / STATE, state)


def save_arrays(path: Path, arrays: list[np.ndarray]) -> Path:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, *arrays)
    return path


def load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def history_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """History rows with a global 1-based epoch number, in phase order."""
    rows = []
    for epoch, row in enumerate(state["history"], start=1):
        rows.append({"epoch": epoch, **{k: row.get(k) for k in HISTORY_COLUMNS[1:]}})
    return rows


def write_history(out: Path, state: dict[str, Any]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history_rows(state):
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    return atomic.write_text(out / "history.csv", buffer.getvalue())


def write_curves(out: Path, state: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = history_rows(state)
    epochs = [r["epoch"] for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            # a child validates every few epochs: its validation line joins those it measured
            shown = [(e, r[prefix + metric]) for e, r in zip(epochs, rows, strict=True)
                     if r[prefix + metric] is not None] or [(np.nan, np.nan)]
            axis.plot(*zip(*shown, strict=True), style, marker="o", markersize=3,
                      label=f"{'validation' if prefix else 'train'} {metric}")
        for index in range(1, len(rows)):
            if rows[index]["phase"] != rows[index - 1]["phase"]:
                axis.axvline(epochs[index] - 0.5, color="grey", linewidth=0.8)
                axis.text(epochs[index] - 0.4, axis.get_ylim()[1], rows[index]["phase"],
                          fontsize=8, va="top", color="grey")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic.atomic_path(out / "curves.png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return out / "curves.png"
