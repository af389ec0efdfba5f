"""Tests of visionpipe.preprocess: geometry of stretch/letterbox, the box transform, padding, and
channel order / normalisation.

Expected sizes and values are computed here independently: the letterboxed size from exact
rational arithmetic (``fractions.Fraction``), pixel values by hand.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from visionpipe.errors import InputShapeError
from visionpipe.preprocess import (
    INTERPOLATIONS,
    ChannelOrder,
    PadAnchor,
    PreprocessConfig,
    ResizeMode,
    preprocess,
)

GRAY = 60
PAD = 114
RECT_BGR = (0, 200, 250)  # none of these equals GRAY or PAD

# (height, width) of original images
SHAPES = {
    "landscape": (300, 500),
    "portrait": (500, 300),
    "square": (400, 400),
    "smaller-than-input": (50, 80),
    "one-pixel-tall": (1, 200),
    "one-pixel-tall-wide": (1, 2000),
    "one-pixel-wide": (150, 1),
}
INPUT_SIZES = [(320, 320), (256, 384)]  # (height, width)
MODES = [("stretch", "top_left"), ("letterbox", "top_left"), ("letterbox", "center")]


def geometry_cases():
    for name, shape in SHAPES.items():
        for in_size in INPUT_SIZES:
            for resize, anchor in MODES:
                yield pytest.param(
                    shape, in_size, resize, anchor, id=f"{name}-{in_size[0]}x{in_size[1]}-{resize}-{anchor}"
                )


def expected_content_size(shape, input_size, resize):
    """(new_h, new_w) of the resized image inside the input, computed exactly.

    Letterbox keeps the aspect ratio with the largest ratio that fits; the side that limits the
    ratio fills the input exactly, the other is floored to whole pixels (at least 1).
    """
    (h, w), (in_h, in_w) = shape, input_size
    if resize == "stretch":
        return in_h, in_w
    ratio = min(Fraction(in_h, h), Fraction(in_w, w))
    return max(1, math.floor(h * ratio)), max(1, math.floor(w * ratio))


def make_image(shape):
    """Gray image with one filled rectangle; returns the image and the rectangle as x1, y1, x2, y2
    (pixel-edge coordinates: the rectangle covers columns x1..x2-1 and rows y1..y2-1)."""
    h, w = shape
    image = np.full((h, w, 3), GRAY, np.uint8)
    x1, y1 = w // 4, h // 3
    x2, y2 = max(x1 + 1, (3 * w) // 4), max(y1 + 1, (2 * h) // 3 + 1)
    image[y1:y2, x1:x2] = RECT_BGR
    return image, (x1, y1, x2, y2)


def raw_config(resize, anchor, **kw):
    """No normalisation, BGR, nearest: tensor values are the canvas pixels."""
    base = dict(
        resize=resize,
        anchor=anchor,
        pad_value=PAD,
        interpolation="nearest",
        channel_order="bgr",
        scale=1.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    base.update(kw)
    return PreprocessConfig(**base)


# --------------------------------------------------------------------------------------------
# (a) Box transform round trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, input_size, resize, anchor", list(geometry_cases()))
def test_transform_round_trip(shape, input_size, resize, anchor):
    h, w = shape
    image, _ = make_image(shape)
    tensor, transform = preprocess(image, input_size, raw_config(resize, anchor))
    assert tensor.shape == (3, *input_size) and tensor.dtype == np.float32

    rng = np.random.default_rng(0)
    xs = np.sort(rng.uniform(-0.2 * w, 1.2 * w, size=(20, 2)), axis=1)
    ys = np.sort(rng.uniform(-0.2 * h, 1.2 * h, size=(20, 2)), axis=1)
    boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    back = transform.to_original(transform.to_input(boxes), clip=False)
    np.testing.assert_allclose(back, boxes, rtol=1e-9, atol=1e-9 * max(h, w))


@pytest.mark.parametrize("shape, input_size, resize, anchor", list(geometry_cases()))
def test_to_original_clips_to_the_image_by_default(shape, input_size, resize, anchor):
    h, w = shape
    _, transform = preprocess(make_image(shape)[0], input_size, raw_config(resize, anchor))
    in_h, in_w = input_size
    whole_input = np.array([[-5.0, -5.0, in_w + 5.0, in_h + 5.0]])
    np.testing.assert_allclose(transform.to_original(whole_input), [[0, 0, w, h]], atol=1e-9)


def test_stretch_transform_maps_corners_to_input_corners():
    _, transform = preprocess(make_image((300, 500))[0], (256, 384), raw_config("stretch", "top_left"))
    np.testing.assert_allclose(transform.to_input(np.array([[0.0, 0.0, 500.0, 300.0]])), [[0, 0, 384, 256]])
    # A point in the middle: x * 384/500, y * 256/300
    np.testing.assert_allclose(
        transform.to_input(np.array([[125.0, 75.0, 250.0, 150.0]])), [[96.0, 64.0, 192.0, 128.0]]
    )


# --------------------------------------------------------------------------------------------
# (b) Content lands where the transform says
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel_order", ["bgr", "rgb"])
@pytest.mark.parametrize("shape, input_size, resize, anchor", list(geometry_cases()))
def test_rectangle_maps_back_to_where_it_was_drawn(shape, input_size, resize, anchor, channel_order):
    h, w = shape
    image, drawn = make_image(shape)
    original = image.copy()
    tensor, transform = preprocess(image, input_size, raw_config(resize, anchor, channel_order=channel_order))
    np.testing.assert_array_equal(image, original)  # input untouched

    colour = RECT_BGR if channel_order == "bgr" else RECT_BGR[::-1]
    mask = (tensor[0] == colour[0]) & (tensor[1] == colour[1]) & (tensor[2] == colour[2])
    ys, xs = np.nonzero(mask)
    assert len(xs), "rectangle not found in the tensor"
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float64)
    # Nearest-neighbour resizing of a filled rectangle gives a filled rectangle.
    assert mask.sum() == (found[0, 2] - found[0, 0]) * (found[0, 3] - found[0, 1])

    back = transform.to_original(found, clip=False)[0]
    new_h, new_w = expected_content_size(shape, input_size, resize)
    # Within one original pixel, or one input pixel measured in original pixels when downscaling.
    tol_x = max(1.0, w / new_w) + 1e-6
    tol_y = max(1.0, h / new_h) + 1e-6
    assert abs(back[0] - drawn[0]) <= tol_x and abs(back[2] - drawn[2]) <= tol_x, (back, drawn)
    assert abs(back[1] - drawn[1]) <= tol_y and abs(back[3] - drawn[3]) <= tol_y, (back, drawn)


# --------------------------------------------------------------------------------------------
# (c) Padding
# --------------------------------------------------------------------------------------------

# Common camera sizes on common model inputs, besides the synthetic shapes above.
PAD_EXTRA = {
    "vga-416": ((480, 640), (416, 416)),
    "4:3-720-416": ((540, 720), (416, 416)),
    "2:1-1440-416": ((720, 1440), (416, 416)),
    "fullhd-640": ((1080, 1920), (640, 640)),
    "1:2-154-640": ((77, 154), (640, 640)),
}


def padding_cases():
    for name, shape in SHAPES.items():
        for in_size in INPUT_SIZES:
            for anchor in ("top_left", "center"):
                yield pytest.param(shape, in_size, anchor, id=f"{name}-{in_size[0]}x{in_size[1]}-{anchor}")
    for name, (shape, in_size) in PAD_EXTRA.items():
        for anchor in ("top_left", "center"):
            yield pytest.param(shape, in_size, anchor, id=f"{name}-{anchor}")


@pytest.mark.parametrize("shape, input_size, anchor", list(padding_cases()))
def test_letterbox_padding(shape, input_size, anchor):
    h, w = shape
    in_h, in_w = input_size
    image, _ = make_image(shape)
    tensor, transform = preprocess(image, input_size, raw_config("letterbox", anchor))

    is_pad = (tensor == PAD).all(axis=0)
    content = ~is_pad
    ys, xs = np.nonzero(content)
    left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    # The image occupies one solid rectangle; everything else is exactly the pad value.
    assert content.sum() == (right - left) * (bottom - top)
    new_h, new_w = expected_content_size(shape, input_size, "letterbox")
    assert (bottom - top, right - left) == (new_h, new_w)

    pad_left, pad_right, pad_top, pad_bottom = left, in_w - right, top, in_h - bottom
    if anchor == "top_left":
        assert pad_left == 0 and pad_top == 0  # pads only right and bottom
    else:
        assert abs(pad_left - pad_right) <= 1 and abs(pad_top - pad_bottom) <= 1  # both sides

    # The transform agrees with where the pixels are.
    np.testing.assert_allclose(
        transform.to_input(np.array([[0.0, 0.0, w, h]])), [[left, top, right, bottom]], atol=1e-6
    )


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_stretch_never_pads(shape):
    tensor, _ = preprocess(make_image(shape)[0], (256, 384), raw_config("stretch", "top_left"))
    assert not (tensor == PAD).all(axis=0).any()


def test_center_padding_on_known_layout():
    # 100 x 200 (h x w) into 320 x 320: ratio 1.6 -> 160 x 320 content, 80 rows of pad above and below.
    image = np.full((100, 200, 3), GRAY, np.uint8)
    tensor, transform = preprocess(image, (320, 320), raw_config("letterbox", "center"))
    assert (tensor[:, :80] == PAD).all() and (tensor[:, 240:] == PAD).all()
    assert (tensor[:, 80:240] == GRAY).all()
    np.testing.assert_allclose(transform.to_input(np.array([[0.0, 0.0, 200.0, 100.0]])), [[0, 80, 320, 240]])

    tensor, transform = preprocess(image, (320, 320), raw_config("letterbox", "top_left"))
    assert (tensor[:, 160:] == PAD).all() and (tensor[:, :160] == GRAY).all()
    np.testing.assert_allclose(transform.to_input(np.array([[0.0, 0.0, 200.0, 100.0]])), [[0, 0, 320, 160]])


# --------------------------------------------------------------------------------------------
# (d) Channel order and normalisation
# --------------------------------------------------------------------------------------------

BGR = (10, 20, 30)


def _constant(h=4, w=6):
    image = np.empty((h, w, 3), np.uint8)
    image[:] = BGR
    return image


@pytest.mark.parametrize(
    "order, scale, mean, std, expected",
    [
        # raw pixels, as stored (B, G, R)
        ("bgr", 1.0, (0, 0, 0), (1, 1, 1), (10.0, 20.0, 30.0)),
        # reversed to R, G, B
        ("rgb", 1.0, (0, 0, 0), (1, 1, 1), (30.0, 20.0, 10.0)),
        # scale only
        ("rgb", 1 / 255, (0, 0, 0), (1, 1, 1), (30 / 255, 20 / 255, 10 / 255)),
        # mean/std are in the model's channel order (here R, G, B)
        (
            "rgb",
            1 / 255,
            (0.1, 0.2, 0.3),
            (0.5, 0.25, 0.125),
            ((30 / 255 - 0.1) / 0.5, (20 / 255 - 0.2) / 0.25, (10 / 255 - 0.3) / 0.125),
        ),
        # same mean/std but the model takes B, G, R
        (
            "bgr",
            1 / 255,
            (0.1, 0.2, 0.3),
            (0.5, 0.25, 0.125),
            ((10 / 255 - 0.1) / 0.5, (20 / 255 - 0.2) / 0.25, (30 / 255 - 0.3) / 0.125),
        ),
        # ImageNet-style on 0..255 pixels: mean only, then std only
        ("rgb", 1.0, (123.675, 116.28, 103.53), (1, 1, 1), (30 - 123.675, 20 - 116.28, 10 - 103.53)),
        ("bgr", 1.0, (0, 0, 0), (2.0, 4.0, 8.0), (5.0, 5.0, 3.75)),
    ],
)
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_channel_order_and_normalisation(order, scale, mean, std, expected, resize):
    config = PreprocessConfig(resize=resize, channel_order=order, scale=scale, mean=mean, std=std)
    tensor, _ = preprocess(_constant(), (4, 6), config)  # same size: no resizing, no padding
    assert tensor.shape == (3, 4, 6) and tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    for c in range(3):
        np.testing.assert_allclose(tensor[c], np.full((4, 6), expected[c]), rtol=1e-6, atol=1e-6)


def test_normalisation_after_resize_of_constant_image():
    config = PreprocessConfig(
        resize="letterbox",
        anchor="top_left",
        pad_value=114,
        channel_order="rgb",
        scale=1 / 255,
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.25, 0.125),
    )
    tensor, _ = preprocess(_constant(4, 6), (12, 12), config)  # ratio 2: 8 x 12 content, 4 pad rows
    expected_img = ((30 / 255 - 0.1) / 0.5, (20 / 255 - 0.2) / 0.25, (10 / 255 - 0.3) / 0.125)
    expected_pad = ((114 / 255 - 0.1) / 0.5, (114 / 255 - 0.2) / 0.25, (114 / 255 - 0.3) / 0.125)
    for c in range(3):
        np.testing.assert_allclose(tensor[c, :8], expected_img[c], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(tensor[c, 8:], expected_pad[c], rtol=1e-6, atol=1e-6)


def test_default_config():
    config = PreprocessConfig()
    assert config.resize is ResizeMode.LETTERBOX and config.anchor is PadAnchor.CENTER
    assert config.channel_order is ChannelOrder.RGB
    tensor, _ = preprocess(_constant(), (4, 6), config)
    np.testing.assert_allclose(tensor[:, 0, 0], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)


def test_string_options_become_enums():
    config = PreprocessConfig(resize="stretch", anchor="top_left", channel_order="bgr", mean=[1, 2, 3])
    assert config.resize is ResizeMode.STRETCH
    assert config.anchor is PadAnchor.TOP_LEFT
    assert config.channel_order is ChannelOrder.BGR
    assert config.mean == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
def test_every_interpolation_runs(interpolation):
    tensor, _ = preprocess(make_image((300, 500))[0], (320, 320), PreprocessConfig(interpolation=interpolation))
    assert tensor.shape == (3, 320, 320) and np.isfinite(tensor).all()


# --------------------------------------------------------------------------------------------
# (e) Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(10, 10), (0, 10, 3), (10, 0, 3), (0, 0, 3), (10, 10, 4), (10, 10, 1), (10,)],
    ids=["2d", "zero-height", "zero-width", "zero-both", "4-channels", "1-channel", "1d"],
)
def test_bad_images_raise_input_shape_error(shape):
    with pytest.raises(InputShapeError):
        preprocess(np.zeros(shape, np.uint8), (32, 32), PreprocessConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(interpolation="bogus"),
        dict(interpolation="INTER_LINEAR"),
        dict(std=(1.0, 0.0, 1.0)),
        dict(std=(0, 0, 0)),
        dict(mean=(0.5, 0.5)),
        dict(mean=(0.1, 0.2, 0.3, 0.4)),
        dict(std=(1.0,)),
        dict(resize="crop"),
        dict(anchor="bottom_right"),
        dict(channel_order="rgba"),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_config_raises_value_error(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


@pytest.mark.parametrize(
    ("image_hw", "expected_hw"),
    [
        ((480, 640), (480, 640)),  # fits already, multiples of 32: unchanged
        ((1080, 1920), (544, 960)),  # 960/1920 = 0.5 -> 540 rounds to 544, 960
        ((300, 200), (288, 192)),  # never enlarged; 300 -> 288 (nearest multiple), 200 -> 192
        ((10, 10), (32, 32)),  # at least one step
        ((2000, 500), (960, 256)),  # 960/2000 = 0.48 -> 240 rounds to 256
    ],
)
def test_fit_keeps_ratio_rounds_to_the_divisor_and_never_pads(image_hw, expected_hw):
    image = np.full((*image_hw, 3), 200, np.uint8)
    config = PreprocessConfig(resize="fit", scale=1.0, channel_order="bgr", size_divisor=32)
    tensor, transform = preprocess(image, (960, 960), config)
    assert tensor.shape == (3, *expected_hw)
    assert (tensor == 200).all()  # no padding anywhere
    h, w = image_hw
    boxes = np.array([[0.0, 0.0, w, h], [w * 0.25, h * 0.5, w * 0.75, h]])
    np.testing.assert_allclose(transform.to_input(boxes)[0], [0, 0, expected_hw[1], expected_hw[0]], atol=1e-9)
    np.testing.assert_allclose(transform.to_original(transform.to_input(boxes), clip=False), boxes, atol=1e-6)
