"""Decode any supported image input to an 8-bit BGR array, or raise ImageDecodeError saying why.

Limits are checked before any pixel is decoded: the byte size first, then the pixel count read from
the header by visionpipe's own parsers (``image_header``: the largest size the file declares,
found the way the native decoder finds it), so a decompression bomb never reaches the decoder.
Grayscale, palette, RGBA and 16-bit images become 8-bit BGR; EXIF orientation is applied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from visionpipe.errors import ImageDecodeError
from visionpipe.io.files import InputFileError, read_file
from visionpipe.io.image_header import HeaderError, declared_size

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray

# IMREAD_COLOR converts gray/palette/alpha to 3-channel BGR and applies EXIF orientation;
# ANYDEPTH keeps 16-bit samples so they are scaled down rather than truncated.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


@dataclass(frozen=True)
class DecodeLimits:
    """Inputs above these are rejected before decoding."""

    max_pixels: int = 50_000_000
    max_bytes: int = 200 * 1024 * 1024


DEFAULT_LIMITS = DecodeLimits()


def describe_source(source: object) -> str:
    """A short human name for an input, used in errors and results."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, ImageDecodeError):  # an input that failed before reaching the pipeline
        return source.source
    return f"<{type(source).__name__}>"


def decode_image(source: ImageInput, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """An HxWx3 uint8 BGR image from a path, encoded bytes or an array."""
    if isinstance(source, np.ndarray):
        return _from_array(source, limits)
    if isinstance(source, (str, os.PathLike)):
        return _from_bytes(
            _read_file(source if isinstance(source, Path) else Path(source), limits), str(source), limits
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise ImageDecodeError(
                describe_source(source), f"{len(data)} bytes exceeds the limit of {limits.max_bytes}"
            )
        return _from_bytes(data, describe_source(source), limits)
    raise ImageDecodeError(describe_source(source), "unsupported input type (give a path, bytes or a NumPy array)")


def _read_file(path: Path, limits: DecodeLimits) -> bytes:
    try:
        return read_file(path, limits.max_bytes)
    except InputFileError as exc:
        raise ImageDecodeError(exc.path, exc.cause) from None


def _from_bytes(data: bytes, name: str, limits: DecodeLimits) -> np.ndarray:
    if not data:
        raise ImageDecodeError(name, "empty file")
    _check_header(data, name, limits)
    if data[:2] == b"\xff\xd8" and _jpeg_is_truncated(data):
        # some decoders return the rows they could read and grey below: refuse instead
        raise ImageDecodeError(name, "truncated JPEG (the image data ends before its end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    if image is None or image.size == 0:
        raise ImageDecodeError(name, "not a decodable image (corrupt, truncated or unsupported format)")
    if image.shape[0] * image.shape[1] > limits.max_pixels:  # never expected: the header was checked
        raise ImageDecodeError(
            name, f"{image.shape[1]}x{image.shape[0]} exceeds the limit of {limits.max_pixels / 1e6:g} MP"
        )
    return _to_bgr8(image, name)


def _jpeg_is_truncated(data: bytes) -> bool:
    """True when no end-of-image marker follows the first scan.

    Segments before the first scan are skipped by their lengths (an EXIF thumbnail there carries
    its own end marker); entropy-coded data cannot contain the marker, so the first one after the
    scan starts ends the image. Data after it (e.g. a phone's appended video) is not our concern.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: let the decoder judge the file
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) < 0
        if marker == 0xD9:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return True


def _check_header(data: bytes, name: str, limits: DecodeLimits) -> None:
    """Reject images whose header declares more pixels than allowed, without decoding them.

    The size is read by visionpipe's own parsers (``image_header``), walking each format the way
    its native decoder does, so no file reaches a decoder with a size that was not checked.
    """
    try:
        size = declared_size(data)
    except HeaderError as exc:
        raise ImageDecodeError(name, f"unreadable image header ({exc})") from None
    if size is None:
        raise ImageDecodeError(name, "not a decodable image (unrecognised format)")
    height, width = size
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            name,
            f"{width}x{height} = {width * height / 1e6:.1f} MP exceeds the limit of {limits.max_pixels / 1e6:g} MP",
        )


def _to_bgr8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype in (np.float32, np.float64):
        image = cv2.convertScaleAbs(np.clip(image, 0, 1), alpha=255.0)
    elif image.dtype != np.uint8:
        raise ImageDecodeError(name, f"unsupported sample type {image.dtype}")
    return _channels_to_bgr(image, name)


def _from_array(array: np.ndarray, limits: DecodeLimits) -> np.ndarray:
    name = describe_source(array)
    if array.size == 0:
        raise ImageDecodeError(name, "array has no pixels")
    if array.ndim not in (2, 3):
        raise ImageDecodeError(name, "expected HxW, HxWx3 (BGR) or HxWx4 (BGRA)")
    if array.shape[0] * array.shape[1] > limits.max_pixels:
        raise ImageDecodeError(
            name, f"{array.shape[1]}x{array.shape[0]} exceeds the limit of {limits.max_pixels / 1e6:g} MP"
        )
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(name, "arrays must be uint8 or uint16")
    return _to_bgr8(array, name)


def _channels_to_bgr(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ImageDecodeError(name, f"expected 1, 3 or 4 channels, got shape {image.shape}")


def as_image_input(image: Any) -> Any:
    """A PIL image as the BGR array the pipeline reads (EXIF orientation applied, as for files);
    anything else unchanged. PIL is only imported when such an object is given."""
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        from PIL import ImageOps

        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return image
