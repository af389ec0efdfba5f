"""The pixel size an encoded image declares, read by visionpipe itself from the raw bytes.

The decoder allocates what the header declares before it reads a single pixel, so the pixel limit
has to be checked on the same header the decoder will read. Pillow's header reader gives up on
files the native decoders accept (an unusual JPEG marker before the frame header, for instance),
and OpenCV's own cap is fixed when it is imported, so the size is parsed here for every format
OpenCV decodes, walking the structure the way the native decoder does. Where a format allows
several declarations (frames, tiles, thumbnails, grid cells), the largest counts.

:func:`declared_size` returns ``(height, width)``, the order of every size in visionpipe (see
:mod:`visionpipe.geometry`; the parsers below read the formats' own width-first order); it raises :class:`HeaderError` when a recognised
format's header gives no size, and returns None for data of no format OpenCV decodes.
"""

from __future__ import annotations

import re
import struct

from visionpipe.errors import HeaderError


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` declared by the header (the largest declaration), or None if no known format.

    Example::

        declared_size(cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes())  # (48, 64)
    """
    for accepts, parse in _PARSERS:
        if accepts(data):
            try:
                size = parse(data)
            except (struct.error, IndexError, ValueError) as exc:
                if isinstance(exc, HeaderError):
                    raise
                raise HeaderError("the header ends early or is malformed") from None
            if size is None:
                raise HeaderError("the header declares no image size")
            width, height = size
            return height, width
    return None


# -- JPEG ------------------------------------------------------------------------------------------

# start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field: TEM, RST0-7, SOI, EOI
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """Walk the markers as libjpeg does (junk bytes and fill bytes skipped, unknown markers
    skipped by their length instead of refused) and return the largest frame header's size.

    libjpeg reads the first frame header and refuses a second one; taking the largest of all
    the frame headers met before the first scan can only be stricter than that.
    """
    pos, sizes = 2, []
    while pos < len(data):
        if data[pos] != 0xFF:  # junk between segments: libjpeg skips it byte by byte
            pos += 1
            continue
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _NO_LENGTH:
            if marker == 0xD9:
                break
            continue
        if pos + 2 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if marker in _SOF and pos + 7 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            # a zero height is defined later by a DNL marker, which libjpeg does not support
            sizes.append((width, max(height, 1)))
        if marker == 0xDA:
            break  # the first scan: libjpeg has its frame header by now
        pos += max(length, 2)
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# -- PNG, GIF, BMP, Sun raster ---------------------------------------------------------------------


def _png(data: bytes) -> tuple[int, int] | None:
    # IHDR must be the first chunk; APNG frames may not exceed it
    if data[12:16] != b"IHDR":
        raise HeaderError("the first chunk is not IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif(data: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to cover every image descriptor (frames may overhang it)."""
    width, height = struct.unpack("<HH", data[6:10])
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            left, top, w, h, image_flags = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
            width, height = max(width, left + w), max(height, top + h)
            pos += 10 + (3 * 2 ** ((image_flags & 7) + 1) if image_flags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)  # after the LZW minimum code size
        else:
            break
    return width, height


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _bmp(data: bytes) -> tuple[int, int] | None:
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _sun_raster(data: bytes) -> tuple[int, int] | None:
    width, height = struct.unpack(">II", data[4:12])
    return width, height


# -- WebP ------------------------------------------------------------------------------------------


def _webp(data: bytes) -> tuple[int, int] | None:
    sizes = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + min(length, 64)]
        if kind == b"VP8X" and len(body) >= 10:
            sizes.append((1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")))
        elif kind == b"VP8 " and len(body) >= 10:
            width, height = struct.unpack("<HH", body[6:10])
            sizes.append((width & 0x3FFF, height & 0x3FFF))
        elif kind == b"VP8L" and len(body) >= 5:
            bits = int.from_bytes(body[1:5], "little")
            sizes.append((1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)))
        elif kind == b"ANMF" and len(body) >= 12:  # an animation frame: offset and size on the canvas
            x, y = 2 * int.from_bytes(body[0:3], "little"), 2 * int.from_bytes(body[3:6], "little")
            w, h = 1 + int.from_bytes(body[6:9], "little"), 1 + int.from_bytes(body[9:12], "little")
            sizes.append((x + w, y + h))
        pos += 8 + length + (length & 1)
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# -- TIFF ------------------------------------------------------------------------------------------

_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8), 8: ("h", 2), 9: ("i", 4)}
_TIFF_SIZE_TAGS = {256: "width", 257: "height", 322: "tile_width", 323: "tile_height"}


def _tiff(data: bytes) -> tuple[int, int] | None:
    """The first directory's image size (OpenCV decodes the first page), grown to its tile size."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    if big:
        offset = struct.unpack(order + "Q", data[8:16])[0]
        count = struct.unpack(order + "Q", data[offset : offset + 8])[0]
        entry_size, entries_at, value_at = 20, offset + 8, 12
    else:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[offset : offset + 2])[0]
        entry_size, entries_at, value_at = 12, offset + 2, 8
    found: dict[str, int] = {}
    for i in range(min(count, 4096)):
        entry = data[entries_at + i * entry_size : entries_at + (i + 1) * entry_size]
        if len(entry) < entry_size:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in _TIFF_SIZE_TAGS and kind in _TIFF_TYPES:
            code, size = _TIFF_TYPES[kind]
            found[_TIFF_SIZE_TAGS[tag]] = abs(struct.unpack(order + code, entry[value_at : value_at + size])[0])
    if "width" not in found or "height" not in found:
        return None
    width, height = found["width"], found["height"]
    tile = found.get("tile_width", 0) * found.get("tile_height", 0)
    return (width, height) if tile <= width * height else (found["tile_width"], found["tile_height"])


# -- portable maps, Radiance HDR -------------------------------------------------------------------


def _pnm(data: bytes) -> tuple[int, int] | None:
    """P1-P6 and PF/Pf: magic, then width and height as text, comments (#...) allowed between."""
    text = re.sub(rb"#[^\n\r]*", b" ", data[2:4096])
    numbers = re.match(rb"\s*(\d{1,12})\s+(\d{1,12})", text)
    return (int(numbers.group(1)), int(numbers.group(2))) if numbers else None


def _pam(data: bytes) -> tuple[int, int] | None:
    header = data[: data.find(b"ENDHDR")] if b"ENDHDR" in data[:4096] else data[:4096]
    width = re.search(rb"(?m)^\s*WIDTH\s+(\d{1,12})", header)
    height = re.search(rb"(?m)^\s*HEIGHT\s+(\d{1,12})", header)
    return (int(width.group(1)), int(height.group(1))) if width and height else None


def _hdr(data: bytes) -> tuple[int, int] | None:
    match = re.search(rb"\n\s*([-+])([YX])\s+(\d{1,12})\s+([-+])([YX])\s+(\d{1,12})", data[:65536])
    if not match:
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (second, first) if match.group(2) == b"Y" else (first, second)


# -- JPEG 2000 -------------------------------------------------------------------------------------


def _j2k_codestream(data: bytes) -> tuple[int, int] | None:
    """SIZ segment: the reference grid less its offset; more than 4 components is refused, since
    the decoder allocates a plane for each (up to 16384 of them)."""
    if data[2:4] != b"\xff\x51":
        raise HeaderError("the codestream does not start with a SIZ segment")
    xsiz, ysiz, xoff, yoff = struct.unpack(">IIII", data[8:24])
    components = struct.unpack(">H", data[40:42])[0]
    if components > 4:
        raise HeaderError(f"{components} image components (at most 4 are decoded)")
    return max(xsiz - xoff, 0), max(ysiz - yoff, 0)


def _jp2(data: bytes) -> tuple[int, int] | None:
    """The boxes' ihdr and the codestream's SIZ: the larger of the two."""
    sizes, pos = [], 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if length == 1:
            length, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        if kind == b"jp2h":  # a superbox: look inside
            pos += header
            continue
        if kind == b"ihdr":
            height, width = struct.unpack(">II", data[pos + 8 : pos + 16])
            sizes.append((width, height))
        elif kind == b"jp2c":
            stream = _j2k_codestream(data[pos + header :])
            if stream:
                sizes.append(stream)
            break
        if length == 0:
            break
        pos += max(length, header)
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# -- AVIF (HEIF) -----------------------------------------------------------------------------------


def _avif(data: bytes) -> tuple[int, int] | None:
    """The largest image spatial extent ('ispe') property: grids and their cells each carry one."""
    sizes, start = [], 0
    while (at := data.find(b"ispe", start)) >= 0:
        width, height = struct.unpack(">II", data[at + 8 : at + 16])
        sizes.append((width, height))
        start = at + 4
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


_PARSERS = [
    (lambda d: d[:3] == b"\xff\xd8\xff", _jpeg),
    (lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    (lambda d: d[:2] == b"BM", _bmp),
    (lambda d: d[:4] == b"\x59\xa6\x6a\x95", _sun_raster),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    (lambda d: len(d) > 2 and d[0:1] == b"P" and d[1:2] in b"123456Ff" and d[2:3].isspace(), _pnm),
    (lambda d: d[:3] == b"P7\n", _pam),
    (lambda d: d[:2] == b"#?", _hdr),
    (lambda d: d[:4] == b"\xff\x4f\xff\x51", _j2k_codestream),
    (lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n", _jp2),
    (lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis", b"mif1", b"msf1", b"heic", b"heix"), _avif),
]
