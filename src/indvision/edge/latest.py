"""Following ``exports/<pipeline>/latest.json`` safely: the bundle it names stays inside it.

``latest.json`` is a plain file beside the runs; whoever can write it could point a device
anywhere. :func:`follow` reads it once (bounded) and refuses a ``bundle`` that is absolute,
climbs out with ``..`` or resolves (through a link) outside the folder; :func:`check_pipeline`
refuses a bundle whose ``model.json`` (the parsed bytes the runtime checked) belongs to another
pipeline than the one ``latest.json`` names. :func:`bundle_of` does both for callers that only
want the path. Each refusal is one IndvisionError line naming ``latest.json``. An older signed
bundle of the same pipeline (a rollback) is :mod:`indvision.edge.accepted`'s concern. TF-free:
the edge runtime imports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from indvision import formats
from indvision.errors import IndvisionError
from indvision.formats import MODEL_JSON

LATEST = "latest.json"
MAX_LATEST_BYTES = 2**20  # a pointer and a few metrics: kilobytes


@dataclass(frozen=True)
class Followed:
    """One read of ``latest.json`` (``path``): its ``record`` and the ``bundle`` it names,
    checked to lie inside its folder. Every later check uses this record, never the file."""

    path: Path
    record: dict[str, Any]
    bundle: Path


def read_latest(folder: Path) -> dict[str, Any]:
    """``folder/latest.json`` as a dict (one bounded read), with one clear line when
    unreadable."""
    path = Path(folder) / LATEST
    try:
        latest = json.loads(formats.read_bounded(path, MAX_LATEST_BYTES, LATEST))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    if not isinstance(latest, dict) or not isinstance(latest.get("bundle"), str):
        raise IndvisionError(f"cannot read {path}: no 'bundle' path in it")
    return latest


def follow(folder: Path) -> Followed:
    """``folder/latest.json``, read once, and the bundle it names, kept inside ``folder``."""
    folder = Path(folder)
    path = folder / LATEST
    latest = read_latest(folder)
    relative = PurePosixPath(latest["bundle"].replace("\\", "/"))
    if relative.is_absolute() or Path(latest["bundle"]).is_absolute() \
            or ".." in relative.parts:
        raise IndvisionError(f"{path}: 'bundle' {latest['bundle']!r} leaves its folder; "
                             "latest.json may only name a bundle inside it")
    bundle = folder / relative
    if not bundle.resolve().is_relative_to(folder.resolve()):
        raise IndvisionError(f"{path}: 'bundle' {latest['bundle']!r} resolves outside its "
                             "folder (a link?); latest.json may only name a bundle inside it")
    if not (bundle / MODEL_JSON).is_file():
        raise IndvisionError(f"{path} points at {bundle}, which holds no {MODEL_JSON}: was "
                             "the run folder moved or deleted?")
    return Followed(path, latest, bundle)


def check_pipeline(followed: Followed, meta: Any) -> None:
    """Refuse a bundle whose ``model.json`` (``meta``, parsed) names another pipeline than
    ``latest.json``."""
    wanted = followed.record.get("pipeline")
    own = meta.get("pipeline") if isinstance(meta, dict) else None
    if wanted and own != wanted:
        raise IndvisionError(f"{followed.path}: points at a bundle of pipeline {own!r}, not "
                             f"{wanted!r} ({followed.bundle / MODEL_JSON}); refusing to "
                             "follow it")


def bundle_of(folder: Path) -> Path:
    """The bundle ``folder/latest.json`` points at, checked to lie inside ``folder`` and to
    belong to the pipeline ``latest.json`` names (for callers that only want the path; the
    runtime checks the pipeline on the ``model.json`` bytes it goes on to run)."""
    followed = follow(folder)
    check_pipeline(followed, read_meta(followed.bundle))
    return followed.bundle


def read_meta(bundle: Path) -> Any:
    """``bundle/model.json`` parsed (bounded), whatever its shape, with one clear line."""
    try:
        return json.loads(formats.model_json_bytes(bundle))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndvisionError(f"cannot read {bundle / MODEL_JSON}: {exc}") from None
