"""Image sizes read from file headers, one small reader per format OpenCV decodes here.

:data:`FORMATS` is the whitelist: ``images.decode`` refuses a file no entry's signature
matches, or whose reader cannot say how large it is, before any decoder sees its bytes. A
reader returns every size the decoder would allocate (the image first; then tiles, later
pages or frames, an inner codestream), or None; it never raises.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

Size = tuple[int, int]
MAX_PAGES = 64  # TIFF IFDs, GIF frames: checked up to this many
MAX_TEXT_HEADER = 65536  # PNM/PFM/HDR headers longer than this are refused
MAX_BOXES = 256  # ISO-BMFF / JP2 boxes walked at one level


def _u(fmt: str, data: bytes, offset: int) -> tuple[int, ...] | None:
    """``struct.unpack_from`` that answers None past the end (or at a negative offset)."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        return None
    return struct.unpack_from(fmt, data, offset)


def png_sizes(data: bytes) -> list[Size] | None:
    """IHDR, the first chunk: width, height (4 bytes each, big-endian)."""
    return [_u(">II", data, 16)] if data[12:16] == b"IHDR" and len(data) >= 24 else None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: no length field


def jpeg_sizes(data: bytes) -> list[Size] | None:
    """The first SOFn frame header (baseline, progressive, lossless, arithmetic): height,
    width. Segments are skipped by their length, as libjpeg does; bytes between segments,
    ``FF`` fill and ``FF 00`` stuffing are skipped; SOS or EOI before any SOF is refused."""
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:  # garbage between segments (libjpeg warns and skips it)
            i += 1
            continue
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 1 >= n:
            return None
        marker = data[i + 1]
        if marker == 0x00 or marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS: the image data starts with no frame header
            return None
        length = _u(">H", data, i + 2)
        if length is None or length[0] < 2 or i + 2 + length[0] > n:
            return None
        if marker in _SOF:
            size = _u(">HH", data, i + 5) if length[0] >= 8 else None
            return [(size[1], size[0])] if size else None
        i += 2 + length[0]
    return None


def bmp_sizes(data: bytes) -> list[Size] | None:
    """BITMAPCOREHEADER (12 bytes: 16-bit sizes) or BITMAPINFOHEADER and later (32-bit,
    the height negative for top-down)."""
    header = _u("<I", data, 14)
    if header is None:
        return None
    size = _u("<HH" if header[0] == 12 else "<ii", data, 18)
    return [(abs(size[0]), abs(size[1]))] if size else None


_TIFF_VALUE = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: the types a size may have


def _tiff_count(data: bytes, end: str, at: int, big: bool) -> int | None:
    count = _u(end + ("Q" if big else "I"), data, at)
    return count[0] if count else None


def _tiff_ifd(data: bytes, end: str, offset: int, big: bool) -> tuple[dict[int, int], int]:
    """One IFD's integer tags and the next IFD's offset; raises ValueError when cut."""
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    (count,) = _u(end + count_fmt, data, offset) or (None,)
    if count is None:
        raise ValueError("IFD past the end")
    first = offset + struct.calcsize(count_fmt)
    tags: dict[int, int] = {}
    for k in range(min(count, (len(data) - first) // entry_size + 1)):
        entry = _u(end + "HH", data, first + k * entry_size)
        if entry is None:
            raise ValueError("IFD entry past the end")
        tag, kind = entry
        at = first + k * entry_size + 4
        wanted = tag in (256, 257, 322, 323) and kind in _TIFF_VALUE and (big or kind != 16)
        if wanted and _tiff_count(data, end, at, big) == 1:
            value = _u(end + _TIFF_VALUE[kind], data, at + (8 if big else 4))
            if value is not None:  # a tag given twice: the larger value counts
                tags[tag] = max(value[0], tags.get(tag, 0))
    (next_offset,) = _u(end + next_fmt, data, first + count * entry_size) or (0,)
    return tags, next_offset


def tiff_sizes(data: bytes) -> list[Size] | None:
    """Classic and BigTIFF, either byte order: ImageWidth/ImageLength (256/257) and, for a
    tiled page, TileWidth/TileLength (322/323) of every IFD, up to :data:`MAX_PAGES`."""
    end = "<" if data[:2] == b"II" else ">"
    big = _u(end + "H", data, 2) == (43,)
    first = _u(end + ("Q" if big else "I"), data, 8 if big else 4)
    offset, seen, sizes = first[0] if first else 0, set(), []
    while offset and offset not in seen and len(seen) < MAX_PAGES:
        seen.add(offset)
        try:
            tags, offset = _tiff_ifd(data, end, offset, big)
        except ValueError:
            break  # a later page cut off: the first one still decides
        if 256 not in tags or 257 not in tags:
            break
        sizes.append((tags[256], tags[257]))
        if 322 in tags and 323 in tags:
            sizes.append((tags[322], tags[323]))
    return sizes or None


def webp_sizes(data: bytes) -> list[Size] | None:
    """The first chunk: VP8X canvas (24-bit sizes minus one), VP8L (14-bit minus one) or
    VP8 key frame (14-bit, after the start code ``9D 01 2A``)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return [(int.from_bytes(data[24:27], "little") + 1,
                 int.from_bytes(data[27:30], "little") + 1)]
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return [((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return [(width & 0x3FFF, height & 0x3FFF)]
    return None


def _tokens(data: bytes, count: int, comments: bool) -> list[bytes] | None:
    """The first ``count`` whitespace-separated header tokens after the 2-byte magic."""
    head = data[2:MAX_TEXT_HEADER]
    if comments:
        head = re.sub(rb"#[^\r\n]*", b" ", head)
    tokens = head.split(None, count)[:count]
    return tokens if len(tokens) == count and all(t.isdigit() for t in tokens) else None


def pnm_sizes(data: bytes) -> list[Size] | None:
    """P1–P6: width and height, the first two numbers after the magic (``#`` comments)."""
    tokens = _tokens(data, 2, comments=True)
    return [(int(tokens[0]), int(tokens[1]))] if tokens else None


def pam_sizes(data: bytes) -> list[Size] | None:
    """P7: the WIDTH and HEIGHT lines before ENDHDR."""
    head = data[:MAX_TEXT_HEADER].split(b"ENDHDR", 1)[0]
    width = re.search(rb"^WIDTH\s+(\d+)", head, re.M)
    height = re.search(rb"^HEIGHT\s+(\d+)", head, re.M)
    return [(int(width[1]), int(height[1]))] if width and height else None


def pfm_sizes(data: bytes) -> list[Size] | None:
    """PF (colour) / Pf (grey): width and height after the magic."""
    tokens = _tokens(data, 2, comments=False)
    return [(int(tokens[0]), int(tokens[1]))] if tokens else None


_HDR_RESOLUTION = re.compile(rb"([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n")


def hdr_sizes(data: bytes) -> list[Size] | None:
    """Radiance: the line after the header's first blank line (the one OpenCV reads),
    ``-Y h +X w`` or another of the eight orientations."""
    blank = data.find(b"\n\n", 0, MAX_TEXT_HEADER)
    match = _HDR_RESOLUTION.match(data, blank + 2) if blank >= 0 else None
    if not match or match[2] == match[5]:
        return None
    first, second = int(match[3]), int(match[6])
    return [(second, first) if match[2] == b"Y" else (first, second)]


Box = tuple[bytes, int, int]  # type, payload start, payload end


def _boxes(data: bytes, start: int, end: int) -> list[Box]:
    """ISO-BMFF/JP2 boxes at one level, up to :data:`MAX_BOXES`; stops at a bad length."""
    found: list[Box] = []
    i = start
    while len(found) < MAX_BOXES and i + 8 <= end and (head := _u(">I4s", data, i)):
        size, kind, body = head[0], head[1], i + 8
        if size == 1:
            size, body = (_u(">Q", data, i + 8) or (0,))[0], i + 16
        elif size == 0:
            size = end - i
        if size < body - i or i + size > end:
            break
        found.append((kind, body, i + size))
        i += size
    return found


def _box(boxes: list[Box], kind: bytes) -> tuple[int, int] | None:
    """Payload (start, end) of the first box of that type."""
    return next(((start, end) for k, start, end in boxes if k == kind), None)


def j2k_sizes(data: bytes, start: int = 0) -> list[Size] | None:
    """Raw codestream: SIZ right after SOC, image = Xsiz-XOsiz by Ysiz-YOsiz."""
    if data[start:start + 4] != b"\xff\x4f\xff\x51":
        return None
    siz = _u(">IIII", data, start + 8)
    if siz is None or siz[2] > siz[0] or siz[3] > siz[1]:
        return None
    return [(siz[0] - siz[2], siz[1] - siz[3])]


def jp2_sizes(data: bytes) -> list[Size] | None:
    """JP2: the SIZ of the codestream in the ``jp2c`` box (what OpenJPEG decodes), and the
    ``ihdr`` box of ``jp2h`` (height, then width)."""
    top = _boxes(data, 0, len(data))
    codestream, jp2h = _box(top, b"jp2c"), _box(top, b"jp2h")
    ihdr = _box(_boxes(data, *jp2h), b"ihdr") if jp2h else None
    sizes = j2k_sizes(data, codestream[0]) if codestream else None
    header = _u(">II", data, ihdr[0]) if ihdr else None
    return [*sizes, (header[1], header[0])] if sizes and header else None


def _colour_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_sizes(data: bytes) -> list[Size] | None:
    """The logical screen, then each frame's right and bottom edge (image descriptors,
    walked over colour tables and data sub-blocks) up to :data:`MAX_PAGES` frames."""
    screen = _u("<HHB", data, 6)
    if screen is None:
        return None
    sizes, i = [screen[:2]], 13 + _colour_table(screen[2])
    while i < len(data) and len(sizes) <= MAX_PAGES and data[i] in (0x21, 0x2C):
        if data[i] == 0x2C:  # image descriptor, local colour table, LZW code size
            frame = _u("<HHHHB", data, i + 1)
            if frame is None:
                break
            sizes.append((frame[0] + frame[2], frame[1] + frame[3]))
            i += 11 + _colour_table(frame[4])
        else:  # extension introducer and label
            i += 2
        while i < len(data) and data[i]:  # data sub-blocks, each led by its length
            i += 1 + data[i]
        i += 1
    return sizes


def sun_sizes(data: bytes) -> list[Size] | None:
    """Sun raster: width, height (big-endian, after the magic)."""
    size = _u(">II", data, 4)
    return [size] if size else None


def avif_sizes(data: bytes) -> list[Size] | None:
    """AVIF: every ``ispe`` property (meta → iprp → ipco), the largest first; a grid's
    tiles and the grid each have one."""
    meta = _box(_boxes(data, 0, len(data)), b"meta")
    iprp = _box(_boxes(data, meta[0] + 4, meta[1]), b"iprp") if meta else None  # full box
    ipco = _box(_boxes(data, *iprp), b"ipco") if iprp else None
    found = _boxes(data, *ipco) if ipco else []
    sizes = [_u(">II", data, start + 4) for kind, start, _ in found if kind == b"ispe"]
    return sorted(sizes, key=lambda s: -s[0] * s[1]) if sizes and None not in sizes else None


def _is_avif(data: bytes) -> bool:
    """An ``ftyp`` box whose major or compatible brands name AVIF (what libavif accepts)."""
    head = _u(">I4s", data, 0)
    if head is None or head[1] != b"ftyp" or not 16 <= head[0] <= min(len(data), 4096):
        return False
    brands = [data[8:12]] + [data[k:k + 4] for k in range(16, head[0] - 3, 4)]
    return b"avif" in brands or b"avis" in brands


@dataclass(frozen=True)
class Format:
    """One decodable format: how to know it, how to read its size, how OpenCV writes it."""

    name: str
    matches: Callable[[bytes], bool]
    sizes: Callable[[bytes], list[Size] | None]
    extension: str | None  # cv2.imencode's extension for a sample; None: not writable here


def _prefix(*magics: bytes) -> Callable[[bytes], bool]:
    return lambda data: data.startswith(magics)


def _netpbm(second: bytes) -> Callable[[bytes], bool]:
    """``P``, one of ``second``, then whitespace: OpenCV's PxM, PAM and PFM signatures."""
    return lambda data: (len(data) > 2 and data[:1] == b"P" and data[1] in second
                         and data[2] in b" \t\n\v\f\r")


FORMATS: tuple[Format, ...] = (
    Format("PNG", _prefix(b"\x89PNG\r\n\x1a\n"), png_sizes, ".png"),
    Format("JPEG", _prefix(b"\xff\xd8\xff"), jpeg_sizes, ".jpg"),
    Format("BMP", _prefix(b"BM"), bmp_sizes, ".bmp"),
    Format("TIFF", _prefix(b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), tiff_sizes, ".tif"),
    Format("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", webp_sizes, ".webp"),
    Format("PNM", _netpbm(b"123456"), pnm_sizes, ".ppm"),
    Format("PAM", _netpbm(b"7"), pam_sizes, ".pam"),
    Format("PFM", _netpbm(b"fF"), pfm_sizes, ".pfm"),
    Format("Radiance HDR", _prefix(b"#?RADIANCE\n", b"#?RGBE\n"), hdr_sizes, ".hdr"),
    Format("JPEG 2000", _prefix(b"\0\0\0\x0cjP  \r\n\x87\n"), jp2_sizes, ".jp2"),
    Format("JPEG 2000 codestream", _prefix(b"\xff\x4f\xff\x51"), j2k_sizes, None),
    Format("GIF", _prefix(b"GIF87a", b"GIF89a"), gif_sizes, ".gif"),
    Format("Sun raster", _prefix(b"\x59\xa6\x6a\x95"), sun_sizes, ".ras"),
    Format("AVIF", _is_avif, avif_sizes, ".avif"),
)


def identify(data: bytes) -> Format | None:
    """The table's entry whose signature the bytes carry, else None (not decoded)."""
    return next((f for f in FORMATS if f.matches(data)), None)


def claimed_sizes(data: bytes) -> list[Size] | None:
    """Every size the header claims, the image first; None when the format is unknown or
    its header does not say (or says zero). Never raises."""
    fmt = identify(data)
    try:
        sizes = fmt.sizes(data) if fmt else None
    except (struct.error, ValueError, IndexError, TypeError, OverflowError):
        return None
    if not sizes or None in sizes or min(sizes[0]) <= 0:
        return None
    return [(int(w), int(h)) for w, h in sizes]
