"""Tests of visionpipe.postprocess.nms against a plain greedy reference written here.

The reference is deliberately naive: Python loops, a stable sort by descending score (ties keep the
lower original index first), IoU in float64 with its own formula, and "suppress only when IoU is
strictly above the threshold".
"""

from __future__ import annotations

import importlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionpipe.errors import InputShapeError
from visionpipe.postprocess.nms import nms

# `visionpipe.postprocess.nms` the attribute is the function (re-exported); fetch the module itself.
nms_module = importlib.import_module("visionpipe.postprocess.nms")

# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def ref_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = area_a + area_b - inter
    if union <= 0:
        return 0.0
    return inter / union


def ref_nms(boxes, scores, iou, class_ids=None, top_k=None, max_det=None) -> list[int]:
    boxes = [tuple(float(v) for v in box) for box in np.asarray(boxes).tolist()]  # plain Python floats
    scores = [float(s) for s in np.asarray(scores).tolist()]
    class_ids = None if class_ids is None else [int(c) for c in np.asarray(class_ids).tolist()]
    n = len(boxes)
    # Python's sort is stable: equal scores keep ascending index order.
    order = sorted(range(n), key=lambda i: -scores[i])
    if top_k is not None:
        order = order[:top_k]
    kept: list[int] = []
    for i in order:
        if max_det is not None and len(kept) >= max_det:
            break  # same result as truncating the kept list afterwards, just faster
        suppressed = False
        for j in kept:
            if class_ids is not None and class_ids[i] != class_ids[j]:
                continue
            if ref_iou(boxes[i], boxes[j]) > iou:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    if max_det is not None:
        kept = kept[:max_det]
    return kept


def check(boxes, scores, iou, class_ids=None, top_k=None, max_det=None):
    got = nms(boxes, scores, iou, class_ids=class_ids, top_k=top_k, max_det=max_det)
    expected = ref_nms(boxes, scores, iou, class_ids=class_ids, top_k=top_k, max_det=max_det)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.int64 and got.ndim == 1
    assert got.tolist() == expected
    return got


def test_reference_sanity():
    # The reference itself, on cases worked out by hand, so a broken reference cannot hide a bug.
    assert ref_iou([0, 0, 2, 1], [0, 0, 1, 1]) == 0.5
    assert ref_iou([0, 0, 10, 10], [1, 1, 11, 11]) == pytest.approx(81 / 119)
    assert ref_iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]
    assert ref_nms(boxes, [0.9, 0.8, 0.7], 0.5) == [0, 2]
    assert ref_nms(boxes, [0.5, 0.5, 0.5], 0.5) == [0, 2]
    assert ref_nms(boxes, [0.5, 0.9, 0.5], 0.5) == [1, 2]
    assert ref_nms(boxes, [0.9, 0.8, 0.7], 0.5, class_ids=[0, 1, 0]) == [0, 1, 2]
    assert ref_nms(boxes, [0.9, 0.8, 0.7], 0.5, top_k=1) == [0]
    assert ref_nms(boxes, [0.9, 0.8, 0.7], 0.9, max_det=2) == [0, 1]


# --------------------------------------------------------------------------------------------
# Deterministic cases
# --------------------------------------------------------------------------------------------

CLASSIC = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)  # IoU(0, 1) = 81/119


def test_classic_three_boxes():
    # Box 1 overlaps box 0 with IoU 0.68 > 0.5 and has the lower score: suppressed.
    assert nms(CLASSIC, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist() == [0, 2]
    # Above the overlap, nothing is suppressed; output is in descending score order.
    assert nms(CLASSIC, np.array([0.7, 0.8, 0.9], np.float32), 0.7).tolist() == [2, 1, 0]
    # The highest-scoring box of the overlapping pair wins, wherever it sits.
    assert nms(CLASSIC, np.array([0.5, 0.9, 0.7], np.float32), 0.5).tolist() == [1, 2]
    # Class-aware: boxes 0 and 1 are of different classes, so both survive.
    assert nms(CLASSIC, np.array([0.9, 0.8, 0.7], np.float32), 0.5, class_ids=np.array([0, 1, 0])).tolist() == [0, 1, 2]
    assert nms(CLASSIC, np.array([0.9, 0.8, 0.7], np.float32), 0.5, class_ids=np.array([3, 3, 1])).tolist() == [0, 2]


def test_iou_exactly_at_threshold_is_not_suppressed():
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float32)  # IoU exactly 1/2
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4999).tolist() == [0]
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2]], np.float64)  # IoU exactly 2/6
    assert nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert nms(boxes, scores, 0.333).tolist() == [0]


def test_identical_boxes_equal_scores_keep_lowest_index():
    box = [5, 5, 15, 15]
    boxes = np.array([box, box, box], np.float32)
    assert nms(boxes, np.array([0.5, 0.5, 0.5], np.float32), 0.5).tolist() == [0]
    assert nms(boxes, np.array([0.5, 0.9, 0.9], np.float32), 0.5).tolist() == [1]
    # Threshold 1: IoU 1 is not strictly above it, so duplicates all survive, ties in index order.
    assert nms(boxes, np.array([0.5, 0.9, 0.9], np.float32), 1.0).tolist() == [1, 2, 0]


def test_zero_area_boxes_never_suppress():
    boxes = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 4, 4], [2, 0, 2, 4]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), 0.0).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("class_ids", [None, np.zeros(0, np.int64)])
def test_empty_input(class_ids):
    out = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5, class_ids=class_ids)
    assert out.dtype == np.int64 and out.shape == (0,)


@pytest.mark.parametrize("class_ids", [None, np.array([0, 1, 0])])
def test_max_det_zero_and_top_k_zero(class_ids):
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    for kwargs in ({"max_det": 0}, {"top_k": 0}):
        out = nms(CLASSIC, scores, 0.5, class_ids=class_ids, **kwargs)
        assert out.dtype == np.int64 and out.shape == (0,)


def test_top_k_truncates_before_suppression():
    # Box 3 (lowest score) is disjoint from the others; top_k=3 drops it before NMS even runs.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.1], np.float32)
    assert nms(boxes, scores, 0.5, top_k=3).tolist() == [0]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]


def test_max_det_truncates_after_suppression():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # Box 1 is suppressed, so max_det=2 keeps 0 and 2 (not 0 and 1).
    assert nms(boxes, scores, 0.5, max_det=2).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, max_det=2, class_ids=np.array([0, 1, 1, 0])).tolist() == [0, 1]


def test_accepts_lists_and_float64():
    assert nms(CLASSIC.tolist(), [0.9, 0.8, 0.7], 0.5).tolist() == [0, 2]
    assert nms(CLASSIC.astype(np.float64), np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]


@pytest.mark.parametrize(
    "boxes, scores, class_ids",
    [
        (np.zeros(4), np.zeros(1), None),
        (np.zeros((3, 5)), np.zeros(3), None),
        (np.zeros((3, 4, 1)), np.zeros(3), None),
        (np.zeros((3, 4)), np.zeros(2), None),
        (np.zeros((3, 4)), np.zeros((3, 1)), None),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(2)),
        (np.zeros((3, 4)), np.zeros(3), np.zeros((3, 1))),
    ],
)
def test_wrong_shapes_raise(boxes, scores, class_ids):
    with pytest.raises(InputShapeError):
        nms(boxes, scores, 0.5, class_ids=class_ids)


# --------------------------------------------------------------------------------------------
# Property tests on small random inputs with many ties and exact-threshold overlaps
# --------------------------------------------------------------------------------------------

# Coarse integer grid: IoUs are ratios of small integers, so values like exactly 1/2, 1/3, 2/3
# happen often; zero widths/heights give zero-area boxes.
grid_box = st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 4), st.integers(0, 4)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])
)
thresholds = st.one_of(
    st.sampled_from([0.0, 0.2, 0.25, 1 / 3, 0.4, 0.5, 0.6, 2 / 3, 0.75, 0.8, 1.0]),
    st.floats(0.0, 1.0),
)


@st.composite
def nms_inputs(draw, class_aware: bool):
    pool = draw(st.lists(grid_box, min_size=1, max_size=10))
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=0, max_size=30))  # duplicates likely
    n = len(picks)
    boxes = np.array([pool[p] for p in picks], np.float32).reshape(n, 4)
    scores = np.array(draw(st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=n, max_size=n)), np.float32)
    class_ids = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64) if class_aware else None
    top_k = draw(st.one_of(st.none(), st.integers(0, n + 2)))
    max_det = draw(st.one_of(st.none(), st.integers(0, n + 2)))
    threshold = draw(thresholds)
    return boxes, scores, class_ids, top_k, max_det, threshold


@settings(max_examples=300, deadline=None)
@given(nms_inputs(class_aware=False))
def test_agnostic_matches_reference(case):
    boxes, scores, _, top_k, max_det, threshold = case
    check(boxes, scores, threshold, top_k=top_k, max_det=max_det)


@settings(max_examples=300, deadline=None)
@given(nms_inputs(class_aware=True))
def test_class_aware_matches_reference(case):
    boxes, scores, class_ids, top_k, max_det, threshold = case
    check(boxes, scores, threshold, class_ids=class_ids, top_k=top_k, max_det=max_det)


@settings(max_examples=150, deadline=None)
@given(nms_inputs(class_aware=True), st.booleans())
def test_walk_fallback_matches_reference_on_small_inputs(case, class_aware):
    # The implementation iterates a fixed point a bounded number of times, then walks the boxes one
    # by one. With no fixed-point steps allowed, the walk alone must give the greedy result.
    boxes, scores, class_ids, top_k, max_det, threshold = case
    with mock.patch.object(nms_module, "_FIXED_POINT_STEPS", 0):
        check(boxes, scores, threshold, class_ids=class_ids if class_aware else None, top_k=top_k, max_det=max_det)


@pytest.mark.parametrize("n", [5, 40, 200])
def test_long_overlap_chain_matches_reference(n):
    # Equal boxes shifted right by 0.3 of their width, scores falling left to right: each overlaps
    # the next with IoU 0.7/1.3 > 0.5, so greedy keeps every other box -- a chain as long as the
    # input, far past the fixed-point steps, which forces the walk without patching anything.
    x = np.arange(n) * 3.0
    boxes = np.stack([x, np.zeros(n), x + 10.0, np.full(n, 10.0)], axis=1)
    scores = np.linspace(1.0, 0.5, n)
    kept = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(kept, np.arange(0, n, 2))
    assert kept.tolist() == ref_nms(boxes, scores, 0.5)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 25).flatmap(
        lambda n: st.tuples(
            st.lists(
                st.tuples(*[st.floats(0, 100, width=32)] * 2, *[st.floats(0, 40, width=32)] * 2), min_size=n, max_size=n
            ),
            st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n),
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
        )
    ),
    st.floats(0.05, 0.95),
    st.booleans(),
)
def test_float_boxes_match_reference(data, threshold, class_aware):
    raw, scores, classes = data
    boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in raw], np.float32).reshape(len(raw), 4)
    check(boxes, np.array(scores, np.float32), threshold, class_ids=np.array(classes) if class_aware else None)


# --------------------------------------------------------------------------------------------
# Large inputs: above 2048 boxes (per class) the implementation uses a different algorithm
# --------------------------------------------------------------------------------------------


def _dense_boxes(rng, n, extent=300, size=(40, 120)):
    xy = rng.integers(0, extent, size=(n, 2))
    wh = rng.integers(size[0], size[1], size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.choice(np.linspace(0.05, 1.0, 40), size=n).astype(np.float32)  # many ties
    return boxes, scores


@pytest.mark.parametrize("n", [2048, 2049, 2500])
def test_large_agnostic_matches_reference(n):
    rng = np.random.default_rng(n)
    boxes, scores = _dense_boxes(rng, n)
    boxes[5] = boxes[17]  # an exact duplicate
    kept = check(boxes, scores, 0.5)
    assert 1 < len(kept) < n  # suppression happened, and not everything was suppressed


def test_large_agnostic_with_top_k_and_max_det():
    rng = np.random.default_rng(11)
    boxes, scores = _dense_boxes(rng, 2500)
    check(boxes, scores, 0.45, max_det=30)
    check(boxes, scores, 0.45, top_k=2300, max_det=500)
    check(boxes, scores, 0.45, top_k=1000)  # top_k brings it back under the matrix limit


def test_large_class_aware_matches_reference():
    rng = np.random.default_rng(7)
    boxes, scores = _dense_boxes(rng, 2700)
    # Class 0 has 2200 boxes (scan path), class 1 has 400, class 2 has 100 (matrix path), interleaved.
    class_ids = np.array([0] * 2200 + [1] * 400 + [2] * 100)
    rng.shuffle(class_ids)
    check(boxes, scores, 0.5, class_ids=class_ids)
    check(boxes, scores, 0.5, class_ids=class_ids, max_det=100)
    check(boxes, scores, 0.6, class_ids=class_ids, top_k=2400)


@settings(max_examples=60, deadline=None)
@given(nms_inputs(class_aware=True), st.booleans())
def test_pairs_examined_in_small_chunks_give_the_same_result(case, class_aware):
    # Candidate pairs are processed in bounded chunks; tiny chunks must not change what is kept.
    boxes, scores, class_ids, top_k, max_det, threshold = case
    with mock.patch.object(nms_module, "_PAIRS_PER_CHUNK", 3):
        check(boxes, scores, threshold, class_ids=class_ids if class_aware else None, top_k=top_k, max_det=max_det)
