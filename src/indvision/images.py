"""The one image decoder and resizer, used by ingest, training, evaluation and the edge runtime.

Train/serve skew (an image decoded or resized one way for training and another way on the
device) is the most common reason an exported model disagrees with the trained one. So there
is exactly one path from bytes to model input, here, with numpy and OpenCV only — the edge
runtime imports this module and must never pull in TensorFlow.

Model input is always RGB, uint8 values, ``height x width x 3``; scaling to whatever the
backbone wants happens inside the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indvision import image_headers
from indvision.errors import IndvisionError

UNDECODABLE = "not a decodable image (corrupt, truncated or not an image)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 100_000_000  # refuse before decoding: a forged header must not exhaust memory
BUDGET_BYTES_PER_PIXEL = 4  # the decoding budget: an RGBA 8-bit image at the pixel limit

_RESIZE_METHODS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


class ImageError(IndvisionError):
    """An image file that cannot be used; ``reason`` is short enough for a CSV column."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height read from the header of any format OpenCV decodes here, without
    decoding (see :mod:`indvision.image_headers`), else None. Never raises."""
    sizes = image_headers.claimed_sizes(data)
    return sizes[0] if sizes else None


def decoded_bytes(size: tuple[int, int], depth: tuple[int, int]) -> int:
    """Bytes a decoder holds for an image of that size and ``(channels, bits)`` before it is
    converted to 8-bit RGB (at least three channels: the RGB it becomes)."""
    (width, height), (channels, bits) = size, depth
    return width * height * max(channels, 3) * max(1, -(-bits // 8))


def check_header(data: bytes, source: str | Path = "<bytes>",
                 max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before any decoder runs, bytes of a format not in the whitelist, whose size
    the header does not say, or whose header claims more than ``max_pixels`` anywhere (the
    image, a tile, a later page or frame), or more decoded bytes than ``max_pixels`` RGBA
    8-bit pixels take (a 16-bit or float image is held at its own depth first; where the
    header does not say the depth, the most its format allows counts)."""
    if not data:
        raise ImageError(source, "empty file (0 bytes)")
    fmt = image_headers.identify(data)
    if fmt is None:
        raise ImageError(source, UNDECODABLE)
    if fmt.name == "JPEG" and b"\xff\xd9" not in data[-65536:]:
        # libjpeg fills a cut-off JPEG with grey and only warns: refuse it instead
        raise ImageError(source, "truncated JPEG (no end-of-image marker)")
    header = image_headers.claimed_header(data)
    if header is None:
        raise ImageError(source, f"{fmt.name} header does not say the image size "
                                 "(corrupt or truncated)")
    for width, height in header.sizes:
        if width * height > max_pixels:
            raise ImageError(
                source, f"header claims {width}x{height} pixels, over the limit of {max_pixels}")
    budget = max_pixels * BUDGET_BYTES_PER_PIXEL
    for width, height in header.sizes:
        if decoded_bytes((width, height), header.depth) > budget:
            channels, bits = header.depth
            raise ImageError(source, f"header claims {width}x{height} pixels of {channels} "
                                     f"channels at {bits} bits, over the decoding budget of "
                                     f"{budget / 1e6:g} MB")


def decode(data: bytes, source: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to RGB uint8 ``H x W x 3``, after :func:`check_header`.

    Grayscale, RGBA (alpha dropped), 16-bit (scaled to 8-bit) and EXIF-rotated JPEGs all come
    out the same way. Raises :class:`ImageError` naming ``source`` for anything unusable.
    """
    check_header(data, source, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises for some corrupt or oversized files
        raise ImageError(source, f"cannot decode ({str(exc).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.size == 0:
        raise ImageError(source, UNDECODABLE)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_bytes(path: str | Path) -> bytes:
    """Read a file's bytes, turning OS errors into an :class:`ImageError` naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file (any path, non-ASCII too) to RGB uint8."""
    return decode(read_bytes(path), path, max_pixels)


@dataclass(frozen=True)
class InputSpec:
    """How an RGB image becomes model input; travels in the bundle's ``model.json``.

    ``crop`` is an optional region of interest as fractions ``(x0, y0, x1, y1)`` of the image,
    applied before resizing: the same crop on the training machine and on the device.

    ``colour_window`` ``(width, height)``, fractions of the image, follows an object that moves
    across the frame instead: a window of that size centred on the most colourful area
    (:func:`colour_centre`), shifted to stay inside the image. Parcels, labels and painted
    parts stand out in colour from grey conveyors and fixtures; a frame with no colourful area
    gets the window on its most saturated spot all the same, so look at the model inputs in
    evaluate's report. It applies after ``crop`` when both are given.
    """

    height: int
    width: int
    resize: str = "area"
    crop: tuple[float, float, float, float] | None = None
    colour_window: tuple[float, float] | None = None
    channel_order: str = "RGB"
    value_range: tuple[int, int] = (0, 255)
    dtype: str = "uint8"

    def __post_init__(self) -> None:
        if self.resize not in _RESIZE_METHODS:
            raise ValueError(
                f"resize must be one of {sorted(_RESIZE_METHODS)}, not {self.resize!r}")
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"crop must be fractions 0 <= x0 < x1 <= 1, got {self.crop}")
        window = self.colour_window
        if window is not None and (len(window) != 2 or not all(0 < f <= 1 for f in window)):
            raise ValueError("colour_window must be (width, height) fractions in (0, 1], "
                             f"got {window}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """The spec a ``model.json`` or artifact records; ``ValueError`` for a malformed one."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("height", "width"):
            if type(known.get(key)) is not int or known[key] < 1:
                raise ValueError(f"{key} must be a positive whole number, got {known.get(key)!r}")
        for key in ("crop", "colour_window", "value_range"):
            value = known.get(key)
            if value is None:
                continue
            if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{key} must be a list of numbers, got {value!r}")
            known[key] = tuple(value)
        for key in ("resize", "channel_order", "dtype"):
            if key in known and not isinstance(known[key], str):
                raise ValueError(f"{key} must be text, got {known[key]!r}")
        return cls(**known)


COLOUR_MAP_SIDE = 120  # the saturation map colour_centre searches is this wide (or high)
COLOUR_BLUR = 0.04  # its Gaussian blur, as a fraction of the map's longer side


def colour_centre(image: np.ndarray) -> tuple[float, float]:
    """Centre ``(x, y)`` in pixels of the most colourful area of an RGB image.

    The HSV saturation of a downscaled copy, blurred so that a compact colourful object
    outweighs scattered specks; its peak (first in row order on ties) is the centre. Pure
    OpenCV/numpy, deterministic: the device finds the same window as training did.
    """
    h, w = image.shape[:2]
    scale = max(h, w) / COLOUR_MAP_SIDE
    small_w, small_h = max(1, round(w / scale)), max(1, round(h / scale))
    small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    saturation = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
    blurred = cv2.GaussianBlur(saturation, (0, 0), COLOUR_BLUR * max(small_w, small_h))
    y, x = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
    return (x + 0.5) * w / small_w, (y + 0.5) * h / small_h


def colour_window_box(image: np.ndarray,
                      fractions: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the ``colour_window`` of an image (see :class:`InputSpec`)."""
    h, w = image.shape[:2]
    box_w = max(1, min(w, round(fractions[0] * w)))
    box_h = max(1, min(h, round(fractions[1] * h)))
    cx, cy = colour_centre(image)
    x0 = int(min(max(round(cx - box_w / 2), 0), w - box_w))
    y0 = int(min(max(round(cy - box_h / 2), 0), h - box_h))
    return x0, y0, x0 + box_w, y0 + box_h


def prepare(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Crop and resize one RGB uint8 image to the model's input (``H x W x 3`` uint8)."""
    if spec.crop is not None:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = spec.crop
        image = image[round(y0 * h) : max(round(y1 * h), round(y0 * h) + 1),
                      round(x0 * w) : max(round(x1 * w), round(x0 * w) + 1)]
    if spec.colour_window is not None:
        x0, y0, x1, y1 = colour_window_box(image, spec.colour_window)
        image = image[y0:y1, x0:x1]
    if image.shape[0] != spec.height or image.shape[1] != spec.width:
        image = cv2.resize(image, (spec.width, spec.height),
                           interpolation=_RESIZE_METHODS[spec.resize])
    return np.ascontiguousarray(image, dtype=np.uint8)


def load(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Read, decode and prepare one image file for the model."""
    return prepare(read_image(path), spec)
