"""Following ``exports/<pipeline>/latest.json`` safely: the bundle it names stays inside it.

``latest.json`` is a plain file beside the runs; whoever can write it could point a device
anywhere. :func:`bundle_of` refuses a ``bundle`` that is absolute, climbs out with ``..`` or
resolves (through a link) outside the folder, and one whose ``model.json`` belongs to another
pipeline than the one ``latest.json`` names. Each refusal is one IndvisionError line naming
``latest.json``. TF-free: the edge runtime imports it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from indvision.errors import IndvisionError
from indvision.formats import MODEL_JSON

LATEST = "latest.json"


def read_latest(folder: Path) -> dict[str, Any]:
    """``folder/latest.json`` as a dict, with one clear line when unreadable."""
    path = folder / LATEST
    try:
        latest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None
    if not isinstance(latest, dict) or not isinstance(latest.get("bundle"), str):
        raise IndvisionError(f"cannot read {path}: no 'bundle' path in it")
    return latest


def bundle_of(folder: Path) -> Path:
    """The bundle ``folder/latest.json`` points at, checked to lie inside ``folder`` and to
    belong to the pipeline ``latest.json`` names."""
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
    _check_pipeline(path, latest, bundle)
    return bundle


def _check_pipeline(path: Path, latest: dict[str, Any], bundle: Path) -> None:
    """Refuse a bundle whose ``model.json`` names another pipeline than ``latest.json``."""
    try:
        meta = json.loads((bundle / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndvisionError(f"cannot read {bundle / MODEL_JSON}: {exc}") from None
    followed = latest.get("pipeline")
    own = meta.get("pipeline") if isinstance(meta, dict) else None
    if followed and own != followed:
        raise IndvisionError(f"{path}: points at a bundle of pipeline {own!r}, not {followed!r} "
                             f"({bundle / MODEL_JSON}); refusing to follow it")
