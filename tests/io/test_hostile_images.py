"""The pixel limit holds whatever the header parser makes of a file (issue: a JPEG with an unusual
marker before its frame header got past Pillow's header check and cost 6 GB to decode).

Every hostile file is built here from a real photo or from OpenCV's own encoder; sizes are checked
against the test's construction (the values it wrote into the header), never against the code.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import visionpipe.io.images as images_module
from visionpipe.errors import ImageDecodeError
from visionpipe.io import DecodeLimits, decode_image
from visionpipe.io.image_header import declared_size

PHOTO = "coco/images/val2017/000000000139.jpg"  # 640 x 426


class NoDecode:
    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise AssertionError("the decoder ran on a file whose header is over the limit")


def sof_offset(jpeg: bytes) -> int:
    """Position of the first SOF0/SOF2 marker, found by walking the segments the test knows."""
    pos = 2
    while True:
        assert jpeg[pos] == 0xFF
        marker = jpeg[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return pos
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")


def hostile_jpeg(photo: bytes, width: int = 60000, height: int = 60000) -> bytes:
    """The photo with a TEM marker (FF 01, no length: libjpeg skips it, Pillow gives up on it)
    after SOI, and its frame header declaring ``width`` x ``height``."""
    sof = sof_offset(photo)
    data = bytearray(photo)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[:2]) + b"\xff\x01" + bytes(data[2:])


@pytest.mark.real
def test_jpeg_with_unusual_marker_and_huge_frame_is_refused_before_decoding(asset, monkeypatch):
    data = hostile_jpeg(asset(PHOTO).read_bytes())
    with pytest.raises(Exception):  # the bypass: Pillow cannot read this header at all
        Image.open(io.BytesIO(data)).size  # noqa: B018
    spy = NoDecode()
    monkeypatch.setattr(images_module.cv2, "imdecode", spy)
    with pytest.raises(ImageDecodeError, match="60000x60000"):
        decode_image(data)
    assert spy.calls == 0


@pytest.mark.real
def test_the_same_marker_with_the_true_size_still_decodes(asset):
    """The marker itself is legal: libjpeg skips it, so the photo decodes at its real size."""
    photo = asset(PHOTO).read_bytes()
    image = decode_image(hostile_jpeg(photo, 640, 426))
    assert image.shape == (426, 640, 3)


@pytest.mark.real
def test_four_hostile_jpegs_cost_little_memory_and_time(asset, tmp_path):
    """In a child process (so native allocations count): peak RSS stays far below one decode of
    the declared frame (60000 x 60000 x 3 = 10.8 GB) and the four refusals are quick."""
    data = hostile_jpeg(asset(PHOTO).read_bytes())
    paths = []
    for i in range(4):
        path = tmp_path / f"bomb{i}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    script = (
        "import json, sys, time\n"
        "from visionpipe.io import decode_image\n"
        "from visionpipe.errors import ImageDecodeError\n"
        "start = time.perf_counter(); errors = []\n"
        "for p in sys.argv[1:]:\n"
        "    try: decode_image(p); errors.append(None)\n"
        "    except ImageDecodeError as e: errors.append(str(e))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps({'errors': errors, 'seconds': time.perf_counter() - start, 'hwm_kb': int(hwm)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(e and "60000x60000" in e for e in report["errors"]), report
    assert report["hwm_kb"] < 400 * 1024, report  # an interpreter with NumPy and OpenCV: ~100 MB
    assert report["seconds"] < 5, report


def encoded(ext: str, width: int, height: int) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if ext == ".pfm":
        image = image.astype(np.float32) / 255
    ok, data = cv2.imencode(ext, image)
    assert ok, ext
    return data.tobytes()


FORMATS = [".jpg", ".png", ".bmp", ".tif", ".webp", ".ppm", ".pam", ".pfm", ".ras", ".hdr", ".gif", ".jp2"]


@pytest.mark.parametrize("ext", FORMATS)
def test_each_format_opencv_writes_has_its_size_read_from_the_header(ext):
    # (height, width), as the decoded array's shape: 64 wide, 48 high
    assert declared_size(encoded(ext, 64, 48)) == (48, 64)
    assert decode_image(encoded(ext, 64, 48)).shape == (48, 64, 3)


def test_avif_size_is_read_from_its_ispe_box():
    assert declared_size(encoded(".avif", 64, 48)) == (48, 64)


def _edit(data: bytes, at: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


# header edits the test makes by hand: where each format keeps its size, per its specification
HUGE = {
    ".png": lambda d: _edit(d, 16, ">II", 30000, 30000),
    ".bmp": lambda d: _edit(d, 18, "<ii", 30000, -30000),
    ".ras": lambda d: _edit(d, 4, ">II", 30000, 30000),
    ".gif": lambda d: _edit(d, 6, "<HH", 30000, 30000),
    ".ppm": lambda d: b"P6\n30000 30000\n255\n" + d[d.index(b"255\n") + 4 :],
    ".pam": lambda d: d.replace(b"WIDTH 64", b"WIDTH 30000").replace(b"HEIGHT 48", b"HEIGHT 30000"),
    ".hdr": lambda d: d.replace(b"-Y 48 +X 64", b"-Y 30000 +X 30000"),
    ".jp2": lambda d: d.replace(struct.pack(">II", 48, 64), struct.pack(">II", 30000, 30000), 1),
}


@pytest.mark.parametrize("ext", sorted(HUGE))
def test_a_header_edited_to_declare_a_huge_image_is_refused_before_decoding(ext, monkeypatch):
    data = HUGE[ext](encoded(ext, 64, 48))
    spy = NoDecode()
    monkeypatch.setattr(images_module.cv2, "imdecode", spy)
    with pytest.raises(ImageDecodeError, match="30000x30000"):
        decode_image(data)
    assert spy.calls == 0


def test_a_max_pixels_above_pillows_own_cap_is_honoured(monkeypatch):
    """Pillow refuses anything over 2 x 89.5 MP outright; our limit, not Pillow's, decides."""
    width, height = 15000, 13000  # 195 MP
    assert width * height > 2 * Image.MAX_IMAGE_PIXELS
    png = encoded(".png", 8, 8)
    data = _edit(png, 16, ">II", width, height)
    seen = []
    monkeypatch.setattr(images_module.cv2, "imdecode", lambda *a: seen.append(1))  # decode nothing
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode_image(data, DecodeLimits(max_pixels=200_000_000))
    assert seen == [1]  # allowed through to the decoder
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 190 MP"):
        decode_image(data, DecodeLimits(max_pixels=190_000_000))


def test_data_of_no_known_format_is_named_without_decoding(monkeypatch):
    spy = NoDecode()
    monkeypatch.setattr(images_module.cv2, "imdecode", spy)
    with pytest.raises(ImageDecodeError, match="unrecognised format"):
        decode_image(b"GIF00a" + bytes(100))
    assert spy.calls == 0


def test_a_jpeg_without_a_frame_header_is_refused():
    with pytest.raises(ImageDecodeError, match="no image size"):
        decode_image(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02" + bytes(50) + b"\xff\xd9")
