"""A tree of every kind of bad (and odd but valid) input, made on the fly: nothing binary is
committed. Shared by the reliability tests."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import make_tree

HUGE = 30000


def png_bytes(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def huge_png_header() -> bytes:
    """A PNG whose header claims 30000 x 30000 pixels (2.7 GB decoded); no pixel data."""
    ihdr = struct.pack(">II", HUGE, HUGE) + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def huge_jpeg_header() -> bytes:
    """A real JPEG whose SOF0 frame header is patched to claim 30000 x 30000 pixels."""
    data = bytearray(jpeg_bytes(np.full((16, 16, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", HUGE, HUGE)
    return bytes(data)


def cmyk_jpeg() -> bytes | None:
    """A CMYK JPEG (as some scanners and print workflows write), via Pillow when installed."""
    try:
        from PIL import Image
    except ImportError:
        return None
    buffer = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 128, 128, 0)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


#: file name (relative to the tree) → why it must be rejected (a fragment of the reason)
BAD = {
    "ok/truncated.jpg": "truncated JPEG",
    "ok/zero.jpg": "empty file",
    "ok/text.jpg": "not a decodable image",
    "ok/one_pixel.png": "too small (1x1",
    "ok/huge_header.png": f"header claims {HUGE}x{HUGE} pixels",
    "ok/huge_header.jpg": f"header claims {HUGE}x{HUGE} pixels",
    "ok/dangling.png": "broken symbolic link",
    "ok/notes.txt": "not an image file extension",
}
#: odd but valid files that must be kept
ODD_GOOD = ("scratch/png_named.jpg", "scratch/deep16.png", "scratch/rgba.png",
            "spot/Prüf bild ✓ 01.png", "spot/cmyk.jpg")


def make_bad_tree(root: Path) -> Path:
    """A learnable 3-class tree plus every bad and odd file, an empty class folder and a
    symlink loop (a class folder holding a link to its parent)."""
    make_tree(root, per_class=8, size=40)
    noise = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    files = {
        "ok/truncated.jpg": jpeg_bytes(noise)[:300],
        "ok/zero.jpg": b"",
        "ok/text.jpg": b"this is a text file, not a photo\n",
        "ok/one_pixel.png": png_bytes(np.zeros((1, 1, 3), np.uint8)),
        "ok/huge_header.png": huge_png_header(),
        "ok/huge_header.jpg": huge_jpeg_header(),
        "ok/notes.txt": b"operator notes\n",
        "scratch/png_named.jpg": png_bytes(noise),
        "scratch/deep16.png": png_bytes(np.full((40, 40), 300 * 64, np.uint16)),
        "scratch/rgba.png": png_bytes(np.dstack([noise, np.full((40, 40), 9, np.uint8)])),
        "spot/Prüf bild ✓ 01.png": png_bytes(noise[::-1]),
    }
    cmyk = cmyk_jpeg()
    if cmyk is not None:
        files["spot/cmyk.jpg"] = cmyk
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.symlink(root / "ok" / "gone.png", root / "ok" / "dangling.png")
    os.symlink(root / "ok", root / "ok" / "loop")  # a folder link back to itself
    (root / "empty_class").mkdir()
    return root
