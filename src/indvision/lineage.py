"""Parents and children: what a run keeps for the runs started from it, and finding it again.

A run that exports keeps, inside its own folder, what a child (``--from``) needs after the
original ``--data`` folder is moved or deleted (:func:`write_keep`, called by export): per
class up to ``per_class`` training and as many validation images, drawn as whole objects in a
seeded random order (so a rare class is replayed as fully as a common one), and its test split
(up to ``test_max`` images, sampled per class in proportion), which the promotion gate judges a
child on. The images are copied content-addressed (``keep/images/<sha256><suffix>``) and listed
in ``keep/keep.csv``; the manifest records every file's sha256.

:func:`open_parent` resolves what ``--from`` names (a run folder, a bundle folder inside one,
or ``exports/<pipeline>``: :func:`indvision.layout.run_of`) and checks that the parent
finished, exported and is intact: a missing or changed file is one clear line. No numpy, no
TensorFlow: ingest calls it before anything heavy is imported.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indvision import atomic, layout
from indvision.errors import IndvisionError
from indvision.layout import MODEL_JSON
from indvision.rundir import Run

KEEP_DIR = "keep"
KEEP_CSV = "keep.csv"
KEEP_COLUMNS = ("file", "label", "split", "group", "sha256", "width", "height")


# ----------------------------------------------------------------------------- choosing


def choose_exemplars(rows: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    """Up to ``per_class`` rows of each class, as whole objects (``group``) in a random order
    seeded by ``seed`` and the class name — the replay rule, deterministic for a run."""
    objects: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        objects[row["label"]][row.get("group") or row["path"]].append(row)
    chosen: list[dict[str, str]] = []
    for label in sorted(objects):
        names = sorted(objects[label])
        random.Random(f"{seed}:{label}").shuffle(names)
        taken = 0
        for name in names:
            if taken >= per_class:
                break
            chosen.extend(objects[label][name])
            taken += len(objects[label][name])
    return chosen


def sample_test(rows: list[dict[str, str]], limit: int, seed: int) -> list[dict[str, str]]:
    """The whole test split when it has at most ``limit`` images, else each class sampled in
    proportion (whole objects, at least one per class)."""
    if len(rows) <= limit:
        return list(rows)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["label"]] += 1
    kept: list[dict[str, str]] = []
    for label in sorted(counts):
        share = max(1, round(limit * counts[label] / len(rows)))
        kept += choose_exemplars([r for r in rows if r["label"] == label], share, seed)
    return kept


# ----------------------------------------------------------------------------- writing


def write_keep(run: Run, per_class: int, test_max: int) -> Path:
    """Copy the replay exemplars and the test split into ``<run>/keep/`` (content-addressed)
    and list them in ``keep.csv``; return the folder (a stage output: the manifest records
    every file's sha256). Each image is written to a temporary name and renamed."""
    from indvision.dataset import read_splits

    rows = read_splits(run.artifact("ingest", "splits"))
    chosen = (choose_exemplars([r for r in rows if r["split"] == "train"], per_class, run.seed)
              + choose_exemplars([r for r in rows if r["split"] == "val"], per_class, run.seed)
              + sample_test([r for r in rows if r["split"] == "test"], test_max, run.seed))
    folder = run.root / KEEP_DIR
    listed = []
    for row in chosen:
        name = f"images/{row['sha256']}{Path(row['path']).suffix.lower()}"
        target = folder / name
        if not target.is_file():
            try:
                data = Path(row["path"]).read_bytes()
            except OSError as exc:
                raise IndvisionError(f"cannot keep {row['path']} for the runs started from "
                                     f"this one: {exc.strerror or exc}") from None
            atomic.write_bytes(target, data)
        listed.append([name, row["label"], row["split"], row.get("group") or "", row["sha256"],
                       row.get("width", ""), row.get("height", "")])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KEEP_COLUMNS)
    writer.writerows(listed)
    atomic.write_text(folder / KEEP_CSV, buffer.getvalue())
    return folder


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Parent:
    """A finished, exported run a child starts from, checked intact."""

    root: Path
    run_id: str
    pipeline: str
    classes: list[str]
    good_class: str | None
    model: Path  # train/model.keras
    model_json_sha256: str
    train: dict[str, Any]  # the parent's train config (backbone, size, ensemble, ...)
    kept: list[dict[str, str]]  # keep.csv rows, "path" absolute

    def rows(self, split: str) -> list[dict[str, str]]:
        return [r for r in self.kept if r["split"] == split]

    def to_dict(self) -> dict[str, Any]:
        """``ingest/parent.json``: what the later stages of the child read."""
        return {"run_dir": str(self.root), "run_id": self.run_id, "pipeline": self.pipeline,
                "classes": self.classes, "good_class": self.good_class,
                "model": str(self.model), "model_sha256": atomic.sha256_file(self.model),
                "model_json_sha256": self.model_json_sha256,
                "train": self.train,
                "kept": {s: len(self.rows(s)) for s in ("train", "val", "test")}}


def run_folder(given: str | Path) -> Path:
    """The run folder ``--from`` names: itself, the run a bundle folder sits in, or the run
    ``exports/<pipeline>/latest.json`` points at (:func:`indvision.layout.run_of`)."""
    try:
        return layout.run_of(given)
    except IndvisionError as exc:
        raise IndvisionError(f"--from {exc}") from None


def open_parent(given: str | Path) -> Parent:
    """Resolve and check the parent ``given`` names (see :func:`run_folder`): it finished,
    exported, and its model, bundle record and kept images are what its manifest says."""
    root = run_folder(given)
    try:
        run = Run.open(root)
    except IndvisionError as exc:
        raise IndvisionError(f"--from {given}: {exc}") from None
    status = run.manifest.get("status")
    if status != "done" or run.stage_status("export") != "done":
        raise IndvisionError(f"--from {given}: run {run.run_id} is '{status}'"
                             + ("" if run.stage_status("export") == "done" else
                                ", never exported")
                             + "; only a finished, exported run can be a parent")
    if not run.has_artifact("export", "keep"):
        raise IndvisionError(f"--from {given}: run {run.run_id} kept no replay images "
                             "(made before indvision kept them, or export.keep_per_class 0); "
                             "retrain it once, then start children from the new run")
    try:
        model = run.artifact(run.model_stage, "model")
        bundle = run.artifact("export", "bundle")
        keep = run.artifact("export", "keep")
        classes = atomic.read_json(run.artifact("ingest", "classes"))
    except IndvisionError as exc:
        raise IndvisionError(f"--from {given}: the parent is not intact: {exc}") from None
    meta = atomic.read_json(bundle / MODEL_JSON)
    return Parent(
        root=root.resolve(), run_id=run.run_id, pipeline=run.pipeline, classes=list(classes),
        good_class=(meta.get("decision") or {}).get("good_class"), model=model.resolve(),
        model_json_sha256=atomic.sha256_file(bundle / MODEL_JSON),
        train=dict(((run.manifest.get("config") or {}).get("stages") or {}).get("train") or {}),
        kept=_kept_rows(keep, classes))


def _kept_rows(keep: Path, classes: list[str]) -> list[dict[str, str]]:
    """``keep.csv`` with absolute paths; every file's name is its content's sha256 (the
    manifest check has already compared the bytes)."""
    try:
        text = (keep / KEEP_CSV).read_text(encoding="utf-8")
    except OSError as exc:
        raise IndvisionError(f"cannot read {keep / KEEP_CSV}: {exc.strerror or exc}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        if row.get("label") not in classes or not Path(row.get("file", "")).stem == row.get(
                "sha256"):
            raise IndvisionError(f"{keep / KEEP_CSV}: row {row} does not match the parent's "
                                 "classes or its content address")
        row["path"] = str(layout.inside(keep, row["file"], "file", keep / KEEP_CSV).resolve())
    return rows
