"""The header readers: each reads what OpenCV decodes, resists forged and cut headers, and
drives ``images.decode``'s whitelist. Samples are written by OpenCV or built here, on the fly."""

from __future__ import annotations

import re
import struct
import zlib

import cv2
import numpy as np
import pytest

from indvision import image_headers, images

W, H = 80, 64  # every sample's size
HUGE = 20000


def sample(fmt: image_headers.Format, params: tuple[int, ...] = ()) -> bytes:
    """An ``W x H`` image of that format as OpenCV writes it (the codestream of a JP2)."""
    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    if fmt.name in ("PFM", "Radiance HDR"):
        pixels = pixels.astype(np.float32) / 255
    data = cv2.imencode(fmt.extension or ".jp2", pixels, list(params))[1].tobytes()
    return data[data.index(b"jp2c") + 4:] if fmt.extension is None else data


def tiff(pages: list[dict[int, int]], blobs: list[bytes], order: str = "<",
         big: bool = False) -> bytes:
    """A TIFF with one IFD per page (SHORT/LONG values inline, LONG8 in a BigTIFF); tags 273
    and 324 (strip/tile offsets) are pointed at that page's blob."""
    word, entry = ("Q", 20) if big else ("I", 12)
    out = bytearray(b"II" if order == "<" else b"MM")
    out += struct.pack(order + "HHHQ", 43, 8, 0, 16) if big else struct.pack(order + "HI", 42, 8)
    for k, (tags, blob) in enumerate(zip(pages, blobs, strict=True)):
        data_at = len(out) + (8 if big else 2) + entry * len(tags) + (8 if big else 4)
        out += struct.pack(order + ("Q" if big else "H"), len(tags))
        for tag in sorted(tags):
            value = data_at if tag in (273, 324) else tags[tag]
            kind = 16 if big else (3 if value < 65536 and tag not in (273, 279, 324, 325) else 4)
            out += struct.pack(order + "HH" + word, tag, kind, 1)
            out += struct.pack(order + {3: "H", 4: "I", 16: "Q"}[kind], value).ljust(
                8 if big else 4, b"\0")
        last = k == len(pages) - 1
        out += struct.pack(order + word, 0 if last else data_at + len(blob))
        out += blob
    return bytes(out)


def grey_tiff_page(width: int, height: int, blob: bytes, deflate: bool = False,
                   tile: tuple[int, int] | None = None) -> dict[int, int]:
    tags = {256: width, 257: height, 258: 8, 259: 8 if deflate else 1, 262: 1, 277: 1}
    if tile:
        tags |= {322: tile[0], 323: tile[1], 324: 0, 325: len(blob)}
    else:
        tags |= {273: 0, 278: height, 279: len(blob)}
    return tags


def deflate_zeros(size: int) -> bytes:
    """``size`` zero bytes, deflated in chunks: a bomb made without holding it."""
    packer, chunk = zlib.compressobj(9), bytes(1 << 20)
    parts = [packer.compress(chunk[: size - k]) for k in range(0, size, len(chunk))]
    return b"".join(parts) + packer.flush()


def _patch(data: bytes, at: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def _tiff_sizes_patched(data: bytes, width: int, height: int) -> bytes:
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", data, at)
        if tag in (256, 257):
            value = width if tag == 256 else height
            data = _patch(data, at + 8, "<H" if kind == 3 else "<I", value)
    return data


def _vp8x(width: int, height: int, inner: bytes) -> bytes:
    """A VP8X chunk claiming that canvas in front of a VP8L/VP8 file's first chunk."""
    chunk = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + chunk + inner[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _jp2_siz(data: bytes, width: int, height: int) -> bytes:
    siz = data.index(b"\xff\x4f\xff\x51")
    return _patch(data, siz + 8, ">IIII", width, height, 0, 0)


def _avif_ispe(data: bytes, width: int, height: int) -> bytes:
    return _patch(data, data.index(b"ispe") + 8, ">II", width, height)


def _text(pattern: bytes, replacement: bytes) -> object:
    return lambda data, w, h: re.sub(pattern, replacement % (w, h), data, count=1)


FORGERS = {  # format → (OpenCV-written sample, width, height) → a header claiming that size
    "PNG": lambda d, w, h: _patch(d, 16, ">II", w, h),
    "JPEG": lambda d, w, h: _patch(d, d.index(b"\xff\xc0") + 5, ">HH", h, w),
    "BMP": lambda d, w, h: _patch(d, 18, "<ii", w, -h),
    "TIFF": _tiff_sizes_patched,
    "WebP": lambda d, w, h: _vp8x(w, h, d),
    "PNM": _text(rb"P6\n\d+ \d+\n", b"P6\n# forged\n%d %d\n"),
    "PAM": lambda d, w, h: d.replace(b"WIDTH 80\nHEIGHT 64", b"WIDTH %d\nHEIGHT %d" % (w, h)),
    "PFM": _text(rb"PF\n\d+ \d+\n", b"PF\n%d %d\n"),
    "Radiance HDR": _text(rb"\n-Y \d+ \+X \d+\n", b"\n-Y %d +X %d\n"),
    "JPEG 2000": _jp2_siz,  # the codestream lies; the ihdr box still says 80x64
    "JPEG 2000 codestream": _jp2_siz,
    "GIF": lambda d, w, h: _patch(d, 6, "<HH", w, h),
    "Sun raster": lambda d, w, h: _patch(d, 4, ">II", w, h),
    "AVIF": _avif_ispe,
}


def forged(fmt: image_headers.Format, width: int = HUGE, height: int = HUGE) -> bytes:
    """An OpenCV-written sample of that format whose header claims ``width x height``."""
    data = FORGERS[fmt.name](sample(fmt), width, height)
    assert data != sample(fmt), fmt.name
    return data


FORMATS = pytest.mark.parametrize("fmt", image_headers.FORMATS, ids=lambda f: f.name)


@FORMATS
def test_every_format_in_the_table_reads_the_size_opencv_decodes(
        fmt: image_headers.Format) -> None:
    data = sample(fmt)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (H, W)
    assert image_headers.identify(data) == fmt
    assert images.header_size(data) == (W, H)
    assert images.decode(data, "x").shape == (H, W, 3)


@FORMATS
def test_a_forged_header_of_every_format_is_refused_before_decoding(
        fmt: image_headers.Format) -> None:
    data = forged(fmt)
    with pytest.raises(images.ImageError, match=f"x.{fmt.name}: header claims "
                       f"{HUGE}x{HUGE} pixels, over the limit of {images.MAX_PIXELS}$"):
        images.decode(data, f"x.{fmt.name}")
    assert set(FORGERS) == {f.name for f in image_headers.FORMATS}  # no format untested


@pytest.mark.parametrize(("ext", "params", "channels"), [
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 3),  # SOF2
    (".jpg", (), 1),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), 3),  # lossy: VP8
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), 4),  # lossless with alpha: VP8L
    (".pbm", (), 1), (".pgm", (), 1), (".pnm", (), 3),
    (".tif", (cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_DEFLATE), 1),
    (".png", (cv2.IMWRITE_PNG_COMPRESSION, 9), 4),
    (".pfm", (), 1),
])
def test_format_variants_read_their_size(ext: str, params: tuple[int, ...],
                                         channels: int) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (H, W, channels), dtype=np.uint8)
    pixels = pixels.astype(np.float32) / 255 if ext == ".pfm" else pixels
    data = cv2.imencode(ext, pixels[..., 0] if channels == 1 else pixels, list(params))[1]
    assert images.header_size(data.tobytes()) == (W, H)
    assert images.decode(data.tobytes()).shape == (H, W, 3)


def test_vp8x_webp_reads_the_canvas() -> None:
    fmt = image_headers.identify(b"RIFF\0\0\0\0WEBP")
    data = _vp8x(W, H, sample(fmt))
    assert images.header_size(data) == (W, H)
    assert images.decode(data).shape == (H, W, 3)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True])
def test_tiff_byte_orders_and_bigtiff(order: str, big: bool) -> None:
    blob = bytes(range(W)) * H
    data = tiff([grey_tiff_page(W, H, blob)], [blob], order, big)
    assert images.header_size(data) == (W, H)
    assert images.decode(data).shape == (H, W, 3)
    big_one = tiff([grey_tiff_page(HUGE, HUGE, blob)], [blob], order, big)
    with pytest.raises(images.ImageError, match=f"{HUGE}x{HUGE} pixels"):
        images.decode(big_one)


def test_tiff_tile_and_later_page_sizes_count_too() -> None:
    blob = bytes(W * H)
    tiled = tiff([grey_tiff_page(W, H, bytes(16 * 16), tile=(16, 16))], [bytes(16 * 16)])
    assert images.header_size(tiled) == (W, H)
    huge_tile = tiff([grey_tiff_page(16, 16, blob, tile=(16384, 16384))], [blob])
    with pytest.raises(images.ImageError, match="header claims 16384x16384 pixels"):
        images.decode(huge_tile)
    pages = tiff([grey_tiff_page(W, H, blob), grey_tiff_page(HUGE, HUGE, blob)], [blob, blob])
    assert images.header_size(pages) == (W, H)  # what is decoded: the first page
    with pytest.raises(images.ImageError, match=f"header claims {HUGE}x{HUGE} pixels"):
        images.decode(pages)


def test_tiff_without_its_size_or_with_a_looping_ifd_chain_is_refused() -> None:
    blob = bytes(W * H)
    tags = grey_tiff_page(W, H, blob)
    del tags[257]
    with pytest.raises(images.ImageError, match="TIFF header does not say the image size"):
        images.decode(tiff([tags], [blob]))
    looped = bytearray(tiff([grey_tiff_page(W, H, blob)], [blob]))
    struct.pack_into("<I", looped, 8 + 2 + 12 * 9, 8)  # next IFD: the first one again
    assert images.header_size(bytes(looped)) == (W, H)


def test_gif_frames_outside_the_screen_count() -> None:
    fmt = image_headers.identify(b"GIF89a")
    data = sample(fmt)
    frame = data.index(b"\x2c\x00\x00\x00\x00")
    wide = _patch(data, frame + 5, "<HH", HUGE, HUGE)  # screen 80x64, first frame 20000^2
    assert images.header_size(wide) == (W, H)
    with pytest.raises(images.ImageError, match=f"header claims {HUGE}x{HUGE} pixels"):
        images.decode(wide)


def test_jp2_whose_ihdr_is_small_but_codestream_huge_is_refused() -> None:
    fmt = image_headers.identify(b"\0\0\0\x0cjP  \r\n\x87\n")
    data = _jp2_siz(sample(fmt), HUGE, HUGE)
    assert re.search(rb"ihdr\0\0\0\x40\0\0\0\x50", data)  # ihdr still says 80 x 64
    with pytest.raises(images.ImageError, match=f"{HUGE}x{HUGE} pixels"):
        images.decode(data)


def test_radiance_reads_the_line_after_the_first_blank_line_only() -> None:
    fmt = image_headers.identify(b"#?RADIANCE\n")
    data = sample(fmt)
    bad = data.replace(b"\n-Y 64 +X 80\n", b"\n-Y 20000 +X 20000junk\n\n-Y 1 +X 1\n", 1)
    assert images.header_size(bad) is None  # not the small line further on


def _jpeg(*segments: bytes) -> bytes:
    return b"\xff\xd8" + b"".join(segments) + b"\xff\xd9"


def _seg(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _sof(width: int, height: int, marker: int = 0xC0) -> bytes:
    return _seg(marker, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")


REAL_JPEG = cv2.imencode(".jpg", np.zeros((H, W, 3), np.uint8))[1].tobytes()


def _behind_app0(extra: bytes) -> bytes:
    """The real JPEG with ``extra`` bytes put right after its APP0 segment."""
    at = 4 + struct.unpack_from(">H", REAL_JPEG, 4)[0]
    return REAL_JPEG[:at] + extra + REAL_JPEG[at:]


@pytest.mark.parametrize(("name", "data"), [
    ("fake SOF in an APP1 payload", _behind_app0(_seg(0xE1, b"Exif" + _sof(9, 9)))),
    ("fake SOF a FF00 length would jump to",  # FF 00 00 06: stuffing then garbage, not a
     _behind_app0(b"\xff\x00\x00\x06" + _seg(0xFE, b"xx" + _sof(9, 9)))),  # 6-byte segment
    ("fill bytes before a marker", _behind_app0(b"\xff\xff\xff" + _seg(0xFE, b"note"))),
    ("progressive SOF2 first, then a second SOF", REAL_JPEG.replace(
        b"\xff\xc0", b"\xff\xc2", 1).replace(b"\xff\xda", _sof(9, 9, 0xC0) + b"\xff\xda", 1)),
])
def test_jpeg_marker_tricks_read_the_real_first_sof(name: str, data: bytes) -> None:
    assert images.header_size(data) == (W, H), name
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is None or decoded.shape[:2] == (H, W), name  # libjpeg agrees


@pytest.mark.parametrize(("name", "data"), [
    ("SOS before any SOF", _jpeg(_seg(0xDA, bytes(10)), _sof(9, 9))),
    ("EOI before any SOF", b"\xff\xd8\xff\xd9\x00\x02" + _sof(9, 9)),  # no length to skip
    ("segment length below 2", _jpeg(b"\xff\xe0\x00\x01", _sof(9, 9))),
    ("segment running past the end", b"\xff\xd8" + _sof(9, 9)[:11]),
    ("SOF too short for its sizes", _jpeg(_seg(0xC0, b"\x08\x00"))),
])
def test_jpeg_without_a_frame_header_before_the_data_has_no_size(name: str,
                                                                 data: bytes) -> None:
    assert images.header_size(data) is None, name


def test_unknown_formats_are_refused_with_the_old_reason() -> None:
    for data in (b"this is not an image", b"II*", b"P8\n1 1\n", b"\0\0\0\x18ftypheic" + bytes(8)):
        with pytest.raises(images.ImageError, match=re.escape(images.UNDECODABLE)):
            images.decode(data, "odd.bin")


def _corpus() -> list[bytes]:
    rng = np.random.default_rng(37)
    found = [rng.bytes(int(n)) for n in rng.integers(0, 200, 300)]
    for fmt in image_headers.FORMATS:
        data = sample(fmt)
        found += [data[:n] for n in range(0, min(len(data), 400))]
        for _ in range(200):
            flipped = bytearray(data[:600])
            flipped[int(rng.integers(0, len(flipped)))] ^= 1 << int(rng.integers(0, 8))
            found.append(bytes(flipped))
        found += [data[:16] + rng.bytes(int(rng.integers(0, 64))) for _ in range(50)]
    return found


def test_header_size_never_raises_and_answers_two_ints_or_none() -> None:
    for data in _corpus():
        size = images.header_size(data)
        assert size is None or (len(size) == 2 and all(type(v) is int for v in size))


def test_a_tiff_size_tag_given_twice_counts_its_larger_value() -> None:
    blob = bytes(W * H)
    data = bytearray(tiff([grey_tiff_page(W, H, blob)], [blob]))
    struct.pack_into("<HHIH", data, 8 + 2 + 12 * 2, 256, 3, 1, HUGE)  # entry 258 → 256 again
    assert images.header_size(bytes(data)) == (HUGE, H)


def deep_sample(ext: str, channels: int, dtype: type, params: tuple[int, ...] = ()) -> bytes:
    """An ``W x H`` image of that many channels and sample type, as OpenCV writes it."""
    pixels = np.random.default_rng(2).integers(0, 255, (H, W, channels)).astype(dtype)
    pixels = pixels / 255 if np.issubdtype(dtype, np.floating) else pixels
    pixels = pixels[..., 0] if channels == 1 else pixels
    return cv2.imencode(ext, pixels.astype(dtype), list(params))[1].tobytes()


#: what this OpenCV writes but does not read back with IMREAD_COLOR (float TIFF: "can not
#: handle images with 32-bit samples"; 16-bit RGBA PAM)
NOT_DECODED_AS_COLOUR = {(".tif", np.float32), (".tif", np.float64), (".pam", np.uint16)}


@pytest.mark.parametrize(("ext", "channels", "dtype", "params", "depth"), [
    (".png", 4, np.uint16, (), (4, 16)), (".png", 1, np.uint16, (), (1, 16)),
    (".png", 3, np.uint8, (), (3, 8)),
    (".tif", 4, np.uint16, (), (4, 16)), (".tif", 3, np.float32, (), (3, 32)),
    (".tif", 3, np.float64, (), (3, 64)), (".tif", 1, np.uint8, (), (1, 8)),
    (".pfm", 3, np.float32, (), (3, 32)), (".pfm", 1, np.float32, (), (1, 32)),
    (".hdr", 3, np.float32, (), (3, 32)),
    (".jp2", 3, np.uint16, (), (3, 16)), (".jp2", 1, np.uint16, (), (1, 16)),
    (".jp2", 3, np.uint8, (), (3, 8)),
    (".jpg", 3, np.uint8, (), (3, 8)), (".jpg", 1, np.uint8, (), (1, 8)),
    (".bmp", 3, np.uint8, (), (3, 8)), (".bmp", 4, np.uint8, (), (4, 8)),
    (".ppm", 3, np.uint16, (), (3, 16)), (".pgm", 1, np.uint8, (), (1, 8)),
    (".pbm", 1, np.uint8, (), (1, 1)), (".pam", 4, np.uint16, (), (4, 16)),
    (".pam", 3, np.uint8, (), (3, 8)), (".ras", 3, np.uint8, (), (3, 8)),
    (".webp", 3, np.uint8, (), (4, 8)), (".gif", 3, np.uint8, (), (4, 8)),  # never said
    (".avif", 3, np.uint8, (), (3, 8)),
    (".avif", 3, np.uint16, (cv2.IMWRITE_AVIF_DEPTH, 10), (3, 10)),
    (".avif", 4, np.uint16, (cv2.IMWRITE_AVIF_DEPTH, 12), (4, 12)),  # an alpha plane too
])
def test_every_format_reads_the_channels_and_bits_opencv_wrote(
        ext: str, channels: int, dtype: type, params: tuple[int, ...],
        depth: tuple[int, int]) -> None:
    data = deep_sample(ext, channels, dtype, params)
    header = image_headers.claimed_header(data)
    assert (header.sizes[0], header.depth) == ((W, H), depth)
    if (ext, dtype) not in NOT_DECODED_AS_COLOUR:
        assert images.decode(data).shape == (H, W, 3)


DEEP_W, DEEP_H = 10_000, 9_000  # 90 MP: under the pixel limit


@pytest.mark.parametrize(("name", "data", "depth"), [
    ("RGBA 16-bit PNG", FORGERS["PNG"](deep_sample(".png", 4, np.uint16), DEEP_W, DEEP_H),
     "4 channels at 16 bits"),
    ("RGBA 16-bit TIFF", _tiff_sizes_patched(deep_sample(".tif", 4, np.uint16), DEEP_W, DEEP_H),
     "4 channels at 16 bits"),
    ("float PFM", FORGERS["PFM"](deep_sample(".pfm", 3, np.float32), DEEP_W, DEEP_H),
     "3 channels at 32 bits"),
    ("Radiance HDR", FORGERS["Radiance HDR"](deep_sample(".hdr", 3, np.float32), DEEP_H,
                                             DEEP_W), "3 channels at 32 bits"),  # -Y h +X w
    ("16-bit JPEG 2000", _jp2_siz(deep_sample(".jp2", 3, np.uint16), DEEP_W, DEEP_H),
     "3 channels at 16 bits"),
    ("16-bit JPEG 2000 codestream", _jp2_siz(deep_sample(".jp2", 1, np.uint16).split(
        b"jp2c", 1)[1], DEEP_W, DEEP_H), "1 channels at 16 bits"),  # 90 MP x 3 x 2 bytes
])
def test_a_deep_image_under_the_pixel_limit_over_the_byte_budget_is_refused(
        name: str, data: bytes, depth: str) -> None:
    budget_mb = images.MAX_PIXELS * 4 // 1_000_000  # RGBA 8-bit at the pixel limit
    with pytest.raises(images.ImageError, match=f"^deep.img: header claims {DEEP_W}x{DEEP_H} "
                       f"pixels of {depth}, over the decoding budget of {budget_mb} MB$"):
        images.decode(data, "deep.img")
    assert images.header_size(data) == (DEEP_W, DEEP_H), name


@pytest.mark.parametrize("fmt", [f for f in image_headers.FORMATS  # 8-bit at most
                                 if f.name in ("BMP", "WebP", "GIF", "Sun raster")],
                         ids=lambda f: f.name)
def test_an_8bit_image_at_the_pixel_limit_is_never_refused_for_its_bytes(
        fmt: image_headers.Format) -> None:
    side = int(images.MAX_PIXELS ** 0.5)
    images.check_header(forged(fmt, side, side), "limit.img")  # no error: RGBA at most
    rgba = FORGERS["PNG"](deep_sample(".png", 4, np.uint8), side, side)
    images.check_header(rgba, "limit.png")


def test_a_tiff_depth_the_header_does_not_say_counts_the_formats_worst() -> None:
    blob = bytes(W * H)
    tags = grey_tiff_page(5000, 4000, blob)
    data = bytearray(tiff([tags], [blob]))
    struct.pack_into("<HHIH", data, 8 + 2 + 12 * 2, 258, 2, 1, 8)  # BitsPerSample as ASCII
    with pytest.raises(images.ImageError, match="header claims 5000x4000 pixels of 4 channels "
                       "at 64 bits, over the decoding budget"):
        images.decode(bytes(data), "odd.tif")
    assert image_headers.claimed_header(tiff([tags], [blob])).depth == (1, 8)


def test_a_tiff_depth_tag_with_billions_of_values_is_not_read_and_counts_the_worst() -> None:
    pixels = np.zeros((H, W, 4), np.uint16)
    data = bytearray(cv2.imencode(".tif", pixels)[1].tobytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    entries = [ifd + 2 + 12 * k for k in range(struct.unpack_from("<H", data, ifd)[0])]
    at = next(e for e in entries if struct.unpack_from("<H", data, e)[0] == 258)
    struct.pack_into("<I", data, at + 4, 0xFFFF_FFFF)  # count: 4 G values (8 GB) at the offset
    assert image_headers.claimed_header(bytes(data)).depth == (4, 64)
    assert image_headers.claimed_header(bytes(data)).sizes == [(W, H)]
