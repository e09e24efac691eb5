"""One run of a pipeline: its folder ``exports/<pipeline>/<run_id>/`` and its ``manifest.json``.

A run folder is never reused by another run. The manifest is rewritten atomically after every
stage change, so at any moment — even after a power cut — it says which stages finished, how
long each took, and the sha256 of every file each produced. Stages find each other's outputs
through it (:meth:`Run.artifact`), never through globals.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indvision import atomic, layout
from indvision.errors import IndvisionError
from indvision.layout import MANIFEST

LOGS = "logs"  # <run>/logs/<stage>.log: each stage's whole console output
TRACKED_PACKAGES = (
    "indvision", "numpy", "opencv-python-headless", "onnxruntime", "tensorflow-cpu",
    "tensorflow", "keras", "tf2onnx", "onnx", "albumentations", "ai-edge-litert",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a model (read from metadata, no imports)."""
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of the project checkout, with ``+dirty`` when it has local changes."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def new_run_id() -> str:
    """A sortable, unique id: UTC time plus random hex (two runs in one second still differ)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def describe_outputs(root: Path, outputs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each output as its path relative to the run folder, size and sha256."""
    described = {}
    for name, path in outputs.items():
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            described[name] = {
                "path": os.path.relpath(path, root),
                "files": {os.path.relpath(p, root): atomic.sha256_file(p) for p in files},
            }
        else:
            described[name] = {
                "path": os.path.relpath(path, root),
                "bytes": path.stat().st_size,
                "sha256": atomic.sha256_file(path),
            }
    return described


class Run:
    """A run folder and its manifest. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def pipeline(self) -> str:
        return self.manifest["pipeline"]

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def model_stage(self) -> str:
        """The stage that made this run's model: ``fit`` (an anomaly model fitted on good
        images) where the pipeline has one, else ``train``. Evaluate, export and verify read
        the model and its ``input_spec`` from it."""
        stages = (self.manifest.get("config") or {}).get("stages") or {}
        return "fit" if "fit" in stages or "fit" in self.manifest["stages"] else "train"

    @property
    def exports_dir(self) -> Path:
        """``exports/<pipeline>/``: where ``latest.json`` lives."""
        return self.root.parent

    @classmethod
    def create(cls, out_dir: Path, pipeline: str, seed: int, config: dict[str, Any],
               config_hash: str) -> Run:
        """Make a new, never-used folder ``out_dir/<pipeline>/<run_id>/`` and its manifest."""
        parent = layout.pipeline_folder(out_dir, pipeline)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for _ in range(10):
                run_id = new_run_id()
                try:
                    (parent / run_id).mkdir()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - ten random collisions in one second
                raise IndvisionError(f"could not create a new run folder under {parent}")
        except OSError as exc:
            raise IndvisionError(f"cannot create a run folder under {parent}: "
                                 f"{exc.strerror or exc}") from None
        manifest = {
            "pipeline": pipeline,
            "run_id": run_id,
            "status": "running",
            "seed": seed,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config_hash": config_hash,
            "config": config,
            "versions": library_versions(),
            "git_commit": git_commit(),
            "stages": {},
        }
        run = cls(parent / run_id, manifest)
        run.save()
        return run

    @classmethod
    def open(cls, root: Path) -> Run:
        """Reopen an existing run (to resume it or read its artifacts)."""
        path = Path(root) / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndvisionError(f"no run at {root} (missing {MANIFEST})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise IndvisionError(f"cannot read {path}: {exc}") from None
        return cls(Path(root), manifest)

    def save(self) -> None:
        """Atomically rewrite ``manifest.json``."""
        atomic.write_json(self.root / MANIFEST, self.manifest)

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes into (created on demand)."""
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stage_status(self, stage: str) -> str | None:
        return self.manifest["stages"].get(stage, {}).get("status")

    def start_stage(self, stage: str) -> Path:
        """Mark ``stage`` running; return the path of its log (``logs/<stage>.log``, appended
        to by every attempt, named in the stage's manifest record)."""
        log = Path(LOGS) / f"{stage}.log"
        self.manifest["stages"][stage] = {"status": "running", "started": time.time(),
                                          "log": str(log)}
        self.save()
        return self.root / log

    def finish_stage(self, stage: str, outputs: dict[str, Path], seconds: float) -> None:
        record = self.manifest["stages"][stage]
        record.update(status="done", seconds=round(seconds, 2),
                      outputs=describe_outputs(self.root, outputs))
        self.save()

    def fail_stage(self, stage: str, status: str, message: str, seconds: float) -> None:
        record = self.manifest["stages"].setdefault(stage, {})
        record.update(status=status, seconds=round(seconds, 2), error=message)
        self.manifest["status"] = status
        self.save()

    def set_status(self, status: str) -> None:
        self.manifest["status"] = status
        self.save()

    def record(self, stage: str) -> dict[str, Any]:
        """The manifest's record of ``stage`` (status, seconds, outputs), ``{}`` if it never ran."""
        return self.manifest["stages"].get(stage) or {}

    def output(self, stage: str, name: str) -> dict[str, Any]:
        """The manifest's entry for output ``name`` of a finished ``stage``: its ``path`` and
        either ``sha256`` and ``bytes`` (a file) or ``files`` (a folder: relative path →
        sha256). Raises a clear error when the stage has not run or made no such output."""
        record = self.record(stage)
        if record.get("status") != "done":
            raise IndvisionError(f"stage '{stage}' has not run in {self.root}; "
                                 f"it must come before the stages that need its '{name}'")
        try:
            return record["outputs"][name]
        except KeyError:
            raise IndvisionError(f"stage '{stage}' produced no '{name}' in {self.root}") from None

    @contextlib.contextmanager
    def updating_output(self, stage: str, name: str) -> Iterator[dict[str, Any]]:
        """Change an output's manifest entry in place (a later stage rewrote one of its files);
        the manifest is saved atomically when the block ends without an error."""
        entry = self.output(stage, name)
        yield entry
        self.save()

    def artifact(self, stage: str, name: str) -> Path:
        """Path of an output an earlier stage declared, checked to exist and be unchanged: a
        file against its sha256, a folder file by file (a file whose rewrite was announced in
        ``pending_rewrite`` may already carry the new hash)."""
        entry = self.output(stage, name)
        path = self.root / entry["path"]
        if not path.exists():
            raise IndvisionError(
                f"{path} is missing: stage '{stage}' wrote it, something removed it")
        if "sha256" in entry and atomic.sha256_file(path) != entry["sha256"]:
            raise IndvisionError(f"{path} changed after stage '{stage}' wrote it "
                                 f"(sha256 differs from {MANIFEST})")
        pending = entry.get("pending_rewrite") or {}
        for relative, expected in (entry.get("files") or {}).items():
            file = self.root / relative
            if pending.get(relative) and file.is_file() \
                    and atomic.sha256_file(file) == pending[relative]:
                continue  # a later stage's own rewrite, interrupted before it was recorded
            atomic.check_sha256(file, expected, self.root / MANIFEST)
        return path

    def has_artifact(self, stage: str, name: str) -> bool:
        record = self.record(stage)
        return record.get("status") == "done" and name in record.get("outputs", {})
