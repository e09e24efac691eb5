"""A small file claiming a huge image, of every decodable format, is refused in one line and
the process never holds more than a bounded amount of memory. Each file is read in a child
process whose peak RSS (VmHWM) is measured; OpenCV's own pixel wall is lifted there, so the
header check alone must hold, and its address space is capped (:data:`SAFETY_AS_BYTES`) so that
a decoder let through cannot take the shared machine's memory."""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from indvision import image_headers, images
from tests.test_image_headers import (
    DEEP_H,
    DEEP_W,
    HUGE,
    deflate_zeros,
    forged,
    grey_tiff_page,
    tiff,
)

PEAK_LIMIT = 1 << 30  # 1 GiB; a 20000 x 20000 TIFF decoded took 2.4 GB
SAFETY_AS_BYTES = 4 << 30  # the child's address-space cap, well above every bound here
CHILD = """
import sys
from indvision import images
try:
    images.read_image(sys.argv[1])
    print("decoded")
except images.ImageError as exc:
    print(exc)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM:")))
"""


def tiff_bomb() -> bytes:
    """A real 20000 x 20000 grey TIFF, one deflated strip of zeros: about 400 kB on disk."""
    blob = deflate_zeros(HUGE * HUGE)
    return tiff([grey_tiff_page(HUGE, HUGE, blob, deflate=True)], [blob])


def huge_tile_tiff() -> bytes:
    """A 16 x 16 TIFF whose one deflated tile is 16384 x 16384 (268 MB)."""
    blob = deflate_zeros(16384 * 16384)
    return tiff([grey_tiff_page(16, 16, blob, deflate=True, tile=(16384, 16384))], [blob])


BOMBS = {f"forged {fmt.name}": (lambda fmt=fmt: forged(fmt), f"{HUGE}x{HUGE}")
         for fmt in image_headers.FORMATS}
BOMBS["deflated TIFF"] = (tiff_bomb, f"{HUGE}x{HUGE}")
BOMBS["TIFF tile"] = (huge_tile_tiff, "16384x16384")


def peak_of_reading(path: Path) -> tuple[str, int]:
    """``images.read_image`` in a child: its one line of output and its peak RSS in bytes."""
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS=str(10**12))  # only our wall stands
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (SAFETY_AS_BYTES, SAFETY_AS_BYTES))

    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env,
                            capture_output=True, text=True, timeout=300, check=False,
                            preexec_fn=cap)
    assert result.returncode == 0, result.stderr
    line, peak = result.stdout.strip().splitlines()
    return line, int(peak)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_small_file_claiming_a_huge_image_is_refused_in_bounded_memory(
        name: str, tmp_path: Path) -> None:
    make, claimed = BOMBS[name]
    path = tmp_path / "bomb.img"
    path.write_bytes(make())
    assert path.stat().st_size < 2_000_000
    line, peak = peak_of_reading(path)
    assert line == (f"{path}: header claims {claimed} pixels, "
                    f"over the limit of {images.MAX_PIXELS}")
    assert peak < PEAK_LIMIT, f"{name}: peak RSS {peak / 1e6:.0f} MB"


def deep_tiff() -> bytes:
    """A real 10000 x 9000 RGBA 16-bit TIFF (90 MP, under the pixel limit; 720 MB at its own
    depth), one deflated strip of zeros: about 700 kB on disk."""
    blob = deflate_zeros(DEEP_W * DEEP_H * 4 * 2)
    tags = {256: DEEP_W, 257: DEEP_H, 258: 16, 259: 8, 262: 2, 277: 4, 338: 2,  # 338: alpha
            273: 0, 278: DEEP_H, 279: len(blob)}
    return tiff([tags], [blob])


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def deep_png() -> bytes:
    """A real 10000 x 9000 RGBA 16-bit PNG of zeros (valid CRCs): about 700 kB on disk."""
    packer, row = zlib.compressobj(9), bytes(1 + DEEP_W * 8)  # filter byte, 4 x 2 bytes a pixel
    pixels = b"".join(packer.compress(row) for _ in range(DEEP_H)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", DEEP_W, DEEP_H, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("make", [deep_tiff, deep_png], ids=["TIFF", "PNG"])
def test_a_deep_image_under_the_pixel_limit_is_refused_within_the_decoding_budget(
        make: object, tmp_path: Path) -> None:
    # before the byte budget this decoded: peak RSS 1.1 GB (TIFF), 575 MB (PNG)
    path = tmp_path / "deep.img"
    path.write_bytes(make())
    line, peak = peak_of_reading(path)
    budget = images.MAX_PIXELS * 4  # RGBA 8-bit at the pixel limit
    assert line == (f"{path}: header claims {DEEP_W}x{DEEP_H} pixels of 4 channels at 16 "
                    f"bits, over the decoding budget of {budget // 1_000_000} MB")
    assert peak < budget, f"peak RSS {peak / 1e6:.0f} MB"
