"""A small file claiming a huge image, of every decodable format, is refused in one line and
the process never holds more than a bounded amount of memory. Each file is read in a child
process whose peak RSS (VmHWM) is measured; OpenCV's own pixel wall is lifted there, so the
header check alone must hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from indvision import image_headers, images
from tests.test_image_headers import HUGE, deflate_zeros, forged, grey_tiff_page, tiff

PEAK_LIMIT = 1 << 30  # 1 GiB; a 20000 x 20000 TIFF decoded took 2.4 GB
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
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
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
