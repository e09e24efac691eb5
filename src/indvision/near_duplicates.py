"""Near-duplicates: images whose content nearly matches, found at ingest.

The same part under two labels teaches noise, and a near-copy on both sides of the train/test
border flatters the test split. Exact copies are :func:`indvision.dataset.dedupe`'s; this
module finds the near ones. Two images are near-duplicates when their 32×32 grey thumbnails
differ by at most :data:`MAX_MEAN_DIFF` on average *and* :data:`MAX_PIXEL_DIFF` at every pixel
(a small object on a fixed background differs little on average, a lot where it is).
Candidates come from a 64-bit perceptual hash: pairs within :data:`MAX_HASH_BITS` bits are
found by the pigeonhole principle (one more chunk than that; a close pair agrees on one chunk
exactly), then checked by the thumbnail rule. What it finds on the real sets:
docs/failure-behaviour.md. numpy and OpenCV only; pure functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np

THUMB = 32  # thumbnail side, pixels
MAX_MEAN_DIFF = 0.02 * 255  # the near-duplicate rule: mean |grey difference| per pixel ...
MAX_PIXEL_DIFF = 255 / 8  # ... and the largest one
MAX_HASH_BITS = 8  # candidate radius in perceptual-hash bits
RULE = (f"{THUMB}x{THUMB} grey thumbnails differ by at most {MAX_MEAN_DIFF:.1f} of 255 (2 %) "
        f"on average and {MAX_PIXEL_DIFF:.1f} (1/8) at any pixel; candidates within "
        f"{MAX_HASH_BITS} of 64 bits of a DCT perceptual hash")


def fingerprint(rgb: np.ndarray) -> tuple[int, np.ndarray]:
    """An image's perceptual hash (64-bit int) and its grey thumbnail (``THUMB²`` uint8)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    low = cv2.dct(thumb.astype(np.float32))[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big"), thumb.ravel()


def _chunks(bits: int) -> list[tuple[int, int]]:
    """(shift, width) of ``bits + 1`` disjoint chunks covering 64 bits."""
    count = bits + 1
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def near_pairs(hashes: Sequence[int], thumbs: np.ndarray,
               max_bits: int = MAX_HASH_BITS, max_mean_diff: float = MAX_MEAN_DIFF,
               max_pixel_diff: float = MAX_PIXEL_DIFF) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, mean difference)``, ``i < j``, that the rule calls near-duplicates."""
    candidates: set[tuple[int, int]] = set()
    for shift, width in _chunks(max_bits):
        buckets: dict[int, list[int]] = defaultdict(list)
        for index, value in enumerate(hashes):
            buckets[(value >> shift) & ((1 << width) - 1)].append(index)
        for members in buckets.values():
            candidates.update((a, b) for n, a in enumerate(members) for b in members[n + 1:])
    pairs = []
    for a, b in sorted(candidates):
        if bin(hashes[a] ^ hashes[b]).count("1") > max_bits:
            continue
        diff = np.abs(thumbs[a].astype(np.int16) - thumbs[b].astype(np.int16))
        if diff.mean() <= max_mean_diff and diff.max() <= max_pixel_diff:
            pairs.append((a, b, round(float(diff.mean()), 3)))
    return pairs
