"""The ``parcel`` kind: 192x108 (16:9) colour frames of a cardboard box on a conveyor.

Four damage classes (intact, dented, torn, wet). The scene is drawn at 2x and
area-downsampled (anti-aliasing); lighting, box colour/size/pose, tape, label, print and
belt type come from class-independent ranges, so only the damage tells classes apart.
"""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np

from indvision.synth.drawing import (
    F32,
    blend,
    blob,
    finish,
    grid,
    illumination,
    line_mask,
    poly_mask,
    smooth_noise,
)
from indvision.synth.kinds import IMAGE_SIZES

_SS = 2  # supersampling factor for the parcel scene


def _belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Conveyor background: a rubber belt with cleats or a roller bed, plus side rails."""
    tint = (1.0 + rng.uniform(-0.12, 0.12, 3)).astype(F32)
    if rng.random() < 0.25:  # green or blue belt
        tint = np.array([[0.8, 1.15, 0.85], [1.2, 1.0, 0.8]][int(rng.integers(2))], F32)
    if rng.random() < 0.5:  # rubber belt with transverse cleats
        base = rng.uniform(0.12, 0.5)
        img = np.full((h, w), base, F32)
        img *= 1.0 + 0.05 * smooth_noise(rng, (h, w), 8)
        period = rng.uniform(26, 60)
        xs = np.arange(w, dtype=F32)
        phase = ((xs + rng.uniform(0, period)) % period) / period
        cleat = (phase < rng.uniform(0.06, 0.2)).astype(F32)
        img *= 1.0 + rng.uniform(-0.35, 0.35) * cv2.GaussianBlur(cleat[None, :], (0, 0), 1.0)
    else:  # roller bed: shaded cylinders with dark gaps
        period = rng.uniform(24, 48)
        xs = np.arange(w, dtype=F32)
        phase = ((xs + rng.uniform(0, period)) % period) / period
        shade = np.clip(np.sin(np.pi * np.clip(phase / 0.85, 0, 1)), 0, 1) ** 0.6
        img = np.tile(rng.uniform(0.25, 0.7) * (0.15 + 0.95 * shade)[None, :], (h, 1))
        img = cv2.GaussianBlur(img.astype(F32), (0, 0), 1.0)
    img *= 1.0 + 0.06 * rng.standard_normal((h, w), dtype=F32).clip(-2, 2) * rng.uniform(0.2, 1)
    out = img[..., None] * tint
    # side rails / guards at top and bottom
    rail = np.array([0.55, 0.6, 0.62], F32) * rng.uniform(0.7, 1.3)
    if rng.random() < 0.3:  # safety-yellow painted guard
        rail = np.array([0.1, 0.7, 0.85], F32) * rng.uniform(0.7, 1.1)
    for top in (True, False):
        th = int(rng.uniform(0, 0.14) * h)
        if th > 0:
            sl = slice(0, th) if top else slice(h - th, h)
            grad = np.linspace(0.8, 1.1, th, dtype=F32)[:, None, None]
            out[sl] = rail * (grad if top else grad[::-1])
    return out


def _box_colour(rng: np.random.Generator) -> np.ndarray:
    """Kraft-cardboard colour (BGR, float)."""
    base = np.array([0.38, 0.56, 0.72], F32)  # ~ RGB(184, 143, 97)
    base[0] *= rng.uniform(0.75, 1.2)
    base[2] *= rng.uniform(0.92, 1.08)
    return base * F32(rng.uniform(0.8, 1.15))


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
    cut, (p1, m, p2, q) = _dent_outline(rng, box, s)
    _dent_fold(rng, img, box, q, s, col)
    # the crushed part drops away: belt (and a bit of the side wall) shows through
    cut_all = cv2.convexHull(np.concatenate([cut, cut + side]).astype(F32)).reshape(-1, 2)
    blend(img, poly_mask(shape, [cut_all]), bg)
    blend(img, poly_mask(shape, [cut + side * 0.5]), col * 0.5)
    _crumpled_facet(rng, img, (p1, m, p2, q), s, col)


def _dent_outline(rng: np.random.Generator, box: _Box, s: float
                  ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The bite a dent takes out of the outline (corner or edge) and its points p1, m, p2
    along the cut and q, the innermost."""
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
    return cut, (p1, m, p2, q)


def _dent_fold(rng: np.random.Generator, img: np.ndarray, box: _Box, q: np.ndarray, s: float,
               col: np.ndarray) -> None:
    """A buckling crease from the dent's inner point into the face."""
    shape = img.shape[:2]
    # a buckling crease runs from the dent into the face: dark fold with a lit edge
    face = poly_mask(shape, [box.corners()])
    inward = (box.c - q) / (np.linalg.norm(box.c - q) + 1e-6)
    ca, sa = np.cos(rng.uniform(-0.5, 0.5)), np.sin(rng.uniform(-0.5, 0.5))
    dirv = np.array([ca * inward[0] - sa * inward[1], sa * inward[0] + ca * inward[1]])
    nrm = np.array([-dirv[1], dirv[0]]) * rng.choice([-1.0, 1.0])
    end = q + dirv * rng.uniform(0.7, 1.3) * s
    fold = np.array([q, end])
    blend(img, line_mask(shape, fold + nrm * 1.5, 2, blur=0.7) * face * 0.7, col * 1.3)
    blend(img, line_mask(shape, fold - nrm * 1.5, 2, blur=0.7) * face * 0.85, col * 0.35)


def _crumpled_facet(rng: np.random.Generator, img: np.ndarray,
                    points: tuple[np.ndarray, ...], s: float, col: np.ndarray) -> None:
    """The dent's facet between the cut (p1, m, p2) and its inner point q."""
    shape = img.shape[:2]
    p1, m, p2, q = points
    # crumpled facet: a fan of small folds from the inner point q to the cut line, lit
    # alternately dark and bright (crumpled board), unlike the flat, even side wall
    facet = np.array([p1, m, p2, q])
    fmask = poly_mask(shape, [facet], blur=0.6)
    blend(img, fmask, col * rng.uniform(0.4, 0.6))
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
        blend(img, poly_mask(shape, [tri]) * fmask, np.minimum(col * tone, 1.0))
        dark = not dark
    # creases: dark folds from the inner point, bright ridge along the fold line
    creases = [
        np.array([q + rng.uniform(-0.1, 0.1, 2) * s, m + (p - m) * rng.uniform(0.2, 0.8)])
        for p in (p1, p2)
        for _ in range(int(rng.integers(1, 3)))
    ]
    blend(img, line_mask(shape, creases, 2, blur=0.7) * fmask, col * 0.3)
    blend(
        img,
        line_mask(shape, np.array([p1, q, p2]), 2, blur=0.8) * 0.8,
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
    hole = blob(
        rng,
        ctr,
        r,
        aspect=rng.uniform(1.0, 1.8),
        angle=ang,
        jag=0.3,
        n=int(rng.integers(14, 22)),
        smooth=False,
    )
    hmask = poly_mask(shape, [hole])
    # interior: very dark, lit from one side
    yy, xx = grid(*shape)
    g = np.cos(ang) * xx + np.sin(ang) * yy
    dark = rng.uniform(0.1, 0.25) * (1.0 + 0.5 * np.clip(g * 3, -1, 1))
    blend(img, hmask, col * dark[..., None])
    # ragged bright fibre rim (torn plies of the corrugated board)
    blend(
        img,
        line_mask(shape, hole, 2, closed=True, blur=0.6) * 0.85,
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
    inner = np.array([0.62, 0.68, 0.72], F32) * rng.uniform(0.85, 1.1)  # greyish liner
    fl_col = 0.5 * col * 1.15 + 0.5 * inner
    blend(img, poly_mask(shape, [flap], blur=0.5), fl_col)
    blend(img, line_mask(shape, flap, 1, closed=True, blur=0.5) * 0.7, col * 0.4)


def _parcel_wet(rng: np.random.Generator, img: np.ndarray, box: _Box, face: np.ndarray) -> None:
    """1-3 darker, irregular water stains with a darker tide-line rim, on the cardboard."""
    shape = img.shape[:2]
    s = min(box.half)
    total = np.zeros(shape, F32)
    for j in range(int(rng.integers(1, 4))):
        ctr = box.pt(rng.uniform(-0.55, 0.55), rng.uniform(-0.45, 0.45))
        poly = blob(
            rng,
            ctr,
            rng.uniform(0.55, 0.9) * s if j == 0 else rng.uniform(0.35, 0.7) * s,
            aspect=rng.uniform(0.7, 1.5),
            angle=rng.uniform(0, np.pi),
            jag=0.5,
            n=22,
        )
        total = np.maximum(total, poly_mask(shape, [poly], blur=1.5))
    total *= face
    rim = np.clip(total - cv2.erode(total, np.ones((5, 5), np.uint8)), 0, 1)
    rim = cv2.GaussianBlur(rim, (0, 0), 1.0)
    f = rng.uniform(0.45, 0.66)
    mott = 1.0 + 0.1 * smooth_noise(rng, shape, 12)
    wet = img * (np.array([0.9, 0.97, 1.0], F32) * f) * mott[..., None]
    blend(img, total, wet)
    img *= (1.0 - rng.uniform(0.15, 0.3) * rim)[..., None]


def _pose(rng: np.random.Generator, W: int, H: int) -> tuple[_Box, np.ndarray]:
    """Box pose (long side along the belt-ish, random rotation, position) and side wall.

    The whole box (so any damage) must stay in frame: it is shrunk to fit, then placed.
    """
    long_ = rng.uniform(0.42, 0.6) * W
    short = min(rng.uniform(0.5, 0.8) * long_, rng.uniform(0.5, 0.7) * H)
    angle = np.deg2rad(rng.uniform(-35, 35))
    side = np.array([rng.uniform(-5, 5), rng.uniform(6, 16)]) * (_SS / 2)  # visible side wall
    ca, sa = abs(np.cos(angle)), abs(np.sin(angle))
    ext = np.array([long_ * ca + short * sa + abs(side[0]), long_ * sa + short * ca + side[1]])
    fit = min(1.0, *(np.array([W, H]) * 0.94 / ext))
    long_, short, ext = long_ * fit, short * fit, ext * fit
    room = np.maximum(np.array([W, H]) - ext, 0.0) / 2 * 0.9
    jitter = np.minimum(room, np.array([0.15 * W, 0.12 * H]))
    center = np.array([W, H]) / 2 + rng.uniform(-1.0, 1.0, 2) * jitter
    center[1] -= side[1] / 2
    return _Box(center, np.array([long_ / 2, short / 2]), angle), side


def _box_body(
    rng: np.random.Generator, img: np.ndarray, box: _Box, side: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shadow, side walls and textured top face; returns (belt before the box, colour, face)."""
    shape = img.shape[:2]
    corners = box.corners()
    # shadow on the belt
    sh = cv2.convexHull(np.concatenate([corners, corners + side * 1.8 + [4, 3]]).astype(F32))
    blend(
        img,
        poly_mask(shape, [sh.reshape(-1, 2)], blur=6.0) * rng.uniform(0.3, 0.6),
        np.zeros(3, F32),
    )
    bg = img.copy()
    col = _box_colour(rng)
    hull = cv2.convexHull(np.concatenate([corners, corners + side]).astype(F32)).reshape(-1, 2)
    blend(img, poly_mask(shape, [hull]), col * rng.uniform(0.55, 0.75))
    face = poly_mask(shape, [corners])
    tex = (
        1.0 + 0.035 * smooth_noise(rng, shape, 10) + 0.025 * rng.standard_normal(shape, dtype=F32)
    )
    blend(img, face, col * tex[..., None])
    return bg, col, face


def _tape(rng: np.random.Generator, img: np.ndarray, box: _Box, col: np.ndarray) -> float:
    """Flap seam along the long axis and tape over it (clear/brown/white); returns its width."""
    shape = img.shape[:2]
    blend(
        img,
        line_mask(shape, box.pt(np.array([-1.0, 1.0]), np.zeros(2)), 1, blur=0.5) * 0.6,
        col * 0.55,
    )
    tape_col = [
        col * np.array([0.8, 0.9, 1.05], F32) * 0.9,
        np.minimum(col * 1.15 + 0.05, 1.0),
        np.array([0.85, 0.86, 0.86], F32),
    ][int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
    tw = rng.uniform(0.14, 0.26)
    tape = box.pt(np.array([-1.0, 1.0, 1.0, -1.0]), np.array([-tw, -tw, tw, tw]))
    blend(img, poly_mask(shape, [tape]) * 0.92, tape_col)
    if rng.random() < 0.25:  # cross tape
        tape2 = box.pt(
            np.array([-tw, tw, tw, -tw]) * box.half[1] / box.half[0],
            np.array([-1.0, -1.0, 1.0, 1.0]),
        )
        blend(img, poly_mask(shape, [tape2]) * 0.92, tape_col)
    return tw


def _label(rng: np.random.Generator, img: np.ndarray, box: _Box, tw: float) -> None:
    """Shipping label with barcode and text lines, beside the tape of width ``tw``."""
    shape = img.shape[:2]
    lu, lv = rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.4)
    cu = rng.choice([-1, 1]) * rng.uniform(0.3, 1 - lu - 0.05)
    cv_ = rng.choice([-1, 1]) * rng.uniform(tw + lv + 0.05, max(tw + lv + 0.06, 1 - lv - 0.02))
    cv_ = float(np.clip(cv_, -(1 - lv - 0.02), 1 - lv - 0.02))
    lab = box.pt(cu + np.array([-lu, lu, lu, -lu]), cv_ + np.array([-lv, -lv, lv, lv]))
    blend(img, poly_mask(shape, [lab]), np.full(3, rng.uniform(0.8, 0.97), F32))
    bars = [
        box.pt(cu + bu * lu + np.zeros(2), cv_ + np.array([-0.6, 0.1]) * lv)
        for bu in rng.uniform(-0.8, 0.8, int(rng.integers(10, 18)))
    ]
    blend(img, line_mask(shape, bars, 1) * 0.9, np.full(3, 0.1, F32))
    text = [
        box.pt(cu + np.array([-0.8, rng.uniform(0.0, 0.8)]) * lu, cv_ + tl * lv)
        for tl in np.linspace(0.3, 0.75, int(rng.integers(2, 4)))
    ]
    blend(img, line_mask(shape, text, 1) * 0.7, np.full(3, 0.2, F32))


def _markings(
    rng: np.random.Generator, img: np.ndarray, box: _Box, col: np.ndarray, face: np.ndarray,
    tw: float,
) -> None:
    """Printed markings straight on the cardboard (all classes: dark pixels on the box)."""
    pu, pv = rng.uniform(-0.7, 0.7), rng.choice([-1, 1]) * rng.uniform(tw + 0.15, 0.75)
    marks = [
        box.pt(pu + np.array([-0.2, rng.uniform(0.0, 0.2)]), pv + 0.12 * j)
        for j in range(int(rng.integers(2, 5)))
    ]
    blend(img, line_mask(img.shape[:2], marks, 2) * face * 0.8, col * 0.25)


def render_parcel(cls: str, rng: np.random.Generator) -> np.ndarray:
    """One conveyor frame (108x192x3 uint8, BGR) of class ``cls``.

    Drawn at 2x and area-downsampled (anti-aliasing); lighting, box colour/size/pose,
    tape, label, print and belt type are drawn from class-independent ranges. The order
    of the random draws is part of the output: keep it (or bump GENERATOR_VERSION).
    """
    w, h = IMAGE_SIZES["parcel"]
    H, W = h * _SS, w * _SS
    img = _belt(rng, H, W)
    box, side = _pose(rng, W, H)
    bg, col, face = _box_body(rng, img, box, side)
    tw = _tape(rng, img, box, col)
    if rng.random() < 0.6:
        _label(rng, img, box, tw)
    if rng.random() < 0.35:
        _markings(rng, img, box, col, face, tw)
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
    light = rng.uniform(0.5, 1.35) * illumination(rng, h, w, grad=0.5, vign=0.6)
    img = img * light[..., None] * (1.0 + rng.uniform(-0.1, 0.1, 3)).astype(F32)
    return finish(rng, img, (0.006, 0.035))
