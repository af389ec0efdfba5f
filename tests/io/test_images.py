"""decode_image: every supported input becomes an HxWx3 uint8 BGR array, or an ImageDecodeError
that names the input and the cause; limits are enforced before the decoder runs.

Expected pixels come from the test's own construction of each file (a hand-written PNG encoder,
Pillow for JPEG/EXIF/palette files), never from what decode_image returned.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import visionpipe.io.images as images_module
from visionpipe.errors import ImageDecodeError, VisionpipeError
from visionpipe.io import DEFAULT_LIMITS, DecodeLimits, decode_image

PHOTO = "coco/images/val2017/000000000139.jpg"  # 640 x 426 according to the COCO annotation file


# -- helpers: files built by the test itself ----------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def make_png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes | None = None) -> bytes:
    """A PNG written by hand (filter type 0 on every row). ``raw_rows`` are the unfiltered samples;
    None writes a single zero row only, so the header can declare any size at no cost."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if raw_rows is None:
        idat = zlib.compress(b"\x00" * 16)
    else:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
        row_len = width * channels * bit_depth // 8
        assert len(raw_rows) == row_len * height
        idat = zlib.compress(b"".join(b"\x00" + raw_rows[i * row_len : (i + 1) * row_len] for i in range(height)))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def assert_bgr8(image: np.ndarray, height: int, width: int) -> None:
    assert isinstance(image, np.ndarray)
    assert image.dtype == np.uint8
    assert image.shape == (height, width, 3)


# -- real photo, all three input kinds ----------------------------------------------------------------


@pytest.mark.real
def test_real_photo_from_str_path_pathlike_bytes_and_memoryview(asset):
    path = asset(PHOTO)
    data = path.read_bytes()
    outputs = [
        decode_image(str(path)),
        decode_image(path),
        decode_image(data),
        decode_image(bytearray(data)),
        decode_image(memoryview(data)),
    ]
    for out in outputs:
        assert_bgr8(out, 426, 640)  # size from the COCO annotation json
    for out in outputs[1:]:
        assert np.array_equal(out, outputs[0])
    # BGR order: compare with Pillow's RGB decode of the same file (decoders may differ slightly)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(outputs[0][..., ::-1].astype(int) - rgb).mean() < 3
    assert np.abs(outputs[0].astype(int) - rgb).mean() > 10  # the channel order matters for this photo


# -- colour models and bit depths ---------------------------------------------------------------------


def test_grayscale_png_becomes_three_equal_channels():
    gray = np.array([[0, 50, 100], [150, 200, 255]], np.uint8)
    out = decode_image(make_png(3, 2, 8, 0, gray.tobytes()))
    assert_bgr8(out, 2, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray)


def test_grayscale_jpeg_becomes_three_equal_channels():
    gray = np.zeros((32, 48), np.uint8)
    gray[:, :24] = 60
    gray[:, 24:] = 200
    out = decode_image(pil_bytes(Image.fromarray(gray, "L"), "JPEG", quality=95))
    assert_bgr8(out, 32, 48)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert abs(int(out[16, 4, 0]) - 60) <= 3 and abs(int(out[16, 44, 0]) - 200) <= 3


def test_rgba_png_drops_alpha_and_keeps_colour():
    rgba = np.array([[[10, 20, 30, 255], [200, 100, 50, 0]], [[1, 2, 3, 128], [255, 255, 255, 7]]], np.uint8)
    out = decode_image(make_png(2, 2, 8, 6, rgba.tobytes()))
    assert_bgr8(out, 2, 2)
    assert np.array_equal(out, rgba[..., 2::-1])  # RGB -> BGR, alpha ignored (not composited)


def test_palette_png_colours_match_rgb_source():
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 200, 10], [17, 34, 51], [255, 255, 255]], np.uint8)
    index = np.arange(12 * 20).reshape(12, 20) % len(colours)
    rgb = colours[index]
    paletted = Image.fromarray(rgb, "RGB").quantize(colors=len(colours), dither=Image.Dither.NONE)
    assert paletted.mode == "P"
    assert np.array_equal(np.asarray(paletted.convert("RGB")), rgb)  # precondition: lossless palette
    data = pil_bytes(paletted, "PNG")
    assert data[25] == 3  # IHDR colour type 3: the file really is paletted
    out = decode_image(data)
    assert_bgr8(out, 12, 20)
    assert np.array_equal(out, rgb[..., ::-1])


def test_palette_png_with_transparency_keeps_palette_colours():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (10, 120, 240)
    rgb[2:] = (240, 30, 60)
    paletted = Image.fromarray(rgb, "RGB").quantize(colors=2, dither=Image.Dither.NONE)
    assert np.array_equal(np.asarray(paletted.convert("RGB")), rgb)
    paletted.info["transparency"] = 0
    out = decode_image(pil_bytes(paletted, "PNG", transparency=0))
    assert_bgr8(out, 4, 4)
    assert np.array_equal(out, rgb[..., ::-1])


def test_16bit_rgb_png_is_scaled_not_truncated():
    # samples per pixel (R, G, B); 8-bit value = round(v * 255 / 65535) = v / 257 for multiples of 257
    pixels = np.array(
        [[[65535, 0, 32896], [0, 65535, 257 * 10]], [[1000, 65280, 257 * 200], [128, 255, 256]]], np.uint16
    )
    expected_rgb = np.array([[[255, 0, 128], [0, 255, 10]], [[4, 254, 200], [0, 1, 1]]], np.uint8)
    out = decode_image(make_png(2, 2, 16, 2, pixels.astype(">u2").tobytes()))
    assert_bgr8(out, 2, 2)
    assert np.array_equal(out, expected_rgb[..., ::-1])


def test_16bit_grayscale_png_is_scaled():
    samples = np.array([[0, 32896, 65535, 257 * 77]], np.uint16)
    out = decode_image(make_png(4, 1, 16, 0, samples.astype(">u2").tobytes()))
    assert_bgr8(out, 1, 4)
    for c in range(3):
        assert out[0, :, c].tolist() == [0, 128, 255, 77]


def test_16bit_grayscale_png_from_pillow():
    samples = np.array([[0, 32896], [65535, 257]], np.uint16)
    out = decode_image(pil_bytes(Image.fromarray(samples), "PNG"))
    assert_bgr8(out, 2, 2)
    assert out[..., 0].tolist() == [[0, 128], [255, 1]]


def test_uint16_arrays_are_scaled():
    bgr = np.array([[[65535, 0, 32896]]], np.uint16)
    assert decode_image(bgr).tolist() == [[[255, 0, 128]]]
    gray = np.array([[0, 65535], [32896, 257 * 3]], np.uint16)
    out = decode_image(gray)
    assert_bgr8(out, 2, 2)
    assert out[..., 2].tolist() == [[0, 255], [128, 3]]


def test_bgra_array_drops_alpha_and_keeps_bgr_order():
    bgra = np.zeros((3, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 11, 22, 33, 0
    out = decode_image(bgra)
    assert_bgr8(out, 3, 5)
    assert (out == np.array([11, 22, 33], np.uint8)).all()


@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 1)])
def test_gray_arrays_become_three_channels(shape):
    gray = (np.arange(24, dtype=np.uint8) * 10).reshape(shape)
    out = decode_image(gray)
    assert_bgr8(out, 4, 6)
    for c in range(3):
        assert np.array_equal(out[..., c], gray.reshape(4, 6))


def test_bgr_array_values_are_kept():
    bgr = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    original = bgr.copy()
    out = decode_image(bgr)
    assert_bgr8(out, 7, 9)
    assert np.array_equal(out, original)
    assert np.array_equal(bgr, original)


# -- EXIF orientation ---------------------------------------------------------------------------------

# Where the stored top-left and top-right corners are shown for each EXIF orientation value, from the
# EXIF 2.3 definition of tag 0x0112 ("the 0th row is the visual ..., the 0th column is the visual ..."):
#   1 row0=top,    col0=left    2 row0=top,    col0=right   3 row0=bottom, col0=right
#   4 row0=bottom, col0=left    5 row0=left,   col0=top     6 row0=right,  col0=top
#   7 row0=right,  col0=bottom  8 row0=left,   col0=bottom
# Stored top-left is (row0, col0); stored top-right is (row0, last column = opposite of col0).
EXIF_CORNERS = {
    1: ("TL", "TR"),
    2: ("TR", "TL"),
    3: ("BR", "BL"),
    4: ("BL", "BR"),
    5: ("TL", "BL"),
    6: ("TR", "BR"),
    7: ("BR", "TR"),
    8: ("BL", "TL"),
}


def corner_mean(image: np.ndarray, corner: str, size: int = 8) -> np.ndarray:
    h, w = image.shape[:2]
    rows = slice(0, size) if corner[0] == "T" else slice(h - size, h)
    cols = slice(0, size) if corner[1] == "L" else slice(w - size, w)
    return image[rows, cols].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("orientation", sorted(EXIF_CORNERS))
def test_exif_orientation_is_applied(orientation, tmp_path):
    height, width = 48, 80  # non-square, so a rotation changes the shape
    rgb = np.full((height, width, 3), 255, np.uint8)
    rgb[:12, :12] = (255, 0, 0)  # red marker, stored top-left
    rgb[:12, -12:] = (0, 160, 0)  # green marker, stored top-right
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pil_bytes(Image.fromarray(rgb, "RGB"), "JPEG", quality=95, exif=exif)
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation  # precondition
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(data)

    for out in (decode_image(data), decode_image(path)):
        expected_shape = (width, height) if orientation >= 5 else (height, width)
        assert_bgr8(out, *expected_shape)
        red_corner, green_corner = EXIF_CORNERS[orientation]
        red_bgr, green_bgr = np.array([0, 0, 255]), np.array([0, 160, 0])
        assert np.abs(corner_mean(out, red_corner) - red_bgr).max() < 30, (red_corner, corner_mean(out, red_corner))
        assert np.abs(corner_mean(out, green_corner) - green_bgr).max() < 30
        for other in {"TL", "TR", "BL", "BR"} - {red_corner, green_corner}:
            assert corner_mean(out, other).min() > 220  # white: no marker there


# -- errors -------------------------------------------------------------------------------------------


def expect_error(source, *cause_words: str, limits: DecodeLimits = DEFAULT_LIMITS) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(source, limits)
    err = info.value
    message = str(err).lower()
    for word in cause_words:
        assert word.lower() in message, (word, str(err))
    assert isinstance(err, VisionpipeError)
    return err


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    err = expect_error(path, "not found")
    assert str(path) in str(err) and err.source == str(path)
    err = expect_error(str(path), "not found")
    assert str(path) in str(err)


def test_directory(tmp_path):
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    err = expect_error(folder, "directory")
    assert str(folder) in str(err)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    err = expect_error(path, "empty")
    assert str(path) in str(err)


def test_empty_bytes():
    expect_error(b"", "empty")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "readme.jpg"
    path.write_text("hello, I am not a JPEG\n" * 20)
    err = expect_error(path, "not a decodable image")
    assert str(path) in str(err)


@pytest.mark.real
@pytest.mark.parametrize("cut", ["10%", "50%", "90%", "minus2"])
def test_truncated_jpeg(asset, tmp_path, cut):
    data = asset(PHOTO).read_bytes()
    end = len(data) - 2 if cut == "minus2" else len(data) * int(cut[:-1]) // 100
    path = tmp_path / f"cut_{cut}.jpg"
    path.write_bytes(data[:end])
    err = expect_error(path, "truncated")
    assert str(path) in str(err)
    expect_error(data[:end], "truncated")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_png(tmp_path, fraction):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data = make_png(50, 40, 8, 2, pixels.tobytes())
    assert np.array_equal(decode_image(data), pixels[..., ::-1])  # the whole file is fine
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * fraction)])
    err = expect_error(path)
    assert str(path) in str(err) and err.cause


def test_random_bytes():
    noise = np.random.default_rng(3).bytes(5000)
    err = expect_error(noise, "not a decodable image")
    assert "5000 bytes" in str(err)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((8, 8, 3), np.float64), ["uint8"]),
        (np.zeros((8, 8, 3), np.int32), ["uint8"]),
        (np.zeros(64, np.uint8), ["HxW"]),
        (np.zeros((2, 8, 8, 3), np.uint8), ["HxW"]),
        (np.zeros((0, 8, 3), np.uint8), ["no pixels"]),
        (np.zeros((8, 0), np.uint8), ["no pixels"]),
        (np.zeros((8, 8, 2), np.uint8), ["channels"]),
        (np.zeros((8, 8, 5), np.uint8), ["channels"]),
    ],
    ids=["float64", "int32", "ndim1", "ndim4", "zero-rows", "zero-cols", "2ch", "5ch"],
)
def test_non_image_arrays(array, words):
    err = expect_error(array, *words)
    assert str(array.shape) in str(err)  # the message names which array


@pytest.mark.parametrize("value", [42, 3.5, None, ["a.jpg"]])
def test_unsupported_input_type(value):
    err = expect_error(value, "unsupported input type")
    assert type(value).__name__ in str(err)


def test_a_valid_jpeg_with_appended_trailer_still_decodes():
    """Files with data appended after the JPEG end-of-image marker (e.g. phone "motion photos" that
    append a video) are valid JPEGs: libjpeg stops at EOI. The trailer here happens to contain the
    byte pair FF DA, as any few-kilobyte binary trailer almost surely does."""
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 40, 40)
    jpeg = pil_bytes(Image.fromarray(rgb, "RGB"), "JPEG", quality=95)
    assert jpeg.endswith(b"\xff\xd9")
    expected = decode_image(jpeg)
    trailer = b"\x00\x00\x00\x18ftypmp42" + b"\x11\xff\xda\x22" + bytes(64)
    out = decode_image(jpeg + trailer)
    assert np.array_equal(out, expected)


# -- limits -------------------------------------------------------------------------------------------


class DecoderSpy:
    """Stands in for cv2.imdecode: counts calls and fails the test if ``forbid`` is set."""

    def __init__(self, forbid: bool) -> None:
        self.forbid = forbid
        self.calls = 0
        self.real = cv2.imdecode

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.forbid:
            raise AssertionError("cv2.imdecode was called for an input over the pixel limit")
        return self.real(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch):
    def install(forbid: bool) -> DecoderSpy:
        s = DecoderSpy(forbid)
        monkeypatch.setattr(images_module.cv2, "imdecode", s)
        return s

    return install


def test_default_limits():
    assert DEFAULT_LIMITS.max_pixels == 50_000_000
    assert DecodeLimits().max_pixels == 50_000_000


def test_the_spy_sees_normal_decodes(spy):
    s = spy(forbid=False)
    decode_image(make_png(4, 4, 8, 0, bytes(16)))
    assert s.calls == 1


@pytest.mark.parametrize("width, height", [(20000, 20000), (8000, 8000), (7072, 7071)])
def test_header_over_default_pixel_limit_is_rejected_before_decoding(spy, tmp_path, width, height):
    assert width * height > 50_000_000
    data = make_png(width, height, 8, 2)  # a few dozen bytes declaring a huge image
    assert len(data) < 200
    s = spy(forbid=True)
    err = expect_error(data)
    assert s.calls == 0
    assert err.cause
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    err = expect_error(path)
    assert str(path) in str(err)
    assert s.calls == 0


def test_header_just_under_default_limit_reaches_the_decoder(spy):
    assert 7071 * 7071 < 50_000_000
    s = spy(forbid=False)
    expect_error(make_png(7071, 7071, 8, 2))  # declared size is allowed; the (fake) data is not there
    assert s.calls == 1


def test_custom_pixel_limit_on_a_real_png(spy):
    data = make_png(20, 10, 8, 0, bytes(200))
    s = spy(forbid=True)
    err = expect_error(data, "exceeds", limits=DecodeLimits(max_pixels=199))
    assert "20x10" in str(err)
    assert s.calls == 0
    s.forbid = False
    assert_bgr8(decode_image(data, DecodeLimits(max_pixels=200)), 10, 20)


@pytest.mark.real
def test_custom_pixel_limit_on_a_real_jpeg(asset, spy):
    s = spy(forbid=True)
    err = expect_error(asset(PHOTO), "exceeds", limits=DecodeLimits(max_pixels=640 * 426 - 1))
    assert "640x426" in str(err)
    assert s.calls == 0


def test_pixel_limit_applies_to_arrays():
    expect_error(np.zeros((20, 10), np.uint8), "exceeds", limits=DecodeLimits(max_pixels=199))
    assert_bgr8(decode_image(np.zeros((20, 10), np.uint8), DecodeLimits(max_pixels=200)), 20, 10)


def test_pixel_limit_applies_to_formats_pillow_cannot_read():
    """OpenCV reads PAM (P7) files, which Pillow does not identify, so the header check is skipped;
    the limit must still apply (the module says the size is then checked after decoding)."""
    header = b"P7\nWIDTH 40\nHEIGHT 30\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"
    pam = header + bytes(40 * 30 * 3)
    assert_bgr8(decode_image(pam), 30, 40)  # a valid image under the default limit
    expect_error(pam, limits=DecodeLimits(max_pixels=1000))  # 1200 pixels > 1000


def test_file_over_max_bytes_is_rejected_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(make_png(4, 4, 8, 0, bytes(16)) + bytes(2000))

    def no_read(self, *args, **kwargs):
        raise AssertionError(f"{self} was read although it is over max_bytes")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    monkeypatch.setattr(Path, "open", no_read)
    err = expect_error(path, "exceeds", limits=DecodeLimits(max_bytes=1000))
    assert str(path) in str(err)


def test_sparse_file_over_default_max_bytes_is_rejected_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8")
        handle.truncate(DEFAULT_LIMITS.max_bytes + 1)  # sparse: no disk or memory used
    assert path.stat().st_size > DEFAULT_LIMITS.max_bytes

    def no_read(self, *args, **kwargs):
        raise AssertionError("file over max_bytes was read")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    err = expect_error(path, "exceeds")
    assert str(path) in str(err)


def test_bytes_over_max_bytes():
    data = make_png(4, 4, 8, 0, bytes(16))
    expect_error(data, "exceeds", limits=DecodeLimits(max_bytes=len(data) - 1))
    assert_bgr8(decode_image(data, DecodeLimits(max_bytes=len(data))), 4, 4)


def test_a_named_pipe_is_a_named_bad_input_even_with_a_writer(tmp_path):
    """A named pipe reports size 0 and can stream for ever (or block with no writer): only regular
    files are read, so a FIFO is refused by name, whether or not something writes to it."""
    pixels = np.random.default_rng(4).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    data = make_png(100, 100, 8, 2, pixels.tobytes())
    assert len(data) > 20_000
    fifo = tmp_path / "stream.png"
    os.mkfifo(fifo)
    assert fifo.stat().st_size == 0

    def feed() -> None:
        try:
            with open(fifo, "wb") as handle:
                handle.write(data)
        except BrokenPipeError:
            pass  # the reader stopped early: fine

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        expect_error(fifo, "FIFO", limits=DecodeLimits(max_bytes=10_000))
    finally:
        # unblock the writer if decode_image never opened the pipe, then drain it
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + 10
            writer.join(timeout=0.2)
            while writer.is_alive() and time.monotonic() < deadline:
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    pass
                writer.join(timeout=0.05)
        finally:
            os.close(fd)


def test_path_with_a_nul_character_is_a_decode_error():
    with pytest.raises(ImageDecodeError) as info:
        decode_image("photo\x00.jpg")
    assert "photo" in str(info.value)
