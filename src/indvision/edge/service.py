"""``python -m indvision.edge serve BUNDLE``: the bundle as an HTTP service (FastAPI).

On a plant the model is called by other machines — a PLC gateway, the MES, a sorter's
controller. :func:`create_app` builds the FastAPI application; ``serve`` runs it with uvicorn,
bound to 127.0.0.1:8000 unless told otherwise. The optional extra ``[serve]`` installs FastAPI
and uvicorn; the runtime stays TF-free.

- ``POST /predict``: one image as the body (``Content-Type: image/*`` or
  ``application/octet-stream``) → the :meth:`EdgeClassifier.predict` dict (``label``,
  ``score``, ``scores``); or ``multipart/form-data`` with one or more files →
  ``{"results": [{"filename", ...}]}``, in order.
- ``POST /predict/object``: the views of one object (multipart) → one decision by the
  bundle's rule (its least-good view decides): ``label, score, scores, views, decided_by``.
- ``GET /model``: the bundle's summary (``edge info --json``: classes, decision, metrics,
  files, lineage, signatures) and how it is served. ``GET /healthz``: ``{"status": "ok"}``.
  ``GET /metrics``: Prometheus text (:mod:`indvision.edge.service_metrics`).
- ``GET /``: a live page (model summary, the last decisions with their images and, for bundles
  with maps, heatmaps), fed by ``GET /recent``.

Security: with ``token`` set every endpoint but ``/healthz`` and the page's static HTML needs
``Authorization: Bearer <token>`` (401 otherwise; compared in constant time); the page reads
the token from its URL fragment (``/#token=...``, never sent to the server) and sends it as
that header. Bodies over ``max_body_bytes`` → 413 (refused from ``Content-Length`` before
reading); images whose header claims more than ``max_pixels`` → 422 before decoding; a body
that is not an image → 415 (wrong content type) or 422 (cannot be decoded), with the reason.
Errors are JSON ``{"error": ...}``; no response ever carries a traceback.

The bundle is held by a :class:`~indvision.edge.hotswap.ModelSlot`: with ``follow`` a new
``latest.json`` is loaded and checked beside the old model and swapped in whole; a bad bundle
is refused and the old one keeps serving.
"""

from __future__ import annotations

import base64
import collections
import functools
import hmac
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indvision import heatmaps, images, metrics
from indvision.edge import info as bundle_info
from indvision.edge.hotswap import ModelSlot
from indvision.edge.service_metrics import ServiceMetrics
from indvision.errors import IndvisionError

RECENT = 12  # decisions the live page shows
THUMBNAIL = 160  # px, the longer side of a page image


@dataclass(frozen=True)
class Limits:
    """What a request may carry."""

    max_body_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_files: int = 64


class RequestError(Exception):
    """A request the service refuses: HTTP ``status`` and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, name: str, limits: Limits) -> np.ndarray:
    """Bytes → RGB image, or a 413/422 :class:`RequestError` naming ``name``."""
    if len(data) > limits.max_body_bytes:
        raise RequestError(413, f"{name}: {len(data)} bytes, over the limit of "
                                f"{limits.max_body_bytes}")
    try:
        return images.decode(data, name, limits.max_pixels)
    except images.ImageError as exc:
        raise RequestError(422, str(exc)) from None


class Recent:
    """The last decisions, for the live page: the model input, label and score of each."""

    def __init__(self, size: int = RECENT) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, name: str, model_input: np.ndarray, result: dict[str, Any]) -> None:
        with self._lock:
            self._items.appendleft({"name": name, "time": time.strftime("%H:%M:%S"),
                                    "input": model_input, "label": result["label"],
                                    "score": result["score"]})

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


def _jpeg(rgb: np.ndarray) -> str:
    scale = THUMBNAIL / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def recent_view(classifier: Any, recent: Recent) -> list[dict[str, Any]]:
    """The page's rows: image, and (bundles with maps) its heatmap, computed here for the
    rows shown — predictions never pay for the page."""
    items = recent.items()
    maps = None
    if items and classifier.has_maps:
        _, maps = classifier.scores_and_maps(np.stack([item["input"] for item in items]))
    rows = []
    for index, item in enumerate(items):
        row = {key: item[key] for key in ("name", "time", "label", "score")}
        row["image"] = _jpeg(item["input"])
        if maps is not None:
            row["heatmap"] = _jpeg(heatmaps.overlay(item["input"], maps[index]))
        rows.append(row)
    return rows


def predict_arrays(classifier: Any, arrays: list[np.ndarray]) -> tuple[list[dict], np.ndarray]:
    """Results exactly as :meth:`EdgeClassifier.predict` gives them, and the model inputs."""
    batch = np.stack([classifier.load(array) for array in arrays])
    return classifier.results(classifier.scores(batch)), batch


def predict_object(classifier: Any, names: list[str], arrays: list[np.ndarray]
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """One object from its views: the least-good view decides (the bundle's rule)."""
    batch = np.stack([classifier.load(array) for array in arrays])
    probs = classifier.scores(batch)
    _, chosen, fused = metrics.fuse_groups(probs, ["object"] * len(names),
                                           classifier.good_index)
    result = classifier.results(fused)[0]
    return {**result, "views": names, "decided_by": names[chosen[0]]}, batch


def check_token(header: str | None, token: str | None) -> None:
    """401 unless ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise RequestError(401, "missing or wrong bearer token")


def read_token(path: str | Path) -> str:
    """The token in ``path`` (one line; at least 16 characters)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndvisionError(f"--token-file {path}: cannot read it ({exc})") from None
    if len(token) < 16:
        raise IndvisionError(f"--token-file {path}: the token must be at least 16 characters")
    return token


def model_summary(slot: ModelSlot) -> dict[str, Any]:
    classifier = slot.get()
    summary = bundle_info.summary(str(classifier.bundle))
    summary["serving"] = {"model_file": classifier.model_file, "runtime": classifier.runtime,
                          "signed_by": classifier.signed_by, "has_maps": classifier.has_maps,
                          "swaps": slot.swaps, "refusals": slot.refusals,
                          "last_refusal": slot.last_refusal}
    return summary


@functools.cache
def live_page() -> str:
    """The page's HTML, read from the package once (it never changes while serving)."""
    return resources.files("indvision.edge").joinpath("live.html").read_text(encoding="utf-8")


def create_app(slot: ModelSlot, token: str | None = None, limits: Limits = Limits()) -> Any:
    """The FastAPI application serving ``slot``'s classifier (see the module docstring)."""
    from indvision.edge.service_routes import build

    return build(slot, token, limits, ServiceMetrics(), Recent())


def serve(slot: ModelSlot, host: str, port: int, token: str | None, limits: Limits) -> None:
    """Run the service with uvicorn until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        raise IndvisionError("serve needs FastAPI and uvicorn: pip install "
                             "'indvision[serve]'") from None
    print(f"serve: http://{host}:{port}/ ({'token required' if token else 'no token'}), "
          f"{slot.get().bundle}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(slot, token, limits), host=host, port=port, log_level="warning")
