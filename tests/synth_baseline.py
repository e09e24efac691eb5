"""Colour-histogram baseline for the synthetic sets: proves the data needs shapes.

Test-only (moved out of ``indvision.synth``): if a classifier that sees only colour and
brightness statistics stays far below a small CNN, the classes differ by shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

_META_NAME = "synth.json"


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
