"""Unit tests for visionpipe.geometry: box layout conversions, IoU, clipping and scaling.

Expected values are worked out by hand in the comments, or by a plain Python reference written
here, never taken from the functions under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from visionpipe.errors import InputShapeError, VisionpipeError
from visionpipe.geometry import (
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    scale_boxes,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

# --------------------------------------------------------------------------------------------
# Layout conversions on hand-computed examples
# --------------------------------------------------------------------------------------------

# (x1, y1, x2, y2) | (x, y, w, h) | (cx, cy, w, h)
HAND_BOXES = [
    ((1.0, 2.0, 4.0, 6.0), (1.0, 2.0, 3.0, 4.0), (2.5, 4.0, 3.0, 4.0)),
    ((0.0, 0.0, 4.0, 2.0), (0.0, 0.0, 4.0, 2.0), (2.0, 1.0, 4.0, 2.0)),
    ((-3.0, -1.0, 5.0, 1.0), (-3.0, -1.0, 8.0, 2.0), (1.0, 0.0, 8.0, 2.0)),
    ((7.0, 7.0, 7.0, 7.0), (7.0, 7.0, 0.0, 0.0), (7.0, 7.0, 0.0, 0.0)),  # zero-size box
    ((10.5, 20.25, 11.0, 30.75), (10.5, 20.25, 0.5, 10.5), (10.75, 25.5, 0.5, 10.5)),
]
XYXY = np.array([b[0] for b in HAND_BOXES])
XYWH = np.array([b[1] for b in HAND_BOXES])
CXCYWH = np.array([b[2] for b in HAND_BOXES])


def test_xyxy_to_xywh_hand_computed():
    np.testing.assert_array_equal(xyxy_to_xywh(XYXY), XYWH)


def test_xywh_to_xyxy_hand_computed():
    np.testing.assert_array_equal(xywh_to_xyxy(XYWH), XYXY)


def test_xyxy_to_cxcywh_hand_computed():
    np.testing.assert_array_equal(xyxy_to_cxcywh(XYXY), CXCYWH)


def test_cxcywh_to_xyxy_hand_computed():
    np.testing.assert_array_equal(cxcywh_to_xyxy(CXCYWH), XYXY)


@pytest.mark.parametrize("fn", [xyxy_to_xywh, xywh_to_xyxy, xyxy_to_cxcywh, cxcywh_to_xyxy])
def test_conversions_keep_input_unchanged_and_shape(fn):
    boxes = XYXY.copy()
    out = fn(boxes)
    np.testing.assert_array_equal(boxes, XYXY)  # the input is not modified in place
    assert out.shape == boxes.shape
    assert out is not boxes


@pytest.mark.parametrize("fn", [xyxy_to_xywh, xywh_to_xyxy, xyxy_to_cxcywh, cxcywh_to_xyxy])
def test_conversions_of_empty_arrays(fn):
    out = fn(np.zeros((0, 4), np.float32))
    assert out.shape == (0, 4)


@pytest.mark.parametrize("fn", [xyxy_to_xywh, xywh_to_xyxy, xyxy_to_cxcywh, cxcywh_to_xyxy])
def test_conversions_keep_float32(fn):
    assert fn(XYXY.astype(np.float32)).dtype == np.float32


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 12), st.just(4)), elements=finite))
def test_random_round_trips(raw):
    # Build valid xyxy boxes from arbitrary numbers: sort each coordinate pair.
    xs = np.sort(raw[:, 0::2], axis=1)
    ys = np.sort(raw[:, 1::2], axis=1)
    xyxy = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    tol = dict(rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy, **tol)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy)), xyxy, **tol)
    # xywh -> xyxy -> cxcywh agrees with the direct centre computation.
    xywh = xyxy_to_xywh(xyxy)
    expected_c = np.stack(
        [
            xyxy[:, 0] + (xyxy[:, 2] - xyxy[:, 0]) / 2,
            xyxy[:, 1] + (xyxy[:, 3] - xyxy[:, 1]) / 2,
            xyxy[:, 2] - xyxy[:, 0],
            xyxy[:, 3] - xyxy[:, 1],
        ],
        axis=1,
    )
    np.testing.assert_allclose(xyxy_to_cxcywh(xywh_to_xyxy(xywh)), expected_c, **tol)


# --------------------------------------------------------------------------------------------
# Area and IoU
# --------------------------------------------------------------------------------------------


def test_box_area_hand_computed():
    boxes = np.array([[0, 0, 2, 3], [1, 1, 1, 5], [5, 5, 4, 4], [0.5, 0.5, 1.0, 2.5]], np.float64)
    # 2*3=6; zero width -> 0; inverted box -> clipped to 0; 0.5*2 = 1
    np.testing.assert_array_equal(box_area(boxes), [6.0, 0.0, 0.0, 1.0])


def _ref_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),  # identical
        ([0, 0, 2, 2], [5, 5, 7, 7], 0.0),  # disjoint
        ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),  # touching edges only
        ([0, 0, 2, 2], [1, 0, 3, 2], 1 / 3),  # half of each overlaps: inter 2, union 6
        ([0, 0, 2, 1], [0, 0, 1, 1], 0.5),  # b is the left half of a: inter 1, union 2
        ([0, 0, 4, 4], [1, 1, 3, 3], 0.25),  # containment: 4 / 16
        ([0, 0, 10, 10], [1, 1, 11, 11], 81 / 119),  # inter 9*9, union 100+100-81
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),  # two identical zero-area boxes: 0, not NaN
        ([0, 0, 4, 4], [2, 2, 2, 2], 0.0),  # a point inside a box
        ([0, 0, 4, 4], [1, 0, 1, 4], 0.0),  # a vertical line inside a box
    ],
)
def test_box_iou_hand_computed(a, b, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        iou = box_iou(np.array([a], np.float64), np.array([b], np.float64))
        iou_t = box_iou(np.array([b], np.float64), np.array([a], np.float64))
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(expected, abs=1e-12)
    assert iou_t[0, 0] == pytest.approx(expected, abs=1e-12)
    assert not np.isnan(iou).any()


def test_box_iou_matrix_shape_and_values_against_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(7, 2))
    wh = rng.uniform(0, 30, size=(7, 2))
    wh[0] = 0  # one zero-area box
    a = np.concatenate([xy, xy + wh], axis=1)[:3]
    b = np.concatenate([xy, xy + wh], axis=1)[2:]
    iou = box_iou(a, b)
    assert iou.shape == (3, 5)
    expected = np.array([[_ref_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(iou, expected, rtol=1e-12, atol=1e-12)
    # Box a[2] and b[0] are the same box.
    assert iou[2, 0] == pytest.approx(1.0)
    assert ((iou >= 0) & (iou <= 1)).all()


def test_box_iou_empty_inputs():
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert box_iou(np.ones((2, 4)), np.zeros((0, 4))).shape == (2, 0)


def test_box_iou_float32_stays_float32():
    a = np.array([[0, 0, 2, 2]], np.float32)
    assert box_iou(a, a).dtype == np.float32


# --------------------------------------------------------------------------------------------
# Clip and scale
# --------------------------------------------------------------------------------------------


def test_clip_boxes_hand_computed():
    boxes = np.array([[-5.0, -3.0, 15.0, 25.0], [2.0, 3.0, 4.0, 5.0], [12.0, 22.0, 30.0, 40.0], [-9.0, 1.0, -1.0, 2.0]])
    original = boxes.copy()
    out = clip_boxes(boxes, width=10, height=20)
    expected = np.array([[0, 0, 10, 20], [2, 3, 4, 5], [10, 20, 10, 20], [0, 1, 0, 2]], np.float64)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(boxes, original)  # returns a new array
    assert out is not boxes


def test_clip_boxes_takes_width_and_height_by_name_only():
    # a positional pair could be (height, width) as sizes are elsewhere, or (width, height): refused
    with pytest.raises(TypeError):
        clip_boxes(np.zeros((1, 4)), 10, 20)  # type: ignore[misc]


def test_clip_boxes_float_limits():
    out = clip_boxes(np.array([[-1.0, -1.0, 100.0, 100.0]], np.float32), width=10.5, height=7.25)
    np.testing.assert_array_equal(out, [[0, 0, 10.5, 7.25]])
    assert out.dtype == np.float32


def test_scale_boxes_hand_computed():
    boxes = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 10.0]])
    out = scale_boxes(boxes, 2.0, 3.0, 10.0, 20.0)
    # x' = 2x + 10, y' = 3y + 20
    np.testing.assert_array_equal(out, [[12, 26, 16, 32], [10, 20, 30, 50]])
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4], [0, 0, 10, 10]])


def test_scale_boxes_default_offsets_and_fractional_scale():
    out = scale_boxes(np.array([[4.0, 8.0, 12.0, 16.0]]), 0.5, 0.25)
    np.testing.assert_array_equal(out, [[2.0, 2.0, 6.0, 4.0]])


def test_scale_boxes_inverse():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 100, size=(10, 4))
    sx, sy, ox, oy = 0.37, 1.9, 12.5, -3.0
    back = scale_boxes(scale_boxes(boxes, sx, sy, ox, oy), 1 / sx, 1 / sy, -ox / sx, -oy / sy)
    np.testing.assert_allclose(back, boxes, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Shape errors
# --------------------------------------------------------------------------------------------

BAD_SHAPES = [(4,), (3, 3), (2, 5), (2, 4, 1), ()]


@pytest.mark.parametrize("shape", BAD_SHAPES)
@pytest.mark.parametrize(
    "fn",
    [
        xyxy_to_xywh,
        xywh_to_xyxy,
        xyxy_to_cxcywh,
        cxcywh_to_xyxy,
        box_area,
        lambda b: clip_boxes(b, width=10, height=10),
        lambda b: scale_boxes(b, 1.0, 1.0),
        lambda b: box_iou(b, np.zeros((1, 4))),
        lambda b: box_iou(np.zeros((1, 4)), b),
    ],
)
def test_wrong_shapes_raise_input_shape_error(fn, shape):
    with pytest.raises(InputShapeError):
        fn(np.zeros(shape))


def test_input_shape_error_is_a_visionpipe_error():
    with pytest.raises(VisionpipeError):
        xyxy_to_xywh(np.zeros((3,)))


def test_integer_boxes_are_promoted_not_truncated():
    # half of (10, 10, 20, 20) is (5, 5, 10, 10); an integer result would floor fractional scales
    np.testing.assert_array_equal(scale_boxes(np.array([[10, 10, 20, 20]]), 0.5, 0.5), [[5.0, 5.0, 10.0, 10.0]])
    np.testing.assert_array_equal(scale_boxes(np.array([[3, 3, 5, 5]]), 0.5, 0.5), [[1.5, 1.5, 2.5, 2.5]])
    np.testing.assert_array_equal(
        clip_boxes(np.array([[10, 10, 20, 20]]), width=15.5, height=12.5), [[10.0, 10.0, 15.5, 12.5]]
    )
