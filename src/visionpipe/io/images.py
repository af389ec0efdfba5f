"""Decode any supported image input to an 8-bit BGR array, or raise ImageDecodeError saying why."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from visionpipe.errors import ImageDecodeError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]


def describe_source(source: ImageInput) -> str:
    """A short human name for an input, used in errors and results."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def decode_image(source: ImageInput) -> np.ndarray:
    """An HxWx3 uint8 BGR image from a path, encoded bytes or an array.

    EXIF orientation is applied (OpenCV's default). Grayscale and BGRA arrays are converted.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageDecodeError(str(path), "file not found") from None
        except IsADirectoryError:
            raise ImageDecodeError(str(path), "is a directory") from None
        except OSError as exc:
            raise ImageDecodeError(str(path), exc.strerror or str(exc)) from None
        return _from_bytes(data, str(path))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), describe_source(source))
    raise ImageDecodeError(repr(type(source)), "unsupported input type (give a path, bytes or a NumPy array)")


def _from_bytes(data: bytes, name: str) -> np.ndarray:
    if not data:
        raise ImageDecodeError(name, "empty file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(name, "not a decodable image (corrupt, truncated or unsupported format)")
    return image


def _from_array(array: np.ndarray) -> np.ndarray:
    name = describe_source(array)
    if array.size == 0:
        raise ImageDecodeError(name, "array has no pixels")
    if array.dtype != np.uint8:
        raise ImageDecodeError(name, "arrays must be uint8 (convert higher bit depths first)")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.ndim == 3 and array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    raise ImageDecodeError(name, "expected HxW, HxWx3 (BGR) or HxWx4 (BGRA)")
