"""The names of a run's and a bundle's files, and the one way to find a run, a bundle or
``latest.json``.

A run lives in ``exports/<pipeline>/<run_id>/`` with its ``manifest.json``; export publishes
its bundle in ``<run>/bundle/`` (``model.json``, its signature ``model.json.sig``, the model
files) and verify points ``exports/<pipeline>/latest.json`` at it. Whoever can write
``latest.json`` could point a reader anywhere, so it is read once and bounded, and a path it
names must stay inside its folder (no absolute path, no ``..``, no link out) and belong to the
pipeline it names. :func:`run_of` (lineage's ``--from``) and :func:`bundle_of` (the edge) each
accept a run folder, a bundle folder or ``exports/<pipeline>``. Only the standard library and
:mod:`indvision.errors`: the edge, the stages and the service all use it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from indvision.errors import IndvisionError

EXPORTS = "exports"  # the default folder that holds exports/<pipeline>/<run_id>/
MANIFEST = "manifest.json"  # a run's list of artifacts and their sha256
LATEST = "latest.json"  # exports/<pipeline>/latest.json: the newest shipped run and bundle
BUNDLE = "bundle"  # <run>/bundle/: what goes to a device
MODEL_JSON = "model.json"  # a bundle's description: classes, input spec, files, decision
SIGNATURE = "model.json.sig"  # the signatures over model.json's bytes

MAX_LATEST_BYTES = 2**20  # a pointer and a few metrics: kilobytes
MAX_MODEL_JSON_BYTES = 16 * 2**20  # a bundle description is kilobytes; more is not one
MAX_MANIFEST_BYTES = 64 * 2**20  # a run's file list, with its kept replay images

_NOUNS = {"bundle": "a bundle", "run_dir": "a run folder"}  # what a named path is, in words


def read_bounded(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, read once (what is checked is then what is
    used), refusing a file over ``limit`` bytes — or a device, a pipe or a folder — with one
    line naming it (``what``: e.g. "model file")."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: opening a pipe must not wait for a writer
    except FileNotFoundError:
        raise IndvisionError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise IndvisionError(f"{path}: {what} is a folder, not a file") from None
    except OSError as exc:
        raise IndvisionError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IndvisionError(f"{path}: {what} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise IndvisionError(f"{path}: {what} is not a regular file (a device or a pipe?)")
        if info.st_size > limit:
            raise IndvisionError(f"{path}: {what} larger than {limit} bytes; not a bundle "
                                 "file indvision wrote — restore the original bundle")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise IndvisionError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while read
        raise IndvisionError(f"{path}: {what} larger than {limit} bytes; not a bundle file "
                             "indvision wrote — restore the original bundle")
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd`` (fewer only at its end)."""
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_record(path: str | Path, limit: int, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (one bounded read, :func:`read_bounded`), one clear line
    when it is not one."""
    data = read_bounded(path, limit, what)
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict):
        raise IndvisionError(f"cannot read {path}: not a JSON object")
    return record


def inside(folder: Path, named: object, what: str, record: Path) -> Path:
    """``folder / named``, refused unless it stays inside ``folder``: ``named`` (field ``what``
    of the file ``record`` in ``folder``, e.g. ``latest.json``'s ``bundle``) must be a relative
    path without ``..`` that does not resolve (through a link) outside ``folder``."""
    noun = _NOUNS.get(what, "a path")
    if not isinstance(named, str) or not named.strip():
        raise IndvisionError(f"{record}: {what!r} is not a path: {named!r}")
    relative = PurePosixPath(named.replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(named).is_absolute() or ".." in relative.parts:
        raise IndvisionError(f"{record}: {what!r} {named!r} leaves its folder; {record.name} "
                             f"may only name {noun} inside it")
    target = Path(folder) / relative
    if not target.resolve().is_relative_to(Path(folder).resolve()):
        raise IndvisionError(f"{record}: {what!r} {named!r} resolves outside its folder (a "
                             f"link?); {record.name} may only name {noun} inside it")
    return target


def pipeline_folder(exports: str | Path, pipeline: str) -> Path:
    """``exports/<pipeline>``: where a pipeline's runs and its ``latest.json`` live. The name
    must be one plain folder name, so a pipeline cannot write outside ``exports``."""
    if (not isinstance(pipeline, str) or not pipeline.strip() or pipeline in (".", "..")
            or "/" in pipeline or "\\" in pipeline or PureWindowsPath(pipeline).drive):
        raise IndvisionError(f"pipeline name {pipeline!r}: must be one folder name (no '/', "
                             "'\\', '..' or drive), since its runs go to exports/<name>/")
    return Path(exports) / pipeline


def read_latest(folder: str | Path) -> dict[str, Any]:
    """``folder/latest.json`` as a dict: one bounded read (:data:`MAX_LATEST_BYTES`)."""
    return read_record(Path(folder) / LATEST, MAX_LATEST_BYTES, LATEST)


@dataclass(frozen=True)
class Followed:
    """One read of ``latest.json`` (``path``): its ``record`` and the ``bundle`` it names,
    checked to lie inside its folder. Every later check uses this record, never the file."""

    path: Path
    record: dict[str, Any]
    bundle: Path


def follow(folder: str | Path) -> Followed:
    """``folder/latest.json``, read once, and the bundle it names, kept inside ``folder``."""
    path, record, bundle = _pointed_at(Path(folder), "bundle", MODEL_JSON)
    return Followed(path, record, bundle)


def _pointed_at(folder: Path, field: str, holds: str) -> tuple[Path, dict[str, Any], Path]:
    """One read of ``folder/latest.json``, and the folder its ``field`` names, kept inside
    ``folder`` and holding the file ``holds``."""
    path = folder / LATEST
    record = read_latest(folder)
    target = inside(folder, record.get(field), field, path)
    if not (target / holds).is_file():
        raise IndvisionError(f"{path} points at {target}, which holds no {holds}: was the "
                             "run folder moved or deleted?")
    return path, record, target


def check_pipeline(followed: Followed, meta: Any) -> None:
    """Refuse a bundle whose ``model.json`` (``meta``, parsed) names another pipeline than
    ``latest.json`` (when it names one)."""
    wanted = followed.record.get("pipeline")
    own = meta.get("pipeline") if isinstance(meta, dict) else None
    if wanted and own != wanted:
        raise IndvisionError(f"{followed.path}: points at a bundle of pipeline {own!r}, not "
                             f"{wanted!r} ({followed.bundle / MODEL_JSON}); refusing to "
                             "follow it")


def bundle_of(given: str | Path) -> tuple[Path, Followed | None]:
    """The bundle ``given`` names — a bundle folder, a run folder (its ``bundle/``) or
    ``exports/<pipeline>`` (the bundle ``latest.json`` names, :func:`follow`) — and the one
    read of ``latest.json`` when it came through one (the caller checks the pipeline on the
    ``model.json`` it parses, :func:`check_pipeline`)."""
    folder = Path(given).expanduser()
    if (folder / MODEL_JSON).is_file():
        return folder, None
    if (folder / BUNDLE / MODEL_JSON).is_file():
        return folder / BUNDLE, None
    if (folder / LATEST).is_file():
        followed = follow(folder)
        return followed.bundle, followed
    if not folder.exists():
        raise IndvisionError(f"{folder}: no such bundle folder")
    raise IndvisionError(f"{folder}: not a bundle (no {MODEL_JSON}), run folder or "
                         f"exports/<pipeline> folder (no {LATEST}: no run has passed verify)")


def run_of(given: str | Path) -> Path:
    """The run folder ``given`` names: itself, the run a bundle folder sits in, or the run
    ``exports/<pipeline>/latest.json`` names (inside its folder, of its pipeline)."""
    path = Path(given).expanduser()
    if not path.exists():
        raise IndvisionError(f"{path}: no such folder")
    if (path / MANIFEST).is_file():
        return path
    if (path / LATEST).is_file():
        return _latest_run(path)
    if (path / MODEL_JSON).is_file():
        if (path.parent / MANIFEST).is_file():
            return path.parent
        raise IndvisionError(f"{path}: this bundle was copied out of its run folder, which "
                             "holds the Keras model and the replay images a child starts "
                             "from; give the run folder")
    raise IndvisionError(f"{path}: not a run folder (no {MANIFEST}), a bundle or an "
                         f"exports/<pipeline> folder (no {LATEST})")


def _latest_run(folder: Path) -> Path:
    """The run ``folder/latest.json`` names in ``run_dir``, inside ``folder``, with a
    manifest of the pipeline ``latest.json`` names."""
    path, record, run = _pointed_at(folder, "run_dir", MANIFEST)
    wanted = record.get("pipeline")
    own = read_record(run / MANIFEST, MAX_MANIFEST_BYTES, MANIFEST).get("pipeline")
    if wanted and own != wanted:
        raise IndvisionError(f"{path}: points at a run of pipeline {own!r}, not {wanted!r} "
                             f"({run / MANIFEST}); refusing to follow it")
    return run


def recorded_bundle_files(run: Path) -> dict[str, str]:
    """What ``run``'s manifest records of its exported bundle's files (relative path →
    sha256), ``{}`` when it records none (no manifest, export not done, another shape)."""
    try:
        manifest = read_record(Path(run) / MANIFEST, MAX_MANIFEST_BYTES, MANIFEST)
        export = manifest["stages"]["export"]
        files = export["outputs"]["bundle"]["files"] if export.get("status") == "done" else {}
    except (IndvisionError, KeyError, TypeError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}
