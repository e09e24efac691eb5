"""Heatmap overlays: a model's map on the image as the model saw it (numpy and OpenCV only).

Maps come on a fixed 0–1 scale — an anomaly model's normalised patch scores (0.5 is the
bundle's threshold), a classifier's per-patch probability of the decided class
(:mod:`indvision.cam`) — so the colours are fixed too, not stretched per image: the same colour
means the same evidence on every frame. For an anomaly map green-yellow is the threshold, red
well above it and blue a patch like the good training parts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from indvision import atomic
from indvision.errors import IndvisionError


def upsample_map(grid_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A model's patch-grid map ``(h, w)`` resized to the input ``(height, width)`` (bilinear,
    pixel centres aligned), for display: the overlay an operator sees."""
    grid = np.asarray(grid_map, dtype=np.float32)
    if grid.ndim != 2:
        raise IndvisionError(f"anomaly: expected one (h, w) map, got shape {grid.shape}")
    return cv2.resize(grid, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, grid_map: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3 RGB uint8) with ``grid_map`` (h, w, values in [0, 1]) upsampled to
    it and blended in with the JET colour scale fixed to [0, 1]."""
    height, width = image.shape[:2]
    heat = np.clip(upsample_map(grid_map, height, width), 0.0, 1.0)
    colours = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    blended = (1 - opacity) * image.astype(np.float32) + opacity * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - encoding an in-memory uint8 image does not fail
        raise IndvisionError("cannot encode a heatmap as PNG")
    return encoded.tobytes()


def write_overlay(target: Path, image: np.ndarray, grid_map: np.ndarray) -> Path:
    """Write the overlay PNG atomically (a crash never leaves half a file); return its path."""
    try:
        return atomic.write_bytes(target, png_bytes(overlay(image, grid_map)))
    except OSError as exc:
        raise IndvisionError(f"cannot write the heatmap {target}: {exc.strerror or exc}") from None
