"""Image sizes and sample depths read from file headers, one small reader per format OpenCV
decodes here.

:data:`FORMATS` is the whitelist: ``images.decode`` refuses a file no entry's signature
matches, or whose reader cannot say how large it is, before any decoder sees its bytes. A
reader returns a :class:`Header`: every size the decoder would allocate (the image first; then
tiles, later pages or frames, an inner codestream) and, where the header says it, the channels
and bits per sample the decoder holds before converting to 8-bit RGB (a 16-bit or float image
takes several times the bytes of an 8-bit one); or None. Where the depth is not said, the
format's ``worst`` counts. A reader never raises.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

Size = tuple[int, int]
Depth = tuple[int, int]  # channels, bits per sample
MAX_PAGES = 64  # TIFF IFDs, GIF frames: checked up to this many
MAX_TEXT_HEADER = 65536  # PNM/PFM/HDR headers longer than this are refused
MAX_BOXES = 256  # ISO-BMFF / JP2 boxes walked at one level
MAX_VALUES = 16  # TIFF BitsPerSample values read (one per sample)


class Header(NamedTuple):
    """What a header claims: every size, and the depth (None: the header does not say)."""

    sizes: list[Size]
    depth: Depth | None = None


def _u(fmt: str, data: bytes, offset: int) -> tuple[int, ...] | None:
    """``struct.unpack_from`` that answers None past the end (or at a negative offset)."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        return None
    return struct.unpack_from(fmt, data, offset)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type → channels (a palette: RGBA)


def png_header(data: bytes) -> Header | None:
    """IHDR, the first chunk: width, height (4 bytes each, big-endian), bit depth and colour
    type (a palette decodes to 8-bit samples)."""
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    kind = _u(">BB", data, 24)
    known = kind and kind[1] in _PNG_CHANNELS and kind[0] in (1, 2, 4, 8, 16)
    depth = (_PNG_CHANNELS[kind[1]], 8 if kind[1] == 3 else kind[0]) if known else None
    return Header([_u(">II", data, 16)], depth)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: no length field


def jpeg_header(data: bytes) -> Header | None:
    """The first SOFn frame header (baseline, progressive, lossless, arithmetic): precision,
    height, width, components. Segments are skipped by their length, as libjpeg does; bytes
    between segments, ``FF`` fill and ``FF 00`` stuffing are skipped; SOS or EOI before any
    SOF is refused."""
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
            frame = _u(">BHHB", data, i + 4) if length[0] >= 8 else None
            return Header([(frame[2], frame[1])], (frame[3], frame[0])) if frame else None
        i += 2 + length[0]
    return None


def _rgb_or_rgba(bits_per_pixel: int | None) -> Depth | None:
    """BMP and Sun raster: 8-bit samples, four of them at 32 bits per pixel."""
    known = bits_per_pixel in (1, 2, 4, 8, 16, 24, 32)
    return (4 if bits_per_pixel == 32 else 3, 8) if known else None


def bmp_header(data: bytes) -> Header | None:
    """BITMAPCOREHEADER (12 bytes: 16-bit sizes) or BITMAPINFOHEADER and later (32-bit,
    the height negative for top-down); then planes and bits per pixel."""
    header = _u("<I", data, 14)
    if header is None:
        return None
    core = header[0] == 12
    size = _u("<HH" if core else "<ii", data, 18)
    bits = _u("<H", data, 24 if core else 28)
    return Header([(abs(size[0]), abs(size[1]))], _rgb_or_rgba(bits and bits[0])) \
        if size else None


_TIFF_VALUE = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: the types a size may have


def _tiff_count(data: bytes, end: str, at: int, big: bool) -> int | None:
    count = _u(end + ("Q" if big else "I"), data, at)
    return count[0] if count else None


_UNREADABLE = 1 << 64  # a depth tag whose values cannot be read: the worst case counts


def _tiff_largest(data: bytes, end: str, at: int, big: bool, kind: int) -> int:
    """The largest of an entry's values, inline or at its offset, else (an odd type, none or
    more than :data:`MAX_VALUES` of them) :data:`_UNREADABLE`."""
    count = _tiff_count(data, end, at, big)
    if kind not in _TIFF_VALUE or (kind == 16 and not big) or not 0 < (count or 0) <= MAX_VALUES:
        return _UNREADABLE
    fmt = end + _TIFF_VALUE[kind] * count
    where = at + (8 if big else 4)
    if struct.calcsize(_TIFF_VALUE[kind]) * count > (8 if big else 4):  # stored at an offset
        (where,) = _u(end + ("Q" if big else "I"), data, where) or (-1,)
    values = _u(fmt, data, where)
    return max(values) if values else _UNREADABLE


def _tiff_ifd(data: bytes, end: str, offset: int, big: bool) -> tuple[dict[int, int], int]:
    """One IFD's size and depth tags and the next IFD's offset; raises ValueError when cut."""
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
        elif tag in (258, 277):  # BitsPerSample (one per sample), SamplesPerPixel
            tags[tag] = max(_tiff_largest(data, end, at, big, kind), tags.get(tag, 0))
    (next_offset,) = _u(end + next_fmt, data, first + count * entry_size) or (0,)
    return tags, next_offset


def tiff_header(data: bytes) -> Header | None:
    """Classic and BigTIFF, either byte order: ImageWidth/ImageLength (256/257) and, for a
    tiled page, TileWidth/TileLength (322/323) of every IFD, up to :data:`MAX_PAGES`; the
    most SamplesPerPixel (277) and BitsPerSample (258) of any page (both 1 when absent)."""
    end = "<" if data[:2] == b"II" else ">"
    big = _u(end + "H", data, 2) == (43,)
    first = _u(end + ("Q" if big else "I"), data, 8 if big else 4)
    offset, seen, sizes, depth = first[0] if first else 0, set(), [], (1, 1)
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
        depth = (max(depth[0], tags.get(277, 1)), max(depth[1], tags.get(258, 1)))
    readable = _UNREADABLE not in depth
    return Header(sizes, depth if readable else None) if sizes else None


def webp_header(data: bytes) -> Header | None:
    """The first chunk: VP8X canvas (24-bit sizes minus one), VP8L (14-bit minus one) or
    VP8 key frame (14-bit, after the start code ``9D 01 2A``)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return Header([(int.from_bytes(data[24:27], "little") + 1,
                        int.from_bytes(data[27:30], "little") + 1)])
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return Header([((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)])
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return Header([(width & 0x3FFF, height & 0x3FFF)])
    return None


def _tokens(data: bytes, count: int, comments: bool) -> list[bytes] | None:
    """The first ``count`` whitespace-separated header tokens after the 2-byte magic."""
    head = data[2:MAX_TEXT_HEADER]
    if comments:
        head = re.sub(rb"#[^\r\n]*", b" ", head)
    tokens = head.split(None, count)[:count]
    return tokens if len(tokens) == count and all(t.isdigit() for t in tokens) else None


def _bits_for(maxval: int) -> int:
    """Netpbm samples: one byte up to a maximum value of 255, two above."""
    return 16 if maxval > 255 else 8


def pnm_header(data: bytes) -> Header | None:
    """P1–P6: width and height, the first two numbers after the magic (``#`` comments), then
    the maximum value (none for the 1-bit P1/P4)."""
    tokens = _tokens(data, 2, comments=True)
    if not tokens:
        return None
    sizes = [(int(tokens[0]), int(tokens[1]))]
    if data[1] in b"14":
        return Header(sizes, (1, 1))
    maxval = _tokens(data, 3, comments=True)
    channels = 3 if data[1] in b"36" else 1
    return Header(sizes, (channels, _bits_for(int(maxval[2]))) if maxval else None)


def pam_header(data: bytes) -> Header | None:
    """P7: the WIDTH, HEIGHT, DEPTH (channels) and MAXVAL lines before ENDHDR."""
    head = data[:MAX_TEXT_HEADER].split(b"ENDHDR", 1)[0]
    width, height, depth, maxval = (re.search(rb"^%s\s+(\d+)" % key, head, re.M)
                                    for key in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL"))
    if not (width and height):
        return None
    said = (int(depth[1]), _bits_for(int(maxval[1]))) if depth and maxval else None
    return Header([(int(width[1]), int(height[1]))], said)


def pfm_header(data: bytes) -> Header | None:
    """PF (colour) / Pf (grey), 32-bit floats: width and height after the magic."""
    tokens = _tokens(data, 2, comments=False)
    depth = (3 if data[1:2] == b"F" else 1, 32)
    return Header([(int(tokens[0]), int(tokens[1]))], depth) if tokens else None


_HDR_RESOLUTION = re.compile(rb"([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n")


def hdr_header(data: bytes) -> Header | None:
    """Radiance: the line after the header's first blank line (the one OpenCV reads),
    ``-Y h +X w`` or another of the eight orientations. OpenCV decodes it to 3 floats."""
    blank = data.find(b"\n\n", 0, MAX_TEXT_HEADER)
    match = _HDR_RESOLUTION.match(data, blank + 2) if blank >= 0 else None
    if not match or match[2] == match[5]:
        return None
    first, second = int(match[3]), int(match[6])
    return Header([(second, first) if match[2] == b"Y" else (first, second)])


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


def j2k_header(data: bytes, start: int = 0) -> Header | None:
    """Raw codestream: SIZ right after SOC, image = Xsiz-XOsiz by Ysiz-YOsiz; Csiz
    components, each with its Ssiz (bits minus one, the top bit for signed)."""
    if data[start:start + 4] != b"\xff\x4f\xff\x51":
        return None
    siz = _u(">IIII", data, start + 8)
    if siz is None or siz[2] > siz[0] or siz[3] > siz[1]:
        return None
    (components,) = _u(">H", data, start + 40) or (0,)
    ssiz = data[start + 42:start + 42 + 3 * components:3]
    said = components and len(ssiz) == components
    depth = (components, max(s & 0x7F for s in ssiz) + 1) if said else None
    return Header([(siz[0] - siz[2], siz[1] - siz[3])], depth)


def jp2_header(data: bytes) -> Header | None:
    """JP2: the SIZ of the codestream in the ``jp2c`` box (what OpenJPEG decodes), and the
    ``ihdr`` box of ``jp2h`` (height, then width)."""
    top = _boxes(data, 0, len(data))
    codestream, jp2h = _box(top, b"jp2c"), _box(top, b"jp2h")
    ihdr = _box(_boxes(data, *jp2h), b"ihdr") if jp2h else None
    inner = j2k_header(data, codestream[0]) if codestream else None
    header = _u(">II", data, ihdr[0]) if ihdr else None
    return Header([*inner.sizes, (header[1], header[0])], inner.depth) \
        if inner and header else None


def _colour_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_header(data: bytes) -> Header | None:
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
    return Header(sizes)


def sun_header(data: bytes) -> Header | None:
    """Sun raster: width, height, bits per pixel (big-endian, after the magic)."""
    size = _u(">III", data, 4)
    return Header([size[:2]], _rgb_or_rgba(size[2])) if size else None


def _avif_depth(data: bytes, found: list[Box]) -> Depth | None:
    """The ``pixi`` properties (channels, then bits of each): the most bits; four channels
    where there is more than one (an alpha plane or a grid's tiles have their own)."""
    pixi = [(data[start + 4], data[start + 5:end]) for kind, start, end in found
            if kind == b"pixi" and end > start + 4]
    if not pixi or any(len(bits) < count or not count for count, bits in pixi):
        return None
    channels = pixi[0][0] if len(pixi) == 1 else max(4, *(count for count, _ in pixi))
    return channels, max(max(bits[:count]) for count, bits in pixi)


def avif_header(data: bytes) -> Header | None:
    """AVIF: every ``ispe`` property (meta → iprp → ipco), the largest first; a grid's
    tiles and the grid each have one."""
    meta = _box(_boxes(data, 0, len(data)), b"meta")
    iprp = _box(_boxes(data, meta[0] + 4, meta[1]), b"iprp") if meta else None  # full box
    ipco = _box(_boxes(data, *iprp), b"ipco") if iprp else None
    found = _boxes(data, *ipco) if ipco else []
    sizes = [_u(">II", data, start + 4) for kind, start, _ in found if kind == b"ispe"]
    if not sizes or None in sizes:
        return None
    return Header(sorted(sizes, key=lambda s: -s[0] * s[1]), _avif_depth(data, found))


def _is_avif(data: bytes) -> bool:
    """An ``ftyp`` box whose major or compatible brands name AVIF (what libavif accepts)."""
    head = _u(">I4s", data, 0)
    if head is None or head[1] != b"ftyp" or not 16 <= head[0] <= min(len(data), 4096):
        return False
    brands = [data[8:12]] + [data[k:k + 4] for k in range(16, head[0] - 3, 4)]
    return b"avif" in brands or b"avis" in brands


@dataclass(frozen=True)
class Format:
    """One decodable format: how to know it, how to read its header, the most channels and
    bits per sample it decodes to (counted where its header does not say), how OpenCV writes
    it."""

    name: str
    matches: Callable[[bytes], bool]
    header: Callable[[bytes], Header | None]
    worst: Depth
    extension: str | None  # cv2.imencode's extension for a sample; None: not writable here


def _prefix(*magics: bytes) -> Callable[[bytes], bool]:
    return lambda data: data.startswith(magics)


def _netpbm(second: bytes) -> Callable[[bytes], bool]:
    """``P``, one of ``second``, then whitespace: OpenCV's PxM, PAM and PFM signatures."""
    return lambda data: (len(data) > 2 and data[:1] == b"P" and data[1] in second
                         and data[2] in b" \t\n\v\f\r")


FORMATS: tuple[Format, ...] = (
    Format("PNG", _prefix(b"\x89PNG\r\n\x1a\n"), png_header, (4, 16), ".png"),
    Format("JPEG", _prefix(b"\xff\xd8\xff"), jpeg_header, (4, 16), ".jpg"),
    Format("BMP", _prefix(b"BM"), bmp_header, (4, 8), ".bmp"),
    Format("TIFF", _prefix(b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), tiff_header, (4, 64),
           ".tif"),
    Format("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", webp_header, (4, 8),
           ".webp"),
    Format("PNM", _netpbm(b"123456"), pnm_header, (3, 16), ".ppm"),
    Format("PAM", _netpbm(b"7"), pam_header, (4, 16), ".pam"),
    Format("PFM", _netpbm(b"fF"), pfm_header, (3, 32), ".pfm"),
    Format("Radiance HDR", _prefix(b"#?RADIANCE\n", b"#?RGBE\n"), hdr_header, (3, 32),
           ".hdr"),
    Format("JPEG 2000", _prefix(b"\0\0\0\x0cjP  \r\n\x87\n"), jp2_header, (4, 16), ".jp2"),
    Format("JPEG 2000 codestream", _prefix(b"\xff\x4f\xff\x51"), j2k_header, (4, 16), None),
    Format("GIF", _prefix(b"GIF87a", b"GIF89a"), gif_header, (4, 8), ".gif"),
    Format("Sun raster", _prefix(b"\x59\xa6\x6a\x95"), sun_header, (4, 8), ".ras"),
    Format("AVIF", _is_avif, avif_header, (4, 16), ".avif"),
)


def identify(data: bytes) -> Format | None:
    """The table's entry whose signature the bytes carry, else None (not decoded)."""
    return next((f for f in FORMATS if f.matches(data)), None)


def claimed_header(data: bytes) -> Header | None:
    """Every size the header claims, the image first, and its depth (the format's worst
    where the header does not say it, or says zero); None when the format is unknown or its
    header does not say the size (or says zero). Never raises."""
    fmt = identify(data)
    try:
        header = fmt.header(data) if fmt else None
    except (struct.error, ValueError, IndexError, TypeError, OverflowError):
        return None
    if not header or not header.sizes or None in header.sizes or min(header.sizes[0]) <= 0:
        return None
    depth = header.depth if header.depth and min(header.depth) > 0 else fmt.worst
    return Header([(int(w), int(h)) for w, h in header.sizes], (int(depth[0]), int(depth[1])))


def claimed_sizes(data: bytes) -> list[Size] | None:
    """Every size the header claims, the image first (see :func:`claimed_header`)."""
    header = claimed_header(data)
    return header.sizes if header else None
