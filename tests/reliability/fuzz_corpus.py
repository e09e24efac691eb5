"""A fuzz corpus of every image format this OpenCV writes, made on the fly (nothing binary is
committed), and the child processes that feed it to ``images.decode`` / ``read_image`` and to
``POST /predict``, each reporting its own peak memory.

Each format is one row of :data:`FORMATS`: how to write a small valid image, and where its
width and height live in the written bytes (:func:`sized` rewrites them). From a valid file
come the variants (:func:`variants`): a bomb (the header claims :data:`BOMB_SIDE` squared
pixels — 400 MP, 1.2 GB as RGB, over every limit), truncations, forged size fields (0,
negative, huge) and seeded bit flips.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

SIDE = 64  # the valid images (JPEG 2000 needs more than 32 px for its default resolutions)
BOMB_SIDE = 20_000  # 400 MP claimed: over images.MAX_PIXELS, 1.2 GB once decoded to RGB
HUGE = 0xFFFF_FFFF  # all ones in a 32-bit field (-1 as int32, 4 G unsigned)
FORGED = {"0x0": (0, 0), "neg": (-1, -1), "huge": (HUGE, HUGE), "1xbig": (1, 0x7FFF_FFFF)}
CUTS = (1, 8, 20, 0.5, -1)  # bytes kept: counts, a fraction of the file, all but the last
FLIPS = 6  # bit-flipped copies per format
FLIP_SEED = 37
MB = 1024 * 1024

Writer = Callable[[bytes, int, int], bytes]


def _bits(value: int, bits: int) -> int:
    """``value`` as a ``bits``-wide field holds it (negative numbers wrap, huge ones are cut)."""
    return value & ((1 << bits) - 1)


def _put(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    bits = 8 * struct.calcsize(fmt[1])
    packed = struct.pack(fmt, *(_bits(v, bits) for v in values))
    return data[:offset] + packed + data[offset + len(packed):]


def _png(data: bytes, w: int, h: int) -> bytes:
    out = _put(data, 16, ">II", w, h)
    return _put(out, 29, ">I", zlib.crc32(out[12:29]))  # a valid CRC: libpng checks it


def _jpeg(data: bytes, w: int, h: int) -> bytes:
    sof = re.search(rb"\xff[\xc0-\xc2]", data[2:]).start() + 2
    return _put(data, sof + 5, ">HH", h, w)


def _bmp(data: bytes, w: int, h: int) -> bytes:
    return _put(data, 18, "<II", w, h)


def _tiff(data: bytes, w: int, h: int) -> bytes:
    """ImageWidth (256) and ImageLength (257) rewritten as LONG fields of the first IFD."""
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd:ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        (tag,) = struct.unpack("<H", data[entry:entry + 2])
        if tag in (256, 257):
            data = _put(data, entry + 2, "<HI", 4, 1)
            data = _put(data, entry + 8, "<I", w if tag == 256 else h)
    return data


def _webp(data: bytes, w: int, h: int) -> bytes:
    """The VP8L (lossless, as OpenCV writes at its default quality) 14-bit width-1/height-1."""
    assert data[12:16] == b"VP8L" and data[20] == 0x2F, data[:24]
    (bits,) = struct.unpack("<I", data[21:25])
    bits = (bits & ~0x0FFF_FFFF) | _bits(w - 1, 14) | (_bits(h - 1, 14) << 14)
    return _put(data, 21, "<I", bits)


def _text(pattern: bytes, template: str) -> Writer:
    """A text header (PNM, PAM, PFM, HDR): the first match of ``pattern`` rewritten."""
    def write(data: bytes, w: int, h: int) -> bytes:
        return re.sub(pattern, template.format(w=w, h=h).encode(), data, count=1)
    return write


def _jp2(data: bytes, w: int, h: int) -> bytes:
    """The jp2h ``ihdr`` box and the codestream's SIZ (image and tile size)."""
    ihdr = data.index(b"ihdr") + 4
    data = _put(data, ihdr, ">II", h, w)
    siz = data.index(b"\xff\x51") + 6
    return _put(_put(data, siz, ">II", w, h), siz + 16, ">II", w, h)


def _sun(data: bytes, w: int, h: int) -> bytes:
    return _put(data, 4, ">II", w, h)


def _avif(data: bytes, w: int, h: int) -> bytes:
    """The ``ispe`` property; the AV1 sequence header keeps its own (bit-packed) size."""
    return _put(data, data.index(b"ispe") + 8, ">II", w, h)


def _gif(data: bytes, w: int, h: int) -> bytes:
    """The logical screen and the first image descriptor."""
    data = _put(data, 6, "<HH", w, h)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # extensions: label, then sub-blocks up to a 0 length
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C, data[pos]
    return _put(data, pos + 5, "<HH", w, h)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A smooth BGR picture with some noise (compresses like a photo, not like a flat fill)."""
    ramp = np.linspace(0, 200, SIDE, dtype=np.float32)
    base = np.dstack([ramp[None, :].repeat(SIDE, 0), ramp[:, None].repeat(SIDE, 1),
                      np.full((SIDE, SIDE), 90, np.float32)])
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _gray(rng: np.random.Generator) -> np.ndarray:
    return _colour(rng)[..., 1]


def _float(rng: np.random.Generator) -> np.ndarray:
    return _colour(rng).astype(np.float32) / 255


PNM = _text(rb"^(P[1-6])\s+\d+\s+\d+", r"\1\n{w} {h}")
#: extension → (picture to write, where its size lives, largest side its fields hold)
FORMATS: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], Writer, int]] = {
    ".png": (_colour, _png, BOMB_SIDE),
    ".jpg": (_colour, _jpeg, BOMB_SIDE),
    ".bmp": (_colour, _bmp, BOMB_SIDE),
    ".tif": (_colour, _tiff, BOMB_SIDE),
    ".webp": (_colour, _webp, 16_384),  # 14-bit fields: 268 MP is the largest claim
    ".ppm": (_colour, PNM, BOMB_SIDE),
    ".pgm": (_gray, PNM, BOMB_SIDE),
    ".pbm": (_gray, PNM, BOMB_SIDE),
    ".pam": (_colour, _text(rb"WIDTH \d+\nHEIGHT \d+", "WIDTH {w}\nHEIGHT {h}"), BOMB_SIDE),
    ".pfm": (_float, _text(rb"^PF\n\d+ \d+", "PF\n{w} {h}"), BOMB_SIDE),
    ".hdr": (_float, _text(rb"-Y \d+ \+X \d+", "-Y {h} +X {w}"), BOMB_SIDE),
    ".jp2": (_colour, _jp2, BOMB_SIDE),
    ".sr": (_colour, _sun, BOMB_SIDE),
    ".ras": (_colour, _sun, BOMB_SIDE),
    ".exr": (_float, lambda data, w, h: data, BOMB_SIDE),  # kept only where OpenCV writes it
    ".avif": (_colour, _avif, BOMB_SIDE),
    ".gif": (_colour, _gif, BOMB_SIDE),
}


def encode(ext: str) -> bytes | None:
    """A valid small image in ``ext``, or None where this OpenCV build cannot write it."""
    picture = FORMATS[ext][0](np.random.default_rng(len(ext)))
    try:
        written, buffer = cv2.imencode(ext, picture)
    except cv2.error:
        return None
    return buffer.tobytes() if written and len(buffer) else None


def writable_formats() -> dict[str, bytes]:
    """Extension → a valid small file, for each format this build writes."""
    found = {ext: encode(ext) for ext in FORMATS}
    return {ext: data for ext, data in found.items() if data is not None}


def flipped(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with 1 to 8 bits flipped at random positions (the first bytes excluded half of
    the time, so that most copies still look like their format)."""
    out = bytearray(data)
    start = 0 if rng.random() < 0.5 else min(16, len(out) - 1)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(start, len(out)))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def variants(ext: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``(kind, bytes)``: valid, bomb, cut-N, forged-*, flip-N (seeded, deterministic)."""
    writer, bomb_side = FORMATS[ext][1], FORMATS[ext][2]
    yield "valid", data
    yield "bomb", writer(data, bomb_side, bomb_side)
    for cut in CUTS:
        keep = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
        yield f"cut-{keep}", data[:keep]
    for name, (w, h) in FORGED.items():
        yield f"forged-{name}", writer(data, w, h)
    rng = np.random.default_rng([FLIP_SEED, sum(ext.encode())])
    for n in range(FLIPS):
        yield f"flip-{n}", flipped(data, rng)


def write_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """Every variant of every writable format as ``<format>-<kind><ext>`` in ``folder``;
    returns file name → (extension, kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for ext, data in writable_formats().items():
        for kind, content in variants(ext, data):
            name = f"{ext[1:]}-{kind}{ext}"
            (folder / name).write_bytes(content)
            made[name] = (ext, kind)
    return made


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB since :func:`reset_peak`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _outcome(call: Callable[..., np.ndarray], *args: object) -> list:
    from indvision.images import ImageError

    try:
        image = call(*args)
    except ImageError as exc:
        return ["error", exc.reason, str(exc)]
    except Exception as exc:  # what the test is looking for: any other exception
        return ["crash", type(exc).__name__, str(exc)[:300]]
    return ["ok", list(image.shape), str(image.dtype)]


def decode_child(folder: str) -> None:
    """Child process: each file through ``decode`` and ``read_image``, one JSON line each,
    with that file's peak memory. This module loads cv2 before indvision: where the caller
    removed ``OPENCV_IO_MAX_IMAGE_PIXELS``, OpenCV runs without its own pixel wall."""
    from indvision import images

    for path in sorted(Path(folder).iterdir()):
        per_file = reset_peak()
        data = path.read_bytes()
        row = {"name": path.name, "per_file": per_file,
               "decode": _outcome(images.decode, data, path.name),
               "read_image": _outcome(images.read_image, path),
               "peak_mb": round(peak_mb(), 1)}
        print(json.dumps(row), flush=True)


def service_child(bundle: str, folder: str) -> None:
    """Child process: each file posted alone as a multipart ``POST /predict`` to the service
    on ``bundle``; one JSON line each (status, JSON answer or the text, peak memory)."""
    from fastapi.testclient import TestClient

    from indvision.edge import EdgeClassifier
    from indvision.edge.hotswap import ModelSlot
    from indvision.edge.service import create_app

    app = create_app(ModelSlot(lambda: EdgeClassifier(bundle)))
    client = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    for path in sorted(Path(folder).iterdir()):
        per_file = reset_peak()
        got = client.post("/predict", files=[("files", (path.name, path.read_bytes(),
                                                        "application/octet-stream"))])
        try:
            answer = got.json()
        except ValueError:
            answer = {"not_json": got.text[:300]}
        print(json.dumps({"name": path.name, "status": got.status_code, "answer": answer,
                          "per_file": per_file, "peak_mb": round(peak_mb(), 1)}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    {"decode": decode_child, "service": service_child}[sys.argv[1]](*sys.argv[2:])
