"""The ``defect`` kind: 128x128 grey metal-surface textures with six defect classes.

Brushed / ground steel (stored as 3-channel PNG) in the spirit of the NEU steel set. Defects
are multiplicative reflectance changes, so they stay visible under any lighting while the
lighting (drawn from the same ranges for every class) dominates the brightness statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from indvision.synth.drawing import (
    F32,
    ONE,
    SHIFT,
    blob,
    finish,
    fix,
    illumination,
    poly_mask,
    smooth_noise,
)
from indvision.synth.kinds import IMAGE_SIZES

_DW = 224  # working canvas; rotated/scaled down into the 128x128 output


def _metal_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-std brushed/ground steel reflectance texture (float32, n x n)."""
    k = int(rng.integers(9, 45))
    brushed = cv2.blur(rng.standard_normal((n, n), dtype=F32), (k, 1))
    brushed /= brushed.std() + 1e-6
    grain = cv2.GaussianBlur(rng.standard_normal((n, n), dtype=F32), (0, 0), rng.uniform(0.6, 1.6))
    grain /= grain.std() + 1e-6
    aniso = rng.uniform(0.2, 1.0)  # 1: strongly brushed, 0.2: mostly ground/isotropic grain
    tex = aniso * brushed + (1.0 - aniso) * grain
    # occasional straight grinding marks: wider faint bands along the brushing direction
    bands = cv2.resize(
        rng.standard_normal((n, 1)).astype(F32), (n, n), interpolation=cv2.INTER_LINEAR
    )
    tex += rng.uniform(0.0, 0.6) * bands
    return tex / (tex.std() + 1e-6)


def _defect_scratch(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-3 thin long roughly parallel lines, bright (often with dark halo) or dark."""
    c = n / 2
    layer = np.zeros((n, n), F32)
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
                tuple(int(v) for v in fix(pts[j])[0, 0]),
                tuple(int(v) for v in fix(pts[j + 1])[0, 0]),
                int(255 * prof[j]),
                thick,
                cv2.LINE_AA,
                SHIFT,
            )
        core = cv2.GaussianBlur(m.astype(F32) / 255.0, (0, 0), 0.7)
        amp = rng.uniform(0.45, 0.8)
        layer += sign * amp * core
        if sign > 0 and rng.random() < 0.6:  # dark groove next to a bright ridge
            halo = cv2.GaussianBlur(core, (0, 0), 2.0)
            layer -= rng.uniform(0.3, 0.6) * amp * halo
    return layer


def _defect_inclusion(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-4 small dark elongated blobs, aligned (rolled-in inclusions)."""
    c = n / 2
    layer = np.zeros((n, n), F32)
    ang = rng.uniform(0, np.pi)
    cx, cy = c + rng.uniform(-28, 28, 2)
    for _ in range(int(rng.integers(1, 5))):
        d = rng.uniform(-22, 22)
        e = rng.uniform(-10, 10)
        p = (cx + np.cos(ang) * d - np.sin(ang) * e, cy + np.sin(ang) * d + np.cos(ang) * e)
        length = rng.uniform(6, 17)
        width = rng.uniform(2.0, 4.5)
        poly = blob(
            rng, p, width, aspect=length / width, angle=ang + rng.normal(0, 0.15), jag=0.35, n=16
        )
        m = poly_mask((n, n), [poly], blur=1.0)
        layer -= rng.uniform(0.45, 0.8) * m
    return layer


def _defect_patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-3 large soft irregular regions of a different tone (mottled)."""
    c = n / 2
    layer = np.zeros((n, n), F32)
    sign = -1.0 if rng.random() < 0.8 else 1.0
    mott = np.clip(1.0 + 0.45 * smooth_noise(rng, (n, n), 18), 0.2, 2.0)
    for _ in range(int(rng.integers(1, 4))):
        p = c + rng.uniform(-35, 35, 2)
        poly = blob(
            rng,
            p,
            rng.uniform(16, 36),
            aspect=rng.uniform(0.6, 1.7),
            angle=rng.uniform(0, np.pi),
            jag=0.5,
            n=20,
        )
        m = poly_mask((n, n), [poly], blur=rng.uniform(2.0, 4.5))
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
    seeds = rng.uniform([x0, y0], [x1, y1], (k, 2)).astype(F32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(F32)
    warp = rng.uniform(3, 7)
    xx += warp * smooth_noise(rng, (h, w), 10)
    yy += warp * smooth_noise(rng, (h, w), 10)
    d = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    lab = np.argmin(d, axis=2)
    edge = np.zeros((h, w), F32)
    edge[:, 1:] += lab[:, 1:] != lab[:, :-1]
    edge[1:, :] += lab[1:, :] != lab[:-1, :]
    edge = np.minimum(edge, 1.0)
    edge = cv2.dilate(edge, np.ones((2, 2) if rng.random() < 0.6 else (3, 3), np.uint8))
    edge = cv2.GaussianBlur(edge, (0, 0), 0.6)
    # fade the network out towards the border of an elliptic region, and break it up a bit
    region = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    fade = np.clip(1.4 - region, 0.0, 1.0) * np.clip(
        0.8 + 0.5 * smooth_noise(rng, (h, w), 6), 0.0, 1.0
    )
    layer = np.zeros((n, n), F32)
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
        ctr = (int(px * ONE), int(py * ONE))
        rim_ctr = (int((px + 0.8) * ONE), int((py + 0.8) * ONE))
        cv2.circle(rim, rim_ctr, int(r * ONE), 255, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(dark, ctr, int(r * ONE), int(255 * v), -1, cv2.LINE_AA, SHIFT)
    d = cv2.GaussianBlur(dark.astype(F32) / 255.0, (0, 0), 0.7)
    r_ = cv2.GaussianBlur(rim.astype(F32) / 255.0, (0, 0), 0.7)
    return -rng.uniform(0.45, 0.75) * d + 0.15 * np.clip(r_ - d, 0.0, 1.0)


_DEFECT_DRAW: dict[str, Callable[[np.random.Generator, int], np.ndarray] | None] = {
    "ok": None,
    "scratch": _defect_scratch,
    "inclusion": _defect_inclusion,
    "patches": _defect_patches,
    "crazing": _defect_crazing,
    "pitted": _defect_pitted,
}


def render_defect(cls: str, rng: np.random.Generator) -> np.ndarray:
    """One metal-surface image (128x128x3 uint8, BGR) of class ``cls``.

    Model: intensity = illumination(x) * reflectance(x), reflectance = 1 + texture +
    defect. Defects are multiplicative, so they stay visible under any lighting while the
    lighting (shared ranges for all classes) dominates the brightness statistics.
    """
    n = _DW
    w, h = IMAGE_SIZES["defect"]
    refl = 1.0 + rng.uniform(0.03, 0.13) * _metal_texture(rng, n)
    refl += rng.uniform(0.0, 0.06) * smooth_noise(rng, (n, n), 4)  # gentle mottling
    draw = _DEFECT_DRAW[cls]
    if draw is not None:
        refl += draw(rng, n)
    # random rotation, scale and shift of the whole surface into the output frame
    scale = rng.uniform(0.85, 1.2)
    mat = cv2.getRotationMatrix2D((n / 2, n / 2), rng.uniform(0, 360), scale)
    mat[:, 2] += np.array([w / 2 - n / 2, h / 2 - n / 2]) + rng.uniform(-6, 6, 2)
    refl = cv2.warpAffine(refl, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light = rng.uniform(0.22, 0.8) * illumination(rng, h, w, grad=0.45, vign=0.5)
    img = (light * refl)[..., None] * (1.0 + rng.uniform(-0.04, 0.04, 3)).astype(F32)
    if rng.random() < 0.3:  # slight defocus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.8))
    return finish(rng, img, (0.006, 0.03))
