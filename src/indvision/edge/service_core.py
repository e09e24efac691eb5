"""What ``edge serve`` does, without FastAPI: request limits, decoding within a pixel budget,
predictions, the token check, the live page's recent decisions and ``GET /model``'s summary.

:mod:`indvision.edge.service_routes` puts these behind HTTP; nothing here imports FastAPI, so
the runtime and its tests need no ``[serve]`` extra.
"""

from __future__ import annotations

import base64
import collections
import functools
import hmac
import ipaddress
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indvision import heatmaps, images, metrics
from indvision.edge import info as bundle_info
from indvision.edge.hotswap import Follower, ModelSlot
from indvision.edge.service_metrics import ServiceMetrics
from indvision.errors import IndvisionError

RECENT = 12  # decisions the live page shows
THUMBNAIL = 160  # px, the longer side of a page image


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
REQUEST_PIXELS_PER_IMAGE_LIMIT = 4  # default request budget: four images at the image limit


@dataclass(frozen=True)
class Limits:
    """What a request may carry. ``max_request_pixels`` bounds the pixels of all its images
    together (decoding time and memory); ``None`` means four times ``max_pixels``."""

    max_body_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_files: int = 64
    max_request_pixels: int | None = None

    @property
    def request_pixels(self) -> int:
        """The pixel budget of one request."""
        if self.max_request_pixels is not None:
            return self.max_request_pixels
        return REQUEST_PIXELS_PER_IMAGE_LIMIT * self.max_pixels


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


class PixelBudget:
    """The pixels one request may still decode (:attr:`Limits.request_pixels`)."""

    def __init__(self, limits: Limits) -> None:
        self.left = limits.request_pixels
        self.total = limits.request_pixels

    def charge(self, name: str, width: int, height: int) -> None:
        """Take ``width x height`` pixels, or 413 when the request would pass its budget."""
        self.left -= width * height
        if self.left < 0:
            raise RequestError(413, f"{name}: the request's images hold more than "
                                    f"{self.total} pixels together, over its limit")


def model_input(classifier: Any, data: bytes, name: str, limits: Limits,
                budget: PixelBudget) -> np.ndarray:
    """One image's bytes → the classifier's model input, the full-size decode dropped at once.
    The pixels are charged from the header before decoding (after it, where the format's
    header does not say). Runs in the thread pool: decoding never blocks the event loop."""
    size = images.header_size(data)
    if size is not None and size[0] * size[1] <= limits.max_pixels:  # else 422 below
        budget.charge(name, *size)
    rgb = decode_image(data, name, limits)
    if size is None:
        budget.charge(name, rgb.shape[1], rgb.shape[0])
    return classifier.load(rgb)


class Recent:
    """The last decisions, for the live page: the model input, label and score of each.
    They belong to one model: a decision by another (a swapped-in bundle, perhaps with another
    input size) starts the list afresh, and only the asking model's items are shown."""

    def __init__(self, size: int = RECENT) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._owner: Any = None

    def add(self, owner: Any, name: str, model_input: np.ndarray, result: dict[str, Any]
            ) -> None:
        with self._lock:
            if owner is not self._owner:
                self._items.clear()
                self._owner = owner
            self._items.appendleft({"name": name, "time": time.strftime("%H:%M:%S"),
                                    "input": model_input, "label": result["label"],
                                    "score": result["score"]})

    def items(self, owner: Any) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items) if owner is self._owner else []


def _jpeg(rgb: np.ndarray) -> str:
    scale = THUMBNAIL / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def recent_view(classifier: Any, recent: Recent) -> list[dict[str, Any]]:
    """The page's rows: image, and (bundles with maps) its heatmap, computed here for the
    rows shown — predictions never pay for the page."""
    items = recent.items(classifier)
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


def predict_inputs(classifier: Any, inputs: list[np.ndarray]) -> tuple[list[dict], np.ndarray]:
    """Results exactly as :meth:`EdgeClassifier.predict` gives them, and the model inputs
    (already prepared by :func:`model_input`)."""
    batch = np.stack(inputs)
    return classifier.results(classifier.scores(batch)), batch


def predict_object(classifier: Any, names: list[str], inputs: list[np.ndarray]
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """One object from its views: the least-good view decides (the bundle's rule)."""
    batch = np.stack(inputs)
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


def relative(value: Any, base: Path) -> Any:
    """``value`` (JSON-like) with every ``base/`` prefix in its strings removed: what the
    service tells a client names files inside the served folder, never where it lies."""
    if isinstance(value, str):
        for prefix in {str(base), str(base.resolve())}:
            value = value.replace(prefix + os.sep, "")
        return value
    if isinstance(value, dict):
        return {key: relative(item, base) for key, item in value.items()}
    if isinstance(value, list):
        return [relative(item, base) for item in value]
    return value


def bundle_name(bundle: Path) -> str:
    """A bundle's name for a client: its folder (``<run>/bundle`` for a run's bundle)."""
    return f"{bundle.parent.name}/{bundle.name}" if bundle.name == "bundle" else bundle.name


def model_summary(slot: ModelSlot) -> dict[str, Any]:
    """``GET /model``: the bundle's summary and how it is served, without absolute paths."""
    classifier = slot.get()
    bundle = Path(classifier.bundle)
    summary = bundle_info.summary(str(bundle))
    summary["bundle"] = bundle_name(bundle)
    summary["serving"] = {"model_file": classifier.model_file, "runtime": classifier.runtime,
                          "signed_by": classifier.signed_by, "has_maps": classifier.has_maps,
                          "swaps": slot.swaps, "refusals": slot.refusals,
                          "last_swap": slot.last_swap, "last_refusal": slot.last_refusal}
    return relative(summary, bundle.parent)


def allowed_hosts(host: str, extra: list[str] | None = None) -> list[str]:
    """The ``Host`` names the service answers: the bound address, the loopback names and
    ``extra``; a wildcard bind (0.0.0.0, ::) adds nothing — name the hosts with ``extra``."""
    hosts = [*LOOPBACK_HOSTS, *(extra or [])]
    if host not in ("0.0.0.0", "::", ""):
        hosts.append(host)
    return list(dict.fromkeys(hosts))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.cache
def live_page() -> str:
    """The page's HTML, read from the package once (it never changes while serving)."""
    return resources.files("indvision.edge").joinpath("live.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class ServiceState:
    """What one served application holds: the model slot, the token, the limits, its counters
    and recent decisions, the follower (``--follow``) and the allowed ``Host`` names (None:
    any)."""

    slot: ModelSlot
    token: str | None = None
    limits: Limits = Limits()
    counters: ServiceMetrics = field(default_factory=ServiceMetrics)
    recent: Recent = field(default_factory=Recent)
    follower: Follower | None = None
    hosts: list[str] | None = None
