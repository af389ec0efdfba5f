"""DBNet (PP-OCR det) decoding on synthetic probability maps, and the built-in text model end to end.

Expected boxes are computed here from the DBNet rule: a region's rotated rectangle (w, h) grows by
d = w * h * unclip_ratio / (2 * (w + h)) on every side. The pixel convention of OpenCV's contours
(a contour runs through the centres of the boundary pixels) is checked first, explicitly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from visionpipe.errors import UnknownOutputLayoutError
from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders import DecodeParams, build_decoder
from visionpipe.models.decoders.dbnet import DbnetDecoder

H, W = 120, 200
F32 = np.dtype("float32")


def decoder(h: int = H, w: int = W, input_hw: tuple[int, int] | None = None, **options) -> DbnetDecoder:
    return DbnetDecoder([TensorInfo("p", (1, 1, h, w), F32)], input_hw or (h, w), **options)


def run(dec: DbnetDecoder, prob: np.ndarray, **params):
    (cands,) = dec.decode([prob[None, None].astype(np.float32)], DecodeParams(**params))
    return cands


def fill(prob: np.ndarray, x0: int, y0: int, x1: int, y1: int, value: float = 0.9) -> None:
    """Fill the pixel block of columns x0..x1 and rows y0..y1 (inclusive)."""
    prob[y0 : y1 + 1, x0 : x1 + 1] = value


def grow(w: float, h: float, ratio: float = 1.6) -> float:
    return w * h * ratio / (2 * (w + h))


def expected_box(x0, y0, x1, y1, ratio=1.6, h=H, w=W, scale=1.0):
    """A block of columns x0..x1 has a contour rectangle from x0 to x1 (width x1 - x0), grown by d."""
    d = grow(x1 - x0, y1 - y0, ratio)
    return (
        min(max((x0 - d) * scale, 0), w * scale),
        min(max((y0 - d) * scale, 0), h * scale),
        min(max((x1 + d) * scale, 0), w * scale),
        min(max((y1 + d) * scale, 0), h * scale),
    )


def sorted_boxes(cands) -> np.ndarray:
    order = np.argsort(cands.xyxy[:, 0])
    return cands.xyxy[order]


# -- the OpenCV convention the expectations rely on ------------------------------------------------


@pytest.mark.parametrize("x0, y0, x1, y1", [(5, 10, 30, 20), (0, 0, 9, 3), (17, 40, 18, 90)])
def test_opencv_contour_rect_of_a_filled_block_spans_pixel_centres(x0, y0, x1, y1):
    mask = np.zeros((100, 60), np.uint8)
    mask[y0 : y1 + 1, x0 : x1 + 1] = 1
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    assert len(contours) == 1
    (cx, cy), (rw, rh), angle = cv2.minAreaRect(contours[0])
    corners = cv2.boxPoints(((cx, cy), (rw, rh), angle))
    assert corners[:, 0].min() == pytest.approx(x0) and corners[:, 0].max() == pytest.approx(x1)
    assert corners[:, 1].min() == pytest.approx(y0) and corners[:, 1].max() == pytest.approx(y1)
    assert sorted([rw, rh]) == pytest.approx(sorted([x1 - x0, y1 - y0]))
    assert (cx, cy) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2))


# -- axis-aligned regions ---------------------------------------------------------------------------

BLOCKS = [(10, 20, 60, 30), (80, 10, 99, 70), (120, 50, 190, 110)]


@pytest.mark.parametrize("ratio", [1.6, 1.0, 2.5])
def test_each_rectangle_gives_one_box_grown_by_the_unclip_rule(ratio):
    prob = np.zeros((H, W), np.float32)
    for block in BLOCKS:
        fill(prob, *block)
    cands = run(decoder(dilate=False, unclip_ratio=ratio), prob)
    assert len(cands.xyxy) == len(BLOCKS)
    expected = np.array([expected_box(*b, ratio=ratio) for b in BLOCKS])
    np.testing.assert_allclose(sorted_boxes(cands), expected, atol=2e-3)
    np.testing.assert_allclose(cands.scores, 0.9, atol=1e-5)
    assert cands.class_ids.tolist() == [0, 0, 0]


def test_box_numbers_for_one_block_worked_by_hand():
    # columns 10..60, rows 20..30: contour rect 50 x 10; d = 50*10*1.6 / (2*60) = 20/3
    prob = np.zeros((H, W), np.float32)
    fill(prob, 10, 20, 60, 30)
    cands = run(decoder(dilate=False), prob)
    np.testing.assert_allclose(cands.xyxy, [[10 - 20 / 3, 20 - 20 / 3, 60 + 20 / 3, 30 + 20 / 3]], atol=2e-3)


def test_polygon_has_four_points_at_the_box_corners():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 30, 40, 90, 60)
    cands = run(decoder(dilate=False), prob)
    poly = cands.data["polygon"]
    assert poly.shape == (1, 4, 2)
    x0, y0, x1, y1 = expected_box(30, 40, 90, 60)
    want = sorted([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    got = sorted(map(tuple, poly[0].tolist()))
    np.testing.assert_allclose(got, want, atol=2e-3)
    # the box is the polygon's extent
    np.testing.assert_allclose(
        cands.xyxy[0], [poly[0, :, 0].min(), poly[0, :, 1].min(), poly[0, :, 0].max(), poly[0, :, 1].max()]
    )


def test_dilation_grows_the_region_by_one_pixel_in_each_dimension():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 40, 30, 100, 50)  # contour rect 60 x 20 without dilation
    plain = run(decoder(dilate=False), prob).xyxy[0]
    dilated = run(decoder(dilate=True), prob).xyxy[0]
    w_plain, h_plain = 60 + 2 * grow(60, 20), 20 + 2 * grow(60, 20)
    w_dil, h_dil = 61 + 2 * grow(61, 21), 21 + 2 * grow(61, 21)
    assert plain[2] - plain[0] == pytest.approx(w_plain, abs=2e-3)
    assert plain[3] - plain[1] == pytest.approx(h_plain, abs=2e-3)
    assert dilated[2] - dilated[0] == pytest.approx(w_dil, abs=2e-3)
    assert dilated[3] - dilated[1] == pytest.approx(h_dil, abs=2e-3)


def test_boxes_are_clipped_to_the_input():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 0, 0, 40, 15)  # touches the top-left corner
    fill(prob, 150, 100, W - 1, H - 1)  # touches the bottom-right corner
    cands = run(decoder(dilate=False), prob)
    boxes = sorted_boxes(cands)
    np.testing.assert_allclose(boxes, [expected_box(0, 0, 40, 15), expected_box(150, 100, W - 1, H - 1)], atol=2e-3)
    assert boxes[0, 0] == 0 and boxes[0, 1] == 0 and boxes[1, 2] == W and boxes[1, 3] == H
    poly = cands.data["polygon"]
    assert (poly[..., 0] >= 0).all() and (poly[..., 0] <= W).all()
    assert (poly[..., 1] >= 0).all() and (poly[..., 1] <= H).all()


def test_map_is_read_in_its_own_pixels_whatever_the_nominal_input_size():
    # With "fit" preprocessing the tensor (and so DBNet's same-size map) is smaller than the model's
    # nominal input size; boxes are in map pixels = tensor pixels, never rescaled to the nominal size.
    h, w = 60, 100
    prob = np.zeros((h, w), np.float32)
    fill(prob, 10, 10, 40, 25)
    cands = run(decoder(h, w, input_hw=(2 * h, 2 * w), dilate=False), prob)
    np.testing.assert_allclose(cands.xyxy, [expected_box(10, 10, 40, 25, h=h, w=w)], atol=5e-3)
    assert cands.xyxy[:, 2].max() <= w and cands.xyxy[:, 3].max() <= h


def test_batch_of_maps_gives_one_candidate_set_per_image():
    maps = np.zeros((2, 1, H, W), np.float32)
    fill(maps[0, 0], 10, 10, 50, 30)
    fill(maps[1, 0], 100, 60, 150, 90)
    fill(maps[1, 0], 10, 60, 50, 100)
    dec = DbnetDecoder([TensorInfo("p", (2, 1, H, W), F32)], (H, W), dilate=False)
    first, second = dec.decode([maps], DecodeParams())
    np.testing.assert_allclose(first.xyxy, [expected_box(10, 10, 50, 30)], atol=2e-3)
    np.testing.assert_allclose(
        sorted_boxes(second), [expected_box(10, 60, 50, 100), expected_box(100, 60, 150, 90)], atol=2e-3
    )


# -- rotated region ---------------------------------------------------------------------------------


def test_rotated_rectangle_gives_one_rotated_box():
    prob = np.zeros((H, W), np.float32)
    centre, size, angle = (100.0, 60.0), (90.0, 26.0), 30.0
    corners = cv2.boxPoints((centre, size, angle))
    cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], 0.9)
    # the region as rasterised: the rotated rectangle around its pixel centres (about the drawn size)
    (_, _), (rw, rh), _ = cv2.minAreaRect(cv2.findNonZero((prob > 0).astype(np.uint8)))
    assert sorted([rw, rh]) == pytest.approx(sorted(size), abs=2.0)  # precondition
    cands = run(decoder(dilate=False), prob)
    assert len(cands.xyxy) == 1
    poly = cands.data["polygon"][0]
    assert poly.shape == (4, 2)
    (cx, cy), (pw, ph), pangle = cv2.minAreaRect(poly.astype(np.float32))
    assert (cx, cy) == pytest.approx(centre, abs=1.0)
    # the polygon keeps the region's orientation: its sides are at 30 degrees (modulo 90)
    assert min(abs((pangle - angle) % 90), 90 - abs((pangle - angle) % 90)) < 2.0
    d = grow(rw, rh)
    assert sorted([pw, ph]) == pytest.approx(sorted([rw + 2 * d, rh + 2 * d]), abs=0.5)
    # and the grown polygon is much larger than the drawn one: d is about 16 px here
    assert d == pytest.approx(grow(*size), abs=1.0) and d > 15
    assert 0.85 <= cands.scores[0] <= 0.9 + 1e-6  # mean inside: the region, perhaps a few edge zeros


# -- scoring and filtering --------------------------------------------------------------------------


def test_score_is_the_mean_probability_inside_the_region():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 20, 20, 59, 49, 0.9)  # columns 20..39 at 0.9 ...
    fill(prob, 40, 20, 59, 49, 0.5)  # ... and 40..59 at 0.5: equal halves, mean 0.7
    cands = run(decoder(dilate=False), prob)
    assert len(cands.scores) == 1
    assert cands.scores[0] == pytest.approx(0.7, abs=1e-5)


def test_regions_with_a_low_mean_are_dropped():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 10, 10, 60, 40, 0.9)
    fill(prob, 100, 10, 160, 40, 0.4)  # above the 0.3 binarisation, below a 0.5 box threshold
    dec = decoder(dilate=False)
    strict = run(dec, prob, conf=0.5)
    np.testing.assert_allclose(strict.xyxy, [expected_box(10, 10, 60, 40)], atol=2e-3)
    lenient = run(dec, prob, conf=0.3)
    assert len(lenient.xyxy) == 2
    assert sorted(lenient.scores.tolist()) == pytest.approx([0.4, 0.9], abs=1e-5)


def test_regions_below_the_binary_threshold_are_not_regions():
    prob = np.full((H, W), 0.29, np.float32)
    cands = run(decoder(dilate=False), prob, conf=0.0)
    assert len(cands.xyxy) == 0
    cands = run(decoder(dilate=False, binary_threshold=0.2), prob, conf=0.0)
    assert len(cands.xyxy) == 1  # now the whole map is one region


def test_tiny_regions_are_dropped():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 10, 10, 12, 60)  # 3 columns: contour width 2 < min_size 3
    fill(prob, 30, 30, 30, 30)  # a single pixel
    fill(prob, 50, 10, 52, 11)  # 3 x 2 pixels
    fill(prob, 80, 10, 83, 60)  # 4 columns: contour width 3, kept
    cands = run(decoder(dilate=False), prob)
    np.testing.assert_allclose(cands.xyxy, [expected_box(80, 10, 83, 60)], atol=2e-3)


def test_min_size_option():
    prob = np.zeros((H, W), np.float32)
    fill(prob, 10, 10, 18, 80)  # contour width 8
    fill(prob, 40, 10, 52, 80)  # contour width 12
    cands = run(decoder(dilate=False, min_size=10), prob)
    np.testing.assert_allclose(cands.xyxy, [expected_box(40, 10, 52, 80)], atol=2e-3)
    assert len(run(decoder(dilate=False, min_size=3), prob).xyxy) == 2


def test_grown_box_must_also_be_large_enough():
    # a 4x4 block: contour 3 x 3 passes min_size 3; grown by 3*3*r/12 per side it must reach 3 + 2
    prob = np.zeros((H, W), np.float32)
    fill(prob, 50, 50, 53, 53)
    assert 3 + 2 * grow(3, 3, 1.6) >= 5  # 5.4: kept
    assert len(run(decoder(dilate=False, unclip_ratio=1.6), prob).xyxy) == 1
    assert 3 + 2 * grow(3, 3, 0.5) < 5  # 3.75: dropped
    assert len(run(decoder(dilate=False, unclip_ratio=0.5), prob).xyxy) == 0


def test_max_candidates_caps_the_regions_considered():
    prob = np.zeros((H, W), np.float32)
    for block in BLOCKS:
        fill(prob, *block)
    assert len(run(decoder(dilate=False, max_candidates=1), prob).xyxy) == 1
    assert len(run(decoder(dilate=False, max_candidates=2), prob).xyxy) == 2


@pytest.mark.parametrize("dilate", [True, False])
def test_empty_map_gives_no_boxes_and_an_empty_polygon_array(dilate):
    cands = run(decoder(dilate=dilate), np.zeros((H, W), np.float32))
    assert cands.xyxy.shape == (0, 4)
    assert cands.scores.shape == (0,)
    assert cands.class_ids.shape == (0,)
    assert cands.data["polygon"].shape == (0, 4, 2)


# -- layout checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outputs",
    [
        [TensorInfo("p", (1, 2, H, W), F32)],
        [TensorInfo("p", (1, H, W), F32)],
        [TensorInfo("p", (1, 1, H, W), F32), TensorInfo("q", (1, 1, H, W), F32)],
        [TensorInfo("p", (1, 85, 8400), F32)],
    ],
    ids=["two-channels", "rank3", "two-outputs", "detector-layout"],
)
def test_wrong_layouts_raise_unknown_output_layout(outputs):
    with pytest.raises(UnknownOutputLayoutError) as info:
        build_decoder("dbnet", outputs, (H, W))
    err = info.value
    assert "dbnet" in str(err)
    assert err.output_shapes == [o.shape for o in outputs]
    assert "dbnet" in err.families


def test_unknown_option_raises_unknown_output_layout():
    with pytest.raises(UnknownOutputLayoutError):
        build_decoder("dbnet", [TensorInfo("p", (1, 1, H, W), F32)], (H, W), {"box_thresh": 0.6})


@pytest.mark.parametrize("family", ["dbnet", "ppocr", "DB"])
def test_build_decoder_accepts_a_probability_map(family):
    dec = build_decoder(family, [TensorInfo("p", ("batch", 1, "h", "w"), F32)], (H, W), {"dilate": False})
    assert isinstance(dec, DbnetDecoder)
    assert dec.applies_nms is False


# -- the real built-in model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_pipeline():
    from visionpipe import Pipeline
    from visionpipe.models.zoo import BUILTINS

    builtin = BUILTINS["ppocr-text"]
    # rapidocr is a core dependency: its absence is a broken install, not a reason to skip
    assert builtin.locate() is not None, "the rapidocr package (which ships the PP-OCR model) is not installed"
    with Pipeline(builtin.to_spec()) as pipe:
        yield pipe


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_builtin_text_model_finds_large_printed_text(text_pipeline):
    height, width = 300, 640
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, "HELLO 2024", (60, 160), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5)
    ys, xs = np.nonzero(image[..., 0] < 128)
    ink = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert ink[2] - ink[0] > 250 and ink[3] - ink[1] > 30  # precondition: large text was drawn

    dets = text_pipeline(image)
    assert len(dets) >= 1
    assert dets.class_names == ("text",)
    best = max(dets.xyxy.tolist(), key=lambda box: iou(box, ink))
    assert iou(best, ink) > 0.5, (best, ink)
    polygons = dets.data["polygon"]
    assert polygons.shape == (len(dets), 4, 2)
    assert (polygons[..., 0] >= 0).all() and (polygons[..., 0] <= width).all()
    assert (polygons[..., 1] >= 0).all() and (polygons[..., 1] <= height).all()
    assert ((dets.confidence > 0.5) & (dets.confidence <= 1)).all()


@pytest.mark.parametrize("shape", [(960, 960), (200, 300), (300, 640), (480, 640)])
def test_builtin_text_model_finds_nothing_on_a_blank_page(text_pipeline, shape):
    """A uniformly white page holds no text, whatever its aspect ratio."""
    dets = text_pipeline(np.full((*shape, 3), 255, np.uint8))
    assert len(dets) == 0, dets.xyxy.round(1).tolist()
    assert dets.data["polygon"].shape == (0, 4, 2)
