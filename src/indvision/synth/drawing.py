"""Small drawing helpers shared by the synthetic image kinds.

All work on float32 images in [0, 1]; polygons and lines are drawn anti-aliased with
sub-pixel precision (``SHIFT`` fractional bits), so shapes stay smooth at any scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

F32 = np.float32
SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
ONE = 1 << SHIFT


def fix(pts: np.ndarray) -> np.ndarray:
    """Float (N, 2) x/y points -> int32 fixed-point array for cv2 drawing with SHIFT."""
    return np.round(np.asarray(pts, dtype=np.float64) * ONE).astype(np.int32).reshape(-1, 1, 2)


def poly_mask(
    shape: tuple[int, int], polys: Sequence[np.ndarray], blur: float = 0.0
) -> np.ndarray:
    """Anti-aliased filled polygon(s) as a float32 alpha mask in [0, 1]."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [fix(p) for p in polys], 255, cv2.LINE_AA, SHIFT)
    out = m.astype(F32) * F32(1.0 / 255.0)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def line_mask(
    shape: tuple[int, int],
    pts: np.ndarray | Sequence[np.ndarray],
    thickness: int,
    closed: bool = False,
    blur: float = 0.0,
    value: float = 1.0,
) -> np.ndarray:
    """Anti-aliased polyline(s) as a float32 alpha mask (``pts``: one array or a list)."""
    lines = [pts] if isinstance(pts, np.ndarray) else list(pts)
    m = np.zeros(shape, np.uint8)
    cv2.polylines(
        m,
        [fix(p) for p in lines],
        closed,
        round(255 * value),
        max(1, thickness),
        cv2.LINE_AA,
        SHIFT,
    )
    out = m.astype(F32) * F32(1.0 / 255.0)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def blend(img: np.ndarray, mask: np.ndarray, layer: np.ndarray | Sequence[float]) -> None:
    """In place: img = img * (1 - mask) + layer * mask (layer: image or colour).

    Only the bounding box of the mask's support is touched (masks are mostly small).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(mask.any(axis=0))
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    m = mask[ys, xs]
    if img.ndim == 3:
        m = m[..., None]
    lay = np.asarray(layer, F32)
    if lay.ndim >= 2:
        lay = lay[ys, xs]
    sub = img[ys, xs]
    sub += m * (lay - sub)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise (about ``cells`` blobs across), unit std, float32."""
    h, w = shape
    small = rng.standard_normal((cells + 1, cells + 1)).astype(F32)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out / (out.std() + 1e-6)


def blob(
    rng: np.random.Generator,
    center: Sequence[float],
    radius: float,
    *,
    aspect: float = 1.0,
    angle: float = 0.0,
    jag: float = 0.2,
    n: int = 24,
    smooth: bool = True,
) -> np.ndarray:
    """Irregular closed outline (N, 2) around ``center``: a radial polygon.

    ``jag`` is the relative radius jitter; ``smooth`` low-passes it (stain/patch) instead
    of leaving it jagged (torn cardboard).
    """
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = rng.uniform(-1.0, 1.0, n)
    if smooth:  # circular moving average -> round, lumpy outline
        r = (np.roll(r, 1) + r + np.roll(r, -1) + 0.5 * (np.roll(r, 2) + np.roll(r, -2))) / 2.2
    r = radius * (1.0 + jag * r)
    x, y = r * np.cos(t) * aspect, r * np.sin(t)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + ca * x - sa * y, center[1] + sa * x + ca * y], axis=1)


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (y, x) for illumination fields."""
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    return yy * F32(2.0 / (h - 1)) - 1, xx * F32(2.0 / (w - 1)) - 1


def illumination(rng: np.random.Generator, h: int, w: int, grad: float, vign: float) -> np.ndarray:
    """Smooth lighting field: linear gradient in a random direction times vignetting."""
    yy, xx = grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    field = 1.0 + rng.uniform(0.0, grad) * (np.cos(a) * xx + np.sin(a) * yy)
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    field *= 1.0 - rng.uniform(0.0, vign) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0
    return field.astype(F32)


def finish(rng: np.random.Generator, img: np.ndarray, noise: tuple[float, float]) -> np.ndarray:
    """Gamma, sensor noise (signal-dependent + read noise) and 8-bit quantisation."""
    img = np.clip(img, 0.0, 1.0) ** F32(rng.uniform(0.85, 1.2))
    sigma = rng.uniform(*noise)
    img = img + rng.standard_normal(img.shape, dtype=F32) * (
        F32(sigma) * (0.4 + 0.6 * np.sqrt(img))
    )
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
