"""Deterministic synthetic image sets: the offline default data of indvision.

With no real data at hand, both pipelines train on images drawn here:

* ``defect``: 128x128 grey metal-surface textures (brushed / ground steel, stored as
  3-channel PNG) with six surface-defect classes, in the spirit of the NEU steel set.
* ``parcel``: 192x108 (16:9) colour frames of a cardboard box on a conveyor, with four
  damage classes.

Design rules, and why:

* **Determinism.** Every image is drawn from its own generator,
  ``np.random.default_rng([seed, class_index, index])``, so an image does not depend on
  how many others were drawn before it or in which order, and the same seed gives
  byte-identical PNG files (``cv2.imencode`` is deterministic). No global RNG state is
  touched.
* **Shapes, not statistics.** Lighting (gain, gradient, vignetting, gamma, colour cast),
  texture contrast, scale, rotation, position, background and sensor noise are drawn
  from the *same* ranges for every class, so per-class brightness and colour
  distributions overlap heavily; only the defect *shape* tells the classes apart.
  :func:`histogram_baseline_accuracy` measures this: a colour-histogram classifier must
  stay far below what a small CNN reaches.
* **Atomic output.** A set is written into a temporary sibling folder and renamed into
  place, so an interrupted run never leaves a half-written tree; ``synth.json`` records
  the parameters so :func:`ensure` can reuse a matching set without regenerating it.

Command line: ``python -m indvision.synth {defect,parcel} OUT_DIR [--seed N]
[--per-class N] [--baseline]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "IMAGE_SIZES",
    "KINDS",
    "ensure",
    "generate",
    "histogram_baseline_accuracy",
    "main",
    "render",
]

#: Bump whenever the drawing changes, so :func:`ensure` regenerates stale sets.
GENERATOR_VERSION: int = 1

#: kind -> class names, in label-index order (the one table of classes).
KINDS: dict[str, tuple[str, ...]] = {
    "defect": ("ok", "scratch", "inclusion", "patches", "crazing", "pitted"),
    "parcel": ("intact", "dented", "torn", "wet"),
}

#: kind -> image size as (width, height) in pixels.
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "defect": (128, 128),
    "parcel": (192, 108),
}

_META_NAME = "synth.json"
_SAMPLES_NAME = "samples.png"
_SAMPLES_PER_CLASS = 6

_F32 = np.float32
_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------------------
# small drawing helpers (all work on float32 images in [0, 1])
# --------------------------------------------------------------------------------------


def _fix(pts: np.ndarray) -> np.ndarray:
    """Float (N, 2) x/y points -> int32 fixed-point array for cv2 drawing with _SHIFT."""
    return np.round(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _poly_mask(
    shape: tuple[int, int], polys: Sequence[np.ndarray], blur: float = 0.0
) -> np.ndarray:
    """Anti-aliased filled polygon(s) as a float32 alpha mask in [0, 1]."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [_fix(p) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    out = m.astype(_F32) * _F32(1.0 / 255.0)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def _line_mask(
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
        [_fix(p) for p in lines],
        closed,
        round(255 * value),
        max(1, thickness),
        cv2.LINE_AA,
        _SHIFT,
    )
    out = m.astype(_F32) * _F32(1.0 / 255.0)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def _blend(img: np.ndarray, mask: np.ndarray, layer: np.ndarray | Sequence[float]) -> None:
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
    lay = np.asarray(layer, _F32)
    if lay.ndim >= 2:
        lay = lay[ys, xs]
    sub = img[ys, xs]
    sub += m * (lay - sub)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise (about ``cells`` blobs across), unit std, float32."""
    h, w = shape
    small = rng.standard_normal((cells + 1, cells + 1)).astype(_F32)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out / (out.std() + 1e-6)


def _blob(
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


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (y, x) for illumination fields."""
    yy, xx = np.mgrid[0:h, 0:w].astype(_F32)
    return yy * _F32(2.0 / (h - 1)) - 1, xx * _F32(2.0 / (w - 1)) - 1


def _illumination(rng: np.random.Generator, h: int, w: int, grad: float, vign: float) -> np.ndarray:
    """Smooth lighting field: linear gradient in a random direction times vignetting."""
    yy, xx = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    field = 1.0 + rng.uniform(0.0, grad) * (np.cos(a) * xx + np.sin(a) * yy)
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    field *= 1.0 - rng.uniform(0.0, vign) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0
    return field.astype(_F32)


def _finish(rng: np.random.Generator, img: np.ndarray, noise: tuple[float, float]) -> np.ndarray:
    """Gamma, sensor noise (signal-dependent + read noise) and 8-bit quantisation."""
    img = np.clip(img, 0.0, 1.0) ** _F32(rng.uniform(0.85, 1.2))
    sigma = rng.uniform(*noise)
    img = img + rng.standard_normal(img.shape, dtype=_F32) * (
        _F32(sigma) * (0.4 + 0.6 * np.sqrt(img))
    )
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# defect: metal surface textures
# --------------------------------------------------------------------------------------

_DW = 224  # working canvas; rotated/scaled down into the 128x128 output


def _metal_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-std brushed/ground steel reflectance texture (float32, n x n)."""
    k = int(rng.integers(9, 45))
    brushed = cv2.blur(rng.standard_normal((n, n), dtype=_F32), (k, 1))
    brushed /= brushed.std() + 1e-6
    grain = cv2.GaussianBlur(rng.standard_normal((n, n), dtype=_F32), (0, 0), rng.uniform(0.6, 1.6))
    grain /= grain.std() + 1e-6
    aniso = rng.uniform(0.2, 1.0)  # 1: strongly brushed, 0.2: mostly ground/isotropic grain
    tex = aniso * brushed + (1.0 - aniso) * grain
    # occasional straight grinding marks: wider faint bands along the brushing direction
    bands = cv2.resize(
        rng.standard_normal((n, 1)).astype(_F32), (n, n), interpolation=cv2.INTER_LINEAR
    )
    tex += rng.uniform(0.0, 0.6) * bands
    return tex / (tex.std() + 1e-6)


def _defect_scratch(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-3 thin long roughly parallel lines, bright (often with dark halo) or dark."""
    c = n / 2
    layer = np.zeros((n, n), _F32)
    count = int(rng.choice([1, 1, 2, 3]))
    base_ang = rng.uniform(0, np.pi)
    cx, cy = c + rng.uniform(-20, 20, 2)
    sign = 1.0 if rng.random() < 0.65 else -1.0
    for _ in range(count):
        ang = base_ang + rng.normal(0, 0.12)
        length = rng.uniform(80, 170)
        off = rng.uniform(-18, 18)
        px, py = cx - np.sin(ang) * off, cy + np.cos(ang) * off
        t = np.linspace(-0.5, 0.5, 14)
        bend = rng.uniform(-8, 8) * (4 * t**2 - 1)
        pts = np.stack(
            [
                px + np.cos(ang) * t * length - np.sin(ang) * bend,
                py + np.sin(ang) * t * length + np.cos(ang) * bend,
            ],
            axis=1,
        )
        # intensity fades towards the ends: draw segment by segment
        m = np.zeros((n, n), np.uint8)
        prof = np.clip(1.6 * (1 - np.abs(t[:-1] + t[1:])), 0.3, 1.0)
        thick = int(rng.choice([2, 2, 3, 4]))
        for j in range(len(t) - 1):
            cv2.line(
                m,
                tuple(int(v) for v in _fix(pts[j])[0, 0]),
                tuple(int(v) for v in _fix(pts[j + 1])[0, 0]),
                int(255 * prof[j]),
                thick,
                cv2.LINE_AA,
                _SHIFT,
            )
        core = cv2.GaussianBlur(m.astype(_F32) / 255.0, (0, 0), 0.7)
        amp = rng.uniform(0.45, 0.8)
        layer += sign * amp * core
        if sign > 0 and rng.random() < 0.6:  # dark groove next to a bright ridge
            halo = cv2.GaussianBlur(core, (0, 0), 2.0)
            layer -= rng.uniform(0.3, 0.6) * amp * halo
    return layer


def _defect_inclusion(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-4 small dark elongated blobs, aligned (rolled-in inclusions)."""
    c = n / 2
    layer = np.zeros((n, n), _F32)
    ang = rng.uniform(0, np.pi)
    cx, cy = c + rng.uniform(-28, 28, 2)
    for _ in range(int(rng.integers(1, 5))):
        d = rng.uniform(-22, 22)
        e = rng.uniform(-10, 10)
        p = (cx + np.cos(ang) * d - np.sin(ang) * e, cy + np.sin(ang) * d + np.cos(ang) * e)
        length = rng.uniform(6, 17)
        width = rng.uniform(2.0, 4.5)
        poly = _blob(
            rng, p, width, aspect=length / width, angle=ang + rng.normal(0, 0.15), jag=0.35, n=16
        )
        m = _poly_mask((n, n), [poly], blur=1.0)
        layer -= rng.uniform(0.45, 0.8) * m
    return layer


def _defect_patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-3 large soft irregular regions of a different tone (mottled)."""
    c = n / 2
    layer = np.zeros((n, n), _F32)
    sign = -1.0 if rng.random() < 0.8 else 1.0
    mott = np.clip(1.0 + 0.45 * _smooth_noise(rng, (n, n), 18), 0.2, 2.0)
    for _ in range(int(rng.integers(1, 4))):
        p = c + rng.uniform(-35, 35, 2)
        poly = _blob(
            rng,
            p,
            rng.uniform(16, 36),
            aspect=rng.uniform(0.6, 1.7),
            angle=rng.uniform(0, np.pi),
            jag=0.5,
            n=20,
        )
        m = _poly_mask((n, n), [poly], blur=rng.uniform(2.0, 4.5))
        layer += sign * rng.uniform(0.3, 0.5) * m * mott
    return layer


def _defect_crazing(rng: np.random.Generator, n: int) -> np.ndarray:
    """A network of fine dark cracks: edges of a domain-warped Voronoi tessellation."""
    c = n / 2
    rx, ry = rng.uniform(40, 90, 2)
    cx, cy = c + rng.uniform(-20, 20, 2)
    x0, x1 = int(max(0, cx - rx - 2)), int(min(n, cx + rx + 2))
    y0, y1 = int(max(0, cy - ry - 2)), int(min(n, cy + ry + 2))
    h, w = y1 - y0, x1 - x0
    k = int(rng.integers(14, 34))
    seeds = rng.uniform([x0, y0], [x1, y1], (k, 2)).astype(_F32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(_F32)
    warp = rng.uniform(3, 7)
    xx += warp * _smooth_noise(rng, (h, w), 10)
    yy += warp * _smooth_noise(rng, (h, w), 10)
    d = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    lab = np.argmin(d, axis=2)
    edge = np.zeros((h, w), _F32)
    edge[:, 1:] += lab[:, 1:] != lab[:, :-1]
    edge[1:, :] += lab[1:, :] != lab[:-1, :]
    edge = np.minimum(edge, 1.0)
    edge = cv2.dilate(edge, np.ones((2, 2) if rng.random() < 0.6 else (3, 3), np.uint8))
    edge = cv2.GaussianBlur(edge, (0, 0), 0.6)
    # fade the network out towards the border of an elliptic region, and break it up a bit
    region = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    fade = np.clip(1.4 - region, 0.0, 1.0) * np.clip(
        0.8 + 0.5 * _smooth_noise(rng, (h, w), 6), 0.0, 1.0
    )
    layer = np.zeros((n, n), _F32)
    layer[y0:y1, x0:x1] = -rng.uniform(0.45, 0.75) * edge * fade
    return layer


def _defect_pitted(rng: np.random.Generator, n: int) -> np.ndarray:
    """Many small dark pits (with a faint bright rim), in a cluster or spread out."""
    c = n / 2
    cx, cy = c + rng.uniform(-25, 25, 2)
    rx, ry = rng.uniform(28, 80, 2)
    count = int(rng.integers(25, 80))
    pts = rng.standard_normal((count, 2)) * [rx / 2, ry / 2] + [cx, cy]
    dark = np.zeros((n, n), np.uint8)
    rim = np.zeros((n, n), np.uint8)
    for (px, py), r, v in zip(
        pts, rng.uniform(1.6, 3.8, count), rng.uniform(0.6, 1.0, count), strict=True
    ):
        ctr = (int(px * _ONE), int(py * _ONE))
        rim_ctr = (int((px + 0.8) * _ONE), int((py + 0.8) * _ONE))
        cv2.circle(rim, rim_ctr, int(r * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(dark, ctr, int(r * _ONE), int(255 * v), -1, cv2.LINE_AA, _SHIFT)
    d = cv2.GaussianBlur(dark.astype(_F32) / 255.0, (0, 0), 0.7)
    r_ = cv2.GaussianBlur(rim.astype(_F32) / 255.0, (0, 0), 0.7)
    return -rng.uniform(0.45, 0.75) * d + 0.15 * np.clip(r_ - d, 0.0, 1.0)


_DEFECT_DRAW: dict[str, Callable[[np.random.Generator, int], np.ndarray] | None] = {
    "ok": None,
    "scratch": _defect_scratch,
    "inclusion": _defect_inclusion,
    "patches": _defect_patches,
    "crazing": _defect_crazing,
    "pitted": _defect_pitted,
}


def _render_defect(cls: str, rng: np.random.Generator) -> np.ndarray:
    """One metal-surface image (128x128x3 uint8, BGR) of class ``cls``.

    Model: intensity = illumination(x) * reflectance(x), reflectance = 1 + texture +
    defect. Defects are multiplicative, so they stay visible under any lighting while the
    lighting (shared ranges for all classes) dominates the brightness statistics.
    """
    n = _DW
    w, h = IMAGE_SIZES["defect"]
    refl = 1.0 + rng.uniform(0.03, 0.13) * _metal_texture(rng, n)
    refl += rng.uniform(0.0, 0.06) * _smooth_noise(rng, (n, n), 4)  # gentle mottling
    draw = _DEFECT_DRAW[cls]
    if draw is not None:
        refl += draw(rng, n)
    # random rotation, scale and shift of the whole surface into the output frame
    scale = rng.uniform(0.85, 1.2)
    mat = cv2.getRotationMatrix2D((n / 2, n / 2), rng.uniform(0, 360), scale)
    mat[:, 2] += np.array([w / 2 - n / 2, h / 2 - n / 2]) + rng.uniform(-6, 6, 2)
    refl = cv2.warpAffine(refl, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light = rng.uniform(0.22, 0.8) * _illumination(rng, h, w, grad=0.45, vign=0.5)
    img = (light * refl)[..., None] * (1.0 + rng.uniform(-0.04, 0.04, 3)).astype(_F32)
    if rng.random() < 0.3:  # slight defocus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.8))
    return _finish(rng, img, (0.006, 0.03))


# --------------------------------------------------------------------------------------
# parcel: cardboard box on a conveyor
# --------------------------------------------------------------------------------------

_SS = 2  # supersampling factor for the parcel scene


def _belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Conveyor background: a rubber belt with cleats or a roller bed, plus side rails."""
    tint = (1.0 + rng.uniform(-0.12, 0.12, 3)).astype(_F32)
    if rng.random() < 0.25:  # green or blue belt
        tint = np.array([[0.8, 1.15, 0.85], [1.2, 1.0, 0.8]][int(rng.integers(2))], _F32)
    if rng.random() < 0.5:  # rubber belt with transverse cleats
        base = rng.uniform(0.12, 0.5)
        img = np.full((h, w), base, _F32)
        img *= 1.0 + 0.05 * _smooth_noise(rng, (h, w), 8)
        period = rng.uniform(26, 60)
        xs = np.arange(w, dtype=_F32)
        phase = ((xs + rng.uniform(0, period)) % period) / period
        cleat = (phase < rng.uniform(0.06, 0.2)).astype(_F32)
        img *= 1.0 + rng.uniform(-0.35, 0.35) * cv2.GaussianBlur(cleat[None, :], (0, 0), 1.0)
    else:  # roller bed: shaded cylinders with dark gaps
        period = rng.uniform(24, 48)
        xs = np.arange(w, dtype=_F32)
        phase = ((xs + rng.uniform(0, period)) % period) / period
        shade = np.clip(np.sin(np.pi * np.clip(phase / 0.85, 0, 1)), 0, 1) ** 0.6
        img = np.tile(rng.uniform(0.25, 0.7) * (0.15 + 0.95 * shade)[None, :], (h, 1))
        img = cv2.GaussianBlur(img.astype(_F32), (0, 0), 1.0)
    img *= 1.0 + 0.06 * rng.standard_normal((h, w), dtype=_F32).clip(-2, 2) * rng.uniform(0.2, 1)
    out = img[..., None] * tint
    # side rails / guards at top and bottom
    rail = np.array([0.55, 0.6, 0.62], _F32) * rng.uniform(0.7, 1.3)
    if rng.random() < 0.3:  # safety-yellow painted guard
        rail = np.array([0.1, 0.7, 0.85], _F32) * rng.uniform(0.7, 1.1)
    for top in (True, False):
        th = int(rng.uniform(0, 0.14) * h)
        if th > 0:
            sl = slice(0, th) if top else slice(h - th, h)
            grad = np.linspace(0.8, 1.1, th, dtype=_F32)[:, None, None]
            out[sl] = rail * (grad if top else grad[::-1])
    return out


def _box_colour(rng: np.random.Generator) -> np.ndarray:
    """Kraft-cardboard colour (BGR, float)."""
    base = np.array([0.38, 0.56, 0.72], _F32)  # ~ RGB(184, 143, 97)
    base[0] *= rng.uniform(0.75, 1.2)
    base[2] *= rng.uniform(0.92, 1.08)
    return base * _F32(rng.uniform(0.8, 1.15))


class _Box:
    """Geometry of the box top face: centre, unit axes and half-sizes in pixels."""

    def __init__(self, center: np.ndarray, half: np.ndarray, angle: float) -> None:
        self.c = center
        self.half = half  # (along long axis, along short axis)
        self.ax = np.array([np.cos(angle), np.sin(angle)])
        self.ay = np.array([-np.sin(angle), np.cos(angle)])

    def pt(self, u: float | np.ndarray, v: float | np.ndarray) -> np.ndarray:
        """Box-local (u, v), in units of the half-sizes -> image x/y."""
        u = np.asarray(u, dtype=np.float64)[..., None]
        v = np.asarray(v, dtype=np.float64)[..., None]
        return self.c + u * self.half[0] * self.ax + v * self.half[1] * self.ay

    def corners(self) -> np.ndarray:
        return self.pt(np.array([-1, 1, 1, -1]), np.array([-1, -1, 1, 1]))


def _parcel_dent(
    rng: np.random.Generator,
    img: np.ndarray,
    bg: np.ndarray,
    box: _Box,
    col: np.ndarray,
    side: np.ndarray,
) -> None:
    """Crushed corner or edge: the outline gets a bite, with a dark crumpled facet."""
    shape = img.shape[:2]
    s = min(box.half)  # short half-size in px
    su, sv = rng.choice([-1.0, 1.0], 2)
    if rng.random() < 0.6:  # corner
        du = min(0.9, rng.uniform(0.9, 1.4) * s / box.half[0])
        dv = min(0.9, rng.uniform(0.9, 1.4) * s / box.half[1])
        corner = box.pt(su, sv)
        p1 = box.pt(su * (1 - du), sv)
        p2 = box.pt(su, sv * (1 - dv))
        k = rng.uniform(0.7, 1.0)
        q = box.pt(su * (1 - du * k), sv * (1 - dv * k))
        m = corner + rng.uniform(0.55, 0.75) * (q - corner)
        cut = np.array([p1, corner, p2, m])
    else:  # edge dent on a long or short edge
        if rng.random() < 0.5:
            t, w_ = rng.uniform(-0.45, 0.45), rng.uniform(0.8, 1.2) * s / box.half[0]
            p1, p2 = box.pt(t - w_, sv), box.pt(t + w_, sv)
            depth = min(0.9, rng.uniform(0.6, 0.95) * s / box.half[1])
            q = box.pt(t + rng.uniform(-0.3, 0.3) * w_, sv * (1 - depth))
            m = box.pt(t, sv * (1 - depth * rng.uniform(0.5, 0.7)))
        else:
            t, w_ = rng.uniform(-0.3, 0.3), min(0.7, rng.uniform(0.8, 1.2) * s / box.half[1])
            p1, p2 = box.pt(su, t - w_), box.pt(su, t + w_)
            depth = min(0.9, rng.uniform(0.6, 0.95) * s / box.half[0])
            q = box.pt(su * (1 - depth), t + rng.uniform(-0.3, 0.3) * w_)
            m = box.pt(su * (1 - depth * rng.uniform(0.5, 0.7)), t)
        cut = np.array([p1, p2, m])
    # a buckling crease runs from the dent into the face: dark fold with a lit edge
    face = _poly_mask(shape, [box.corners()])
    inward = (box.c - q) / (np.linalg.norm(box.c - q) + 1e-6)
    ca, sa = np.cos(rng.uniform(-0.5, 0.5)), np.sin(rng.uniform(-0.5, 0.5))
    dirv = np.array([ca * inward[0] - sa * inward[1], sa * inward[0] + ca * inward[1]])
    nrm = np.array([-dirv[1], dirv[0]]) * rng.choice([-1.0, 1.0])
    end = q + dirv * rng.uniform(0.7, 1.3) * s
    fold = np.array([q, end])
    _blend(img, _line_mask(shape, fold + nrm * 1.5, 2, blur=0.7) * face * 0.7, col * 1.3)
    _blend(img, _line_mask(shape, fold - nrm * 1.5, 2, blur=0.7) * face * 0.85, col * 0.35)
    # the crushed part drops away: belt (and a bit of the side wall) shows through
    cut_all = cv2.convexHull(np.concatenate([cut, cut + side]).astype(_F32)).reshape(-1, 2)
    _blend(img, _poly_mask(shape, [cut_all]), bg)
    _blend(img, _poly_mask(shape, [cut + side * 0.5]), col * 0.5)
    # crumpled facet: a fan of small folds from the inner point q to the cut line, lit
    # alternately dark and bright (crumpled board), unlike the flat, even side wall
    facet = np.array([p1, m, p2, q])
    fmask = _poly_mask(shape, [facet], blur=0.6)
    _blend(img, fmask, col * rng.uniform(0.4, 0.6))
    k = int(rng.integers(4, 7))
    t = np.sort(rng.uniform(0.0, 1.0, k - 1))
    edge_pts = [p1]
    for tt in t:  # points along the cut outline p1 -> m -> p2
        a_, b_ = (p1, m) if tt < 0.5 else (m, p2)
        edge_pts.append(a_ + (b_ - a_) * ((tt * 2) % 1.0))
    edge_pts.append(p2)
    dark = rng.random() < 0.5
    for e0, e1 in pairwise(edge_pts):
        tri = np.array([q + rng.uniform(-0.06, 0.06, 2) * s, e0, e1])
        tone = rng.uniform(0.25, 0.45) if dark else rng.uniform(0.95, 1.3)
        _blend(img, _poly_mask(shape, [tri]) * fmask, np.minimum(col * tone, 1.0))
        dark = not dark
    # creases: dark folds from the inner point, bright ridge along the fold line
    creases = [
        np.array([q + rng.uniform(-0.1, 0.1, 2) * s, m + (p - m) * rng.uniform(0.2, 0.8)])
        for p in (p1, p2)
        for _ in range(int(rng.integers(1, 3)))
    ]
    _blend(img, _line_mask(shape, creases, 2, blur=0.7) * fmask, col * 0.3)
    _blend(
        img,
        _line_mask(shape, np.array([p1, q, p2]), 2, blur=0.8) * 0.8,
        np.minimum(col * 1.35, 1.0),
    )


def _parcel_tear(rng: np.random.Generator, img: np.ndarray, box: _Box, col: np.ndarray) -> None:
    """Ripped hole showing the dark interior, with a lighter folded-out flap."""
    shape = img.shape[:2]
    s = min(box.half)
    u, v = rng.uniform(-0.65, 0.65), rng.uniform(-0.55, 0.55)
    ctr = box.pt(u, v)
    r = rng.uniform(0.35, 0.6) * s
    ang = np.arctan2(box.ax[1], box.ax[0]) + rng.uniform(-0.6, 0.6)
    hole = _blob(
        rng,
        ctr,
        r,
        aspect=rng.uniform(1.0, 1.8),
        angle=ang,
        jag=0.3,
        n=int(rng.integers(14, 22)),
        smooth=False,
    )
    hmask = _poly_mask(shape, [hole])
    # interior: very dark, lit from one side
    yy, xx = _grid(*shape)
    g = np.cos(ang) * xx + np.sin(ang) * yy
    dark = rng.uniform(0.1, 0.25) * (1.0 + 0.5 * np.clip(g * 3, -1, 1))
    _blend(img, hmask, col * dark[..., None])
    # ragged bright fibre rim (torn plies of the corrugated board)
    _blend(
        img,
        _line_mask(shape, hole, 2, closed=True, blur=0.6) * 0.85,
        np.minimum(col * 1.3 + 0.08, 1.0),
    )
    # flap: the torn-out piece, still hinged on one side of the hole and folded back
    # over the board: the rest of the outline mirrored across the hinge chord a-b,
    # foreshortened (it stands up partly), in the lighter inner-liner colour
    n = len(hole)
    i0 = int(rng.integers(n))
    k = int(rng.integers(n // 4, n // 3 + 1))  # hinge arc
    a, b = hole[i0], hole[(i0 + k) % n]
    rest = hole[[(i0 + k + j) % n for j in range(n - k + 1)]]  # b ... a, away from hinge
    ab = (b - a) / (np.linalg.norm(b - a) + 1e-6)
    nrm = np.array([-ab[1], ab[0]])
    d = (rest - a) @ nrm
    flap = rest - np.outer(d * (1.0 + rng.uniform(0.45, 0.8)), nrm)
    inner = np.array([0.62, 0.68, 0.72], _F32) * rng.uniform(0.85, 1.1)  # greyish liner
    fl_col = 0.5 * col * 1.15 + 0.5 * inner
    _blend(img, _poly_mask(shape, [flap], blur=0.5), fl_col)
    _blend(img, _line_mask(shape, flap, 1, closed=True, blur=0.5) * 0.7, col * 0.4)


def _parcel_wet(rng: np.random.Generator, img: np.ndarray, box: _Box, face: np.ndarray) -> None:
    """1-3 darker, irregular water stains with a darker tide-line rim, on the cardboard."""
    shape = img.shape[:2]
    s = min(box.half)
    total = np.zeros(shape, _F32)
    for j in range(int(rng.integers(1, 4))):
        ctr = box.pt(rng.uniform(-0.55, 0.55), rng.uniform(-0.45, 0.45))
        poly = _blob(
            rng,
            ctr,
            rng.uniform(0.55, 0.9) * s if j == 0 else rng.uniform(0.35, 0.7) * s,
            aspect=rng.uniform(0.7, 1.5),
            angle=rng.uniform(0, np.pi),
            jag=0.5,
            n=22,
        )
        total = np.maximum(total, _poly_mask(shape, [poly], blur=1.5))
    total *= face
    rim = np.clip(total - cv2.erode(total, np.ones((5, 5), np.uint8)), 0, 1)
    rim = cv2.GaussianBlur(rim, (0, 0), 1.0)
    f = rng.uniform(0.45, 0.66)
    mott = 1.0 + 0.1 * _smooth_noise(rng, shape, 12)
    wet = img * (np.array([0.9, 0.97, 1.0], _F32) * f) * mott[..., None]
    _blend(img, total, wet)
    img *= (1.0 - rng.uniform(0.15, 0.3) * rim)[..., None]


def _render_parcel(cls: str, rng: np.random.Generator) -> np.ndarray:
    """One conveyor frame (108x192x3 uint8, BGR) of class ``cls``.

    Drawn at 2x and area-downsampled (anti-aliasing); lighting, box colour/size/pose,
    tape, label, print and belt type are drawn from class-independent ranges.
    """
    w, h = IMAGE_SIZES["parcel"]
    H, W = h * _SS, w * _SS
    shape = (H, W)
    img = _belt(rng, H, W)
    # box pose: long side along the belt-ish, random rotation and position
    long_ = rng.uniform(0.42, 0.6) * W
    short = min(rng.uniform(0.5, 0.8) * long_, rng.uniform(0.5, 0.7) * H)
    angle = np.deg2rad(rng.uniform(-35, 35))
    side = np.array([rng.uniform(-5, 5), rng.uniform(6, 16)]) * (_SS / 2)  # visible side wall
    # the whole box (so any damage) must stay in frame: shrink to fit, then place it
    ca, sa = abs(np.cos(angle)), abs(np.sin(angle))
    ext = np.array([long_ * ca + short * sa + abs(side[0]), long_ * sa + short * ca + side[1]])
    fit = min(1.0, *(np.array([W, H]) * 0.94 / ext))
    long_, short, ext = long_ * fit, short * fit, ext * fit
    room = np.maximum(np.array([W, H]) - ext, 0.0) / 2 * 0.9
    jitter = np.minimum(room, np.array([0.15 * W, 0.12 * H]))
    center = np.array([W, H]) / 2 + rng.uniform(-1.0, 1.0, 2) * jitter
    center[1] -= side[1] / 2
    box = _Box(center, np.array([long_ / 2, short / 2]), angle)
    corners = box.corners()
    # shadow on the belt
    sh = cv2.convexHull(np.concatenate([corners, corners + side * 1.8 + [4, 3]]).astype(_F32))
    _blend(
        img,
        _poly_mask(shape, [sh.reshape(-1, 2)], blur=6.0) * rng.uniform(0.3, 0.6),
        np.zeros(3, _F32),
    )
    bg = img.copy()
    col = _box_colour(rng)
    hull = cv2.convexHull(np.concatenate([corners, corners + side]).astype(_F32)).reshape(-1, 2)
    _blend(img, _poly_mask(shape, [hull]), col * rng.uniform(0.55, 0.75))
    face = _poly_mask(shape, [corners])
    tex = (
        1.0 + 0.035 * _smooth_noise(rng, shape, 10) + 0.025 * rng.standard_normal(shape, dtype=_F32)
    )
    _blend(img, face, col * tex[..., None])
    # flap seam along the long axis and tape over it (clear/brown/white)
    _blend(
        img,
        _line_mask(shape, box.pt(np.array([-1.0, 1.0]), np.zeros(2)), 1, blur=0.5) * 0.6,
        col * 0.55,
    )
    tape_col = [
        col * np.array([0.8, 0.9, 1.05], _F32) * 0.9,
        np.minimum(col * 1.15 + 0.05, 1.0),
        np.array([0.85, 0.86, 0.86], _F32),
    ][int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
    tw = rng.uniform(0.14, 0.26)
    tape = box.pt(np.array([-1.0, 1.0, 1.0, -1.0]), np.array([-tw, -tw, tw, tw]))
    _blend(img, _poly_mask(shape, [tape]) * 0.92, tape_col)
    if rng.random() < 0.25:  # cross tape
        tape2 = box.pt(
            np.array([-tw, tw, tw, -tw]) * box.half[1] / box.half[0],
            np.array([-1.0, -1.0, 1.0, 1.0]),
        )
        _blend(img, _poly_mask(shape, [tape2]) * 0.92, tape_col)
    # shipping label with barcode and text lines
    if rng.random() < 0.6:
        lu, lv = rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.4)
        cu = rng.choice([-1, 1]) * rng.uniform(0.3, 1 - lu - 0.05)
        cv_ = rng.choice([-1, 1]) * rng.uniform(tw + lv + 0.05, max(tw + lv + 0.06, 1 - lv - 0.02))
        cv_ = float(np.clip(cv_, -(1 - lv - 0.02), 1 - lv - 0.02))
        lab = box.pt(cu + np.array([-lu, lu, lu, -lu]), cv_ + np.array([-lv, -lv, lv, lv]))
        _blend(img, _poly_mask(shape, [lab]), np.full(3, rng.uniform(0.8, 0.97), _F32))
        bars = [
            box.pt(cu + bu * lu + np.zeros(2), cv_ + np.array([-0.6, 0.1]) * lv)
            for bu in rng.uniform(-0.8, 0.8, int(rng.integers(10, 18)))
        ]
        _blend(img, _line_mask(shape, bars, 1) * 0.9, np.full(3, 0.1, _F32))
        text = [
            box.pt(cu + np.array([-0.8, rng.uniform(0.0, 0.8)]) * lu, cv_ + tl * lv)
            for tl in np.linspace(0.3, 0.75, int(rng.integers(2, 4)))
        ]
        _blend(img, _line_mask(shape, text, 1) * 0.7, np.full(3, 0.2, _F32))
    # printed markings straight on the cardboard (all classes: dark pixels on the box)
    if rng.random() < 0.35:
        pu, pv = rng.uniform(-0.7, 0.7), rng.choice([-1, 1]) * rng.uniform(tw + 0.15, 0.75)
        marks = [
            box.pt(pu + np.array([-0.2, rng.uniform(0.0, 0.2)]), pv + 0.12 * j)
            for j in range(int(rng.integers(2, 5)))
        ]
        _blend(img, _line_mask(shape, marks, 2) * face * 0.8, col * 0.25)
    if cls == "dented":
        _parcel_dent(rng, img, bg, box, col, side)
    elif cls == "torn":
        _parcel_tear(rng, img, box, col)
    elif cls == "wet":
        _parcel_wet(rng, img, box, face)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.3:  # belt motion blur
        k = int(rng.integers(2, 4))
        img = cv2.blur(img, (k, 1))
    light = rng.uniform(0.5, 1.35) * _illumination(rng, h, w, grad=0.5, vign=0.6)
    img = img * light[..., None] * (1.0 + rng.uniform(-0.1, 0.1, 3)).astype(_F32)
    return _finish(rng, img, (0.006, 0.035))


_RENDER: dict[str, Callable[[str, np.random.Generator], np.ndarray]] = {
    "defect": _render_defect,
    "parcel": _render_parcel,
}


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def _check_kind(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; valid kinds: {sorted(KINDS)}")
    return KINDS[kind]


def render(kind: str, class_name: str, index: int, *, seed: int = 0) -> np.ndarray:
    """Draw one image (H x W x 3 uint8, BGR as cv2 uses) of ``class_name``.

    The image depends only on (kind, seed, class index, index), never on what else was
    drawn, so sets can be generated in any order (or in parallel) with identical results.
    """
    classes = _check_kind(kind)
    if class_name not in classes:
        raise ValueError(f"unknown class {class_name!r} for kind {kind!r}; valid: {classes}")
    rng = np.random.default_rng([seed, classes.index(class_name), index])
    return _RENDER[kind](class_name, rng)


def _file_name(kind: str, uid: int) -> str:
    # parcel names carry a view suffix so "^(\d+)_" groups views of one parcel
    return f"{uid:05d}_top.png" if kind == "parcel" else f"{uid:05d}.png"


def _metadata(kind: str, seed: int, per_class: int) -> dict[str, object]:
    w, h = IMAGE_SIZES[kind]
    return {
        "kind": kind,
        "seed": int(seed),
        "per_class": int(per_class),
        "classes": list(KINDS[kind]),
        "image_size": [w, h],
        "version": GENERATOR_VERSION,
    }


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def _sample_grid(kind: str, rows: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Class-labelled grid: one row per class, a few images each."""
    w, h = IMAGE_SIZES[kind]
    label_w, pad = 120, 4
    ncol = max(len(v) for v in rows.values())
    grid = np.full((len(rows) * (h + pad) + pad, label_w + ncol * (w + pad) + pad, 3), 40, np.uint8)
    for r, (name, imgs) in enumerate(rows.items()):
        y = pad + r * (h + pad)
        cv2.putText(
            grid,
            name,
            (8, y + h // 2 + 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        for c, im in enumerate(imgs):
            x = label_w + pad + c * (w + pad)
            grid[y : y + h, x : x + w] = im
    return grid


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is moved aside first."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    for _ in range(3):
        if out_dir.exists():
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
        try:
            tmp.rename(out_dir)
            break
        except OSError:
            # another process put a tree there meanwhile: move it aside and retry
            if not out_dir.exists():
                raise
    else:  # pragma: no cover - pathological races only
        raise OSError(f"could not move {tmp} into place at {out_dir}")
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def generate(kind: str, out_dir: Path, *, seed: int = 0, per_class: int = 150) -> Path:
    """Write a synthetic set ``out_dir/<class>/<uid>.png`` and return ``out_dir``.

    Also writes ``samples.png`` (a class-labelled preview grid) and ``synth.json`` (kind,
    seed, per_class, classes, image_size, generator version). File names use an id that
    is unique across classes: defect ``{uid:05d}.png``, parcel ``{uid:05d}_top.png``. The
    tree is built in ``out_dir.parent/.<name>.tmp-<pid>`` and renamed into place, so an
    interrupted run never leaves a half-written ``out_dir``; an existing ``out_dir`` is
    replaced. Same arguments -> byte-identical files.

    Raises ``ValueError`` for an unknown kind or ``per_class < 1``.
    """
    classes = _check_kind(kind)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        samples: dict[str, list[np.ndarray]] = {}
        for ci, name in enumerate(classes):
            cdir = tmp / name
            cdir.mkdir()
            samples[name] = []
            for i in range(per_class):
                img = render(kind, name, i, seed=seed)
                (cdir / _file_name(kind, ci * per_class + i)).write_bytes(_encode_png(img))
                if i < _SAMPLES_PER_CLASS:
                    samples[name].append(img)
        (tmp / _SAMPLES_NAME).write_bytes(_encode_png(_sample_grid(kind, samples)))
        # written last: its presence marks a complete tree
        (tmp / _META_NAME).write_text(
            json.dumps(_metadata(kind, seed, per_class), indent=2, sort_keys=True) + "\n"
        )
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _matches(out_dir: Path, kind: str, seed: int, per_class: int) -> bool:
    """True when ``out_dir`` holds a complete set generated with these parameters."""
    try:
        meta = json.loads((out_dir / _META_NAME).read_text())
    except (OSError, ValueError):
        return False
    if meta != _metadata(kind, seed, per_class):
        return False
    for name in KINDS[kind]:
        cdir = out_dir / name
        if not cdir.is_dir():
            return False
        with os.scandir(cdir) as it:
            if sum(1 for e in it if e.name.endswith(".png")) != per_class:
                return False
    return True


def ensure(kind: str, root: Path, *, seed: int = 0, per_class: int = 150) -> Path:
    """Return ``root/kind``, generating it only if missing or made with other parameters.

    A set whose ``synth.json`` matches (kind, seed, per_class, classes, image size,
    generator version) and whose class folders hold ``per_class`` PNGs each is reused
    untouched; otherwise it is regenerated and swapped in atomically.
    """
    _check_kind(kind)
    out_dir = Path(root) / kind
    if _matches(out_dir, kind, seed, per_class):
        return out_dir
    return generate(kind, out_dir, seed=seed, per_class=per_class)


# --------------------------------------------------------------------------------------
# colour-histogram baseline: proves the data needs shapes
# --------------------------------------------------------------------------------------


def _hist_features(img: np.ndarray) -> np.ndarray:
    """Per-channel 16-bin normalised histograms + per-channel mean and std (54 values)."""
    px = img.reshape(-1, img.shape[2]) if img.ndim == 3 else img.reshape(-1, 1)
    feats = []
    for c in range(px.shape[1]):
        ch = px[:, c]
        feats.append(np.bincount(ch >> 4, minlength=16) / ch.size)
        feats.append([ch.mean() / 255.0, ch.std() / 255.0])
    return np.concatenate(feats).astype(np.float64)


def _softmax_regression(
    x: np.ndarray, y: np.ndarray, k: int, *, steps: int = 600, lr: float = 0.5, l2: float = 1e-3
) -> np.ndarray:
    """Full-batch gradient-descent multinomial logistic regression; returns weights."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    wts = np.zeros((xb.shape[1], k))
    onehot = np.eye(k)[y]
    for _ in range(steps):
        z = xb @ wts
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        grad = xb.T @ (p - onehot) / len(xb) + l2 * wts
        wts -= lr * grad
    return wts


def histogram_baseline_accuracy(data_dir: Path, *, seed: int = 0) -> float:
    """Test accuracy of a colour-histogram classifier on a folder-per-class image set.

    Features: per-channel 16-bin normalised histograms plus channel mean/std. Split:
    stratified 70 % train / 30 % test (shuffled with ``seed``). Two classifiers are fit
    on standardised features, nearest-centroid and softmax regression, and the *better*
    test accuracy is returned (a conservative, i.e. high, estimate). If this is far
    below a CNN's accuracy, the classes differ by shape rather than by colour/brightness.
    """
    data_dir = Path(data_dir)
    try:
        classes = list(json.loads((data_dir / _META_NAME).read_text())["classes"])
    except (OSError, ValueError, KeyError):
        classes = sorted(
            p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    rng = np.random.default_rng(seed)
    xtr, ytr, xte, yte = [], [], [], []
    for ci, name in enumerate(classes):
        files = sorted((data_dir / name).glob("*.png"))
        if len(files) < 2:
            raise ValueError(f"class {name!r} in {data_dir} needs at least 2 images")
        feats = [_hist_features(cv2.imread(str(f), cv2.IMREAD_COLOR)) for f in files]
        order = rng.permutation(len(files))
        ntr = min(len(files) - 1, max(1, round(0.7 * len(files))))
        for j, idx in enumerate(order):
            (xtr if j < ntr else xte).append(feats[idx])
            (ytr if j < ntr else yte).append(ci)
    xa, xb = np.array(xtr), np.array(xte)
    ya, yb = np.array(ytr), np.array(yte)
    mu, sd = xa.mean(axis=0), xa.std(axis=0) + 1e-8
    xa, xb = (xa - mu) / sd, (xb - mu) / sd
    k = len(classes)
    cent = np.stack([xa[ya == c].mean(axis=0) for c in range(k)])
    pred_nc = np.argmin(((xb[:, None, :] - cent[None]) ** 2).sum(axis=2), axis=1)
    wts = _softmax_regression(xa, ya, k)
    pred_lr = np.argmax(np.hstack([xb, np.ones((len(xb), 1))]) @ wts, axis=1)
    return float(max((pred_nc == yb).mean(), (pred_lr == yb).mean()))


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m indvision.synth KIND OUT_DIR [--seed N] [--per-class N]``."""
    ap = argparse.ArgumentParser(
        prog="python -m indvision.synth",
        description="Generate a deterministic synthetic image set.",
    )
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument(
        "--baseline", action="store_true", help="also print the colour-histogram baseline accuracy"
    )
    args = ap.parse_args(argv)
    out = generate(args.kind, args.out_dir, seed=args.seed, per_class=args.per_class)
    print(out)
    if args.baseline:
        acc = histogram_baseline_accuracy(out, seed=args.seed)
        print(f"histogram baseline accuracy: {acc:.3f} (chance {1 / len(KINDS[args.kind]):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
