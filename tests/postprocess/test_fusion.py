"""Tests of visionpipe.postprocess.fusion against the reference package, ``ensemble-boxes``.

The ``ref_*`` wrappers take visionpipe's setting names (``iou``, ``conf``, ``soft_threshold``,
``soft_method``) and call the package with its own (``iou_thr``, ``skip_box_thr``, ``thresh``,
``method``).

Every method is compared with its ensemble-boxes counterpart to 1e-5 (boxes, scores, labels) on
seeded random inputs (boxes partly outside [0, 1], corners in the wrong order, zero-area boxes) and
on the real detections of two asset models. The three deliberate differences listed in the module
docstring (zero weights drop a model, empty model outputs work everywhere, soft-NMS rescoring) are
tested against what the reference does instead, so the tests document why they differ.

The reference mutates its inputs (NMS scales the caller's score list in place), prints and warns:
it is always called on deep copies, silenced.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings

import ensemble_boxes  # a declared test dependency (the "test" extra): missing, the module errors
import numpy as np
import pytest
from ensemble_boxes import ensemble_boxes_nms as eb_nms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visionpipe.detections import Detections
from visionpipe.postprocess.fusion import (
    CONF_TYPES,
    FusionError,
    FusionMethod,
    consensus_vote,
    fuse,
    nms_fusion,
    non_maximum_weighted,
    soft_nms_fusion,
    weighted_boxes_fusion,
)

TOL = 1e-5
SOFT_METHODS = {"linear": 1, "gaussian": 2}

# --------------------------------------------------------------------------------------------
# Calling the reference and comparing results
# --------------------------------------------------------------------------------------------


def reference(fn, boxes, scores, labels, **kwargs):
    """Call an ensemble-boxes function on deep copies of the inputs, silenced."""
    boxes, scores, labels = copy.deepcopy(boxes), copy.deepcopy(scores), copy.deepcopy(labels)
    if kwargs.get("weights") is not None:
        kwargs["weights"] = copy.deepcopy(kwargs["weights"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        b, s, l = fn(boxes, scores, labels, **kwargs)
    return np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s, np.float64), np.asarray(l, np.float64)


def ref_nms(boxes, scores, labels, weights=None, iou=0.5):
    return reference(ensemble_boxes.nms, boxes, scores, labels, weights=weights, iou_thr=iou)


def ref_soft_nms(boxes, scores, labels, weights=None, iou=0.5, sigma=0.5, soft_threshold=0.001, soft_method="gaussian"):
    return reference(
        ensemble_boxes.soft_nms,
        boxes,
        scores,
        labels,
        weights=weights,
        iou_thr=iou,
        sigma=sigma,
        thresh=soft_threshold,
        method=SOFT_METHODS[soft_method],
    )


def ref_wbf(boxes, scores, labels, weights=None, iou=0.55, conf=0.0, conf_type="avg", allows_overflow=False):
    return reference(
        ensemble_boxes.weighted_boxes_fusion,
        boxes,
        scores,
        labels,
        weights=weights,
        iou_thr=iou,
        skip_box_thr=conf,
        conf_type=conf_type,
        allows_overflow=allows_overflow,
    )


def ref_nmw(boxes, scores, labels, weights=None, iou=0.55, conf=0.0):
    return reference(
        ensemble_boxes.non_maximum_weighted,
        boxes,
        scores,
        labels,
        weights=weights,
        iou_thr=iou,
        skip_box_thr=conf,
    )


def _table(boxes, scores, labels):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([np.asarray(labels, np.float64), np.asarray(scores, np.float64), boxes])


def _canonical(table):
    # np.lexsort: the last key is the primary one -> label, score, x1, y1
    return table[np.lexsort((table[:, 3], table[:, 2], table[:, 1], table[:, 0]))]


def assert_same(ours, ref, exact_order=False, context=""):
    """``ours`` (a Fused) equals the reference's (boxes, scores, labels) to TOL, as multisets (or in
    exactly the same order)."""
    mine = _table(ours.boxes, ours.scores, ours.labels)
    theirs = _table(*ref)
    assert not np.isnan(theirs).any(), f"reference returned NaN {context}"
    assert mine.shape == theirs.shape, f"{len(mine)} fused boxes, reference has {len(theirs)} {context}"
    assert len(ours.models) == len(ours.members) == len(mine), context
    if exact_order:
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL, err_msg=f"order or values differ {context}")
        return
    a, b = _canonical(mine), _canonical(theirs)
    if np.allclose(a, b, rtol=0, atol=TOL):
        return
    # Near-equal sort keys may order the two sides differently: fall back to matching rows.
    unused = np.ones(len(a), bool)
    for row in b:
        close = unused & (np.abs(a - row).max(axis=1) <= TOL)
        assert close.any(), f"reference row {row.tolist()} has no counterpart in ours {context}"
        unused[np.flatnonzero(close)[0]] = False


def prefiltered_count(boxes, scores, weights=None, conf=0.0):
    """How many boxes survive ensemble-boxes' prefilter (score, clipping, zero area, zero weight)."""
    total = 0
    for m, (b, s) in enumerate(zip(boxes, scores)):
        if weights is not None and weights[m] == 0:
            continue
        b = np.asarray(b, np.float64).reshape(-1, 4)
        lo = np.clip(np.minimum(b[:, :2], b[:, 2:]), 0, 1)
        hi = np.clip(np.maximum(b[:, :2], b[:, 2:]), 0, 1)
        area = (hi - lo).prod(axis=1)
        total += int(((area != 0) & (np.asarray(s) >= conf)).sum())
    return total


def assert_counters(fused, n_boxes, n_models):
    """Clustering methods put every surviving box in exactly one cluster."""
    assert int(fused.members.sum()) == n_boxes
    assert (fused.members >= 1).all() and (fused.models >= 1).all()
    assert (fused.models <= fused.members).all() and (fused.models <= n_models).all()


# --------------------------------------------------------------------------------------------
# Random inputs
# --------------------------------------------------------------------------------------------


def random_case(rng, n_models=None, max_boxes=60):
    """1-5 models of 0-60 boxes each, 1-4 labels, weights in (0.1, 3). Most boxes are jittered copies
    of a few objects (so that clusters form), the rest uniform; coordinates in [-0.2, 1.2], about
    10% of corners swapped and 5% of boxes of zero width or height."""
    n_models = int(rng.integers(1, 6)) if n_models is None else n_models
    n_labels = int(rng.integers(1, 5))
    n_objects = int(rng.integers(1, 12))
    centres = rng.uniform(-0.1, 1.1, (n_objects, 2))
    sizes = rng.uniform(0.03, 0.6, (n_objects, 2))
    object_labels = rng.integers(0, n_labels, n_objects)
    boxes, scores, labels = [], [], []
    for _ in range(n_models):
        n = int(rng.integers(0, max_boxes + 1))
        obj = rng.integers(0, n_objects, n)
        wh = sizes[obj] * rng.uniform(0.8, 1.25, (n, 2))
        c = centres[obj] + rng.normal(0, 0.06, (n, 2)) * sizes[obj]
        b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
        uniform = rng.random(n) < 0.3
        b[uniform] = rng.uniform(-0.2, 1.2, (int(uniform.sum()), 4))  # unordered corners half the time
        b = np.clip(b, -0.2, 1.2)
        for axis in (0, 1):
            swap = rng.random(n) < 0.1
            b[swap, axis], b[swap, axis + 2] = b[swap, axis + 2].copy(), b[swap, axis].copy()
            flat = rng.random(n) < 0.05
            b[flat, axis + 2] = b[flat, axis]
        lab = np.where(rng.random(n) < 0.9, object_labels[obj], rng.integers(0, n_labels, n))
        boxes.append(b)
        scores.append(rng.uniform(0.001, 1.0, n))
        labels.append(lab.astype(np.int64))
    weights = rng.uniform(0.1, 3.0, n_models)
    return boxes, scores, labels, weights


def test_random_cases_have_the_advertised_features():
    """Guards the generator: the awkward boxes the reference clips, swaps and drops do occur."""
    rng = np.random.default_rng(1234)
    boxes = np.concatenate([b for _ in range(20) for b in random_case(rng)[0]])
    assert (boxes < 0).any() and (boxes > 1).any()
    assert (boxes[:, 2] < boxes[:, 0]).any() and (boxes[:, 3] < boxes[:, 1]).any()
    assert (boxes[:, 2] == boxes[:, 0]).any() and (boxes[:, 3] == boxes[:, 1]).any()
    assert boxes.min() >= -0.2 and boxes.max() <= 1.2


SEEDS = range(12)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.75])
def test_nms_matches_reference_on_random_inputs(iou):
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        boxes, scores, labels, weights = random_case(rng)
        if prefiltered_count(boxes, scores) == 0:
            continue  # the reference cannot run without boxes (see test_empty_model_outputs)
        ours = nms_fusion(boxes, scores, labels, weights, iou=iou)
        ref = ref_nms(boxes, scores, labels, weights=list(weights), iou=iou)
        assert_same(ours, ref, context=f"(seed {seed})")
        assert (ours.models == 1).all() and (ours.members == 1).all()


@pytest.mark.parametrize(
    "soft_method, iou, sigma, soft_threshold",
    [
        ("linear", 0.3, 0.5, 0.001),
        ("linear", 0.6, 0.5, 0.05),
        ("gaussian", 0.5, 0.5, 0.001),
        ("gaussian", 0.5, 0.1, 0.02),
    ],
)
def test_soft_nms_without_rescoring_matches_reference_on_random_inputs(soft_method, iou, sigma, soft_threshold):
    for seed in SEEDS:
        rng = np.random.default_rng(100 + seed)
        boxes, scores, labels, weights = random_case(rng)
        if prefiltered_count(boxes, scores) == 0:
            continue
        ours = soft_nms_fusion(
            boxes,
            scores,
            labels,
            weights,
            iou=iou,
            sigma=sigma,
            soft_threshold=soft_threshold,
            soft_method=soft_method,
            rescore=False,
        )
        ref = ref_soft_nms(
            boxes,
            scores,
            labels,
            weights=list(weights),
            iou=iou,
            sigma=sigma,
            soft_threshold=soft_threshold,
            soft_method=soft_method,
        )
        # Same per-label order as the reference (labels ascending, each in its swap order).
        assert_same(ours, ref, exact_order=True, context=f"(seed {seed})")


WBF_PARAMS = [(0.4, 0.0), (0.55, 0.1), (0.75, 0.3)]


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("allows_overflow", [False, True])
@pytest.mark.parametrize("iou, conf", WBF_PARAMS)
def test_wbf_matches_reference_on_random_inputs(conf_type, allows_overflow, iou, conf):
    for seed in range(8):
        rng = np.random.default_rng(200 + seed)
        boxes, scores, labels, weights = random_case(rng)
        w = None if seed % 4 == 3 else weights  # the default weights too
        kwargs = {
            "iou": iou,
            "conf": conf,
            "conf_type": conf_type,
            "allows_overflow": allows_overflow,
        }
        ours = weighted_boxes_fusion(boxes, scores, labels, w, **kwargs)
        ref = ref_wbf(boxes, scores, labels, weights=None if w is None else list(w), **kwargs)
        assert_same(ours, ref, exact_order=True, context=f"(seed {seed})")
        assert_counters(ours, prefiltered_count(boxes, scores, conf=conf), len(boxes))


@pytest.mark.parametrize("iou, conf", WBF_PARAMS + [(0.55, 0.0)])
def test_nmw_matches_reference_on_random_inputs(iou, conf):
    for seed in SEEDS:
        rng = np.random.default_rng(300 + seed)
        boxes, scores, labels, weights = random_case(rng)
        w = None if seed % 4 == 3 else weights
        ours = non_maximum_weighted(boxes, scores, labels, w, iou=iou, conf=conf)
        ref = ref_nmw(boxes, scores, labels, weights=None if w is None else list(w), iou=iou, conf=conf)
        assert_same(ours, ref, exact_order=True, context=f"(seed {seed})")
        assert_counters(ours, prefiltered_count(boxes, scores, conf=conf), len(boxes))


def dense_case(rng, n_models=3, n_boxes=60, n_objects=4):
    """One or two crowded classes: many boxes a few percent apart, so that clusters chain, grow
    and compete for new boxes (and each class is much longer than any batching window)."""
    base = rng.uniform(0.1, 0.6, (n_objects, 2))
    size = rng.uniform(0.1, 0.35, (n_objects, 2))
    boxes, scores, labels = [], [], []
    for _ in range(n_models):
        obj = rng.integers(0, n_objects, n_boxes)
        lo = base[obj] + rng.normal(0, 0.04, (n_boxes, 2))
        hi = lo + size[obj] * rng.uniform(0.7, 1.3, (n_boxes, 2))
        boxes.append(np.concatenate([lo, hi], axis=1))
        scores.append(rng.uniform(0.01, 1.0, n_boxes))
        labels.append((rng.random(n_boxes) < 0.2).astype(np.int64))
    return boxes, scores, labels, rng.uniform(0.1, 3.0, n_models)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7, 0.85])
def test_wbf_and_nmw_match_reference_on_crowded_classes(iou):
    for seed in range(5):
        boxes, scores, labels, weights = dense_case(np.random.default_rng(1000 + seed))
        for conf_type in ("avg", "box_and_model_avg"):
            ours = weighted_boxes_fusion(boxes, scores, labels, weights, iou=iou, conf_type=conf_type)
            ref = ref_wbf(boxes, scores, labels, weights=list(weights), iou=iou, conf_type=conf_type)
            assert_same(ours, ref, exact_order=True, context=f"(seed {seed}, {conf_type})")
            assert_counters(ours, prefiltered_count(boxes, scores), len(boxes))
        ours = non_maximum_weighted(boxes, scores, labels, weights, iou=iou)
        assert_same(ours, ref_nmw(boxes, scores, labels, weights=list(weights), iou=iou), exact_order=True)
        ours = nms_fusion(boxes, scores, labels, weights, iou=iou)
        assert_same(ours, ref_nms(boxes, scores, labels, weights=list(weights), iou=iou))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    iou=st.floats(0.2, 0.9),
    conf=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
    conf_type=st.sampled_from(CONF_TYPES),
    allows_overflow=st.booleans(),
)
def test_wbf_and_nmw_match_reference_property(seed, iou, conf, conf_type, allows_overflow):
    boxes, scores, labels, weights = random_case(np.random.default_rng(seed), max_boxes=30)
    kw = {"iou": iou, "conf": conf}
    assert_same(
        weighted_boxes_fusion(
            boxes, scores, labels, weights, conf_type=conf_type, allows_overflow=allows_overflow, **kw
        ),
        ref_wbf(
            boxes, scores, labels, weights=list(weights), conf_type=conf_type, allows_overflow=allows_overflow, **kw
        ),
        exact_order=True,
    )
    assert_same(
        non_maximum_weighted(boxes, scores, labels, weights, **kw),
        ref_nmw(boxes, scores, labels, weights=list(weights), **kw),
        exact_order=True,
    )


# --------------------------------------------------------------------------------------------
# Default weights (weights=None)
# --------------------------------------------------------------------------------------------


def test_nms_with_default_weights_matches_reference():
    """ensemble-boxes' NMS leaves scores unscaled when ``weights`` is None (it scales by
    weight / sum(weights) only when weights are given)."""
    boxes = [np.array([[0.1, 0.1, 0.3, 0.3]]), np.array([[0.6, 0.6, 0.9, 0.9]])]
    scores, labels = [np.array([0.9]), np.array([0.8])], [np.array([0]), np.array([0])]
    ref = ref_nms(boxes, scores, labels, weights=None)
    np.testing.assert_allclose(np.sort(ref[1]), [0.8, 0.9])
    np.testing.assert_allclose(np.sort(nms_fusion(boxes, scores, labels, None).scores), [0.8, 0.9], atol=TOL)
    for seed in range(4):
        boxes, scores, labels, _ = random_case(np.random.default_rng(400 + seed), n_models=3)
        ours = nms_fusion(boxes, scores, labels, None, iou=0.5)
        assert_same(ours, ref_nms(boxes, scores, labels, weights=None, iou=0.5), context=f"(seed {seed})")


def test_soft_nms_with_default_weights_matches_reference():
    for seed in range(4):
        boxes, scores, labels, _ = random_case(np.random.default_rng(500 + seed), n_models=3)
        ours = soft_nms_fusion(boxes, scores, labels, None, iou=0.5, soft_threshold=0.01, rescore=False)
        ref = ref_soft_nms(boxes, scores, labels, weights=None, iou=0.5, soft_threshold=0.01)
        assert_same(ours, ref, exact_order=True, context=f"(seed {seed})")


# --------------------------------------------------------------------------------------------
# Soft-NMS rescoring (deliberate difference 3)
# --------------------------------------------------------------------------------------------


def reference_soft_nms_decayed(boxes, scores, labels, weights, iou, sigma, soft_threshold, soft_method):
    """The reference's own soft-NMS step per label, keeping the decayed scores it computes."""
    weights = np.asarray(weights, np.float64)
    scaled = [np.asarray(s, np.float64) * w / weights.sum() for s, w in zip(scores, weights)]
    with contextlib.redirect_stdout(io.StringIO()):
        b, s, l = eb_nms.prepare_boxes(
            np.concatenate([np.asarray(x, np.float64).reshape(-1, 4) for x in boxes]),
            np.concatenate(scaled),
            np.concatenate([np.asarray(x) for x in labels]),
        )
    out_boxes, out_scores, out_labels = [], [], []
    for label in np.unique(l):
        sel = l == label
        sc = s[sel].copy()
        keep = eb_nms.cpu_soft_nms_float(b[sel].copy(), sc, iou, sigma, soft_threshold, SOFT_METHODS[soft_method])
        decayed = sc[sc > soft_threshold]
        assert len(decayed) == len(keep)
        out_boxes.append(b[sel][keep])
        out_scores.append(decayed)
        out_labels.append(np.full(len(keep), label))
    if not out_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
    return np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels).astype(np.float64)


@pytest.mark.parametrize(
    "soft_method, iou, sigma, soft_threshold", [("linear", 0.3, 0.5, 0.001), ("gaussian", 0.5, 0.3, 0.01)]
)
def test_soft_nms_rescore_returns_the_decayed_scores(soft_method, iou, sigma, soft_threshold):
    decayed_somewhere = False
    for seed in SEEDS:
        boxes, scores, labels, weights = random_case(np.random.default_rng(600 + seed))
        kw = {"iou": iou, "sigma": sigma, "soft_threshold": soft_threshold, "soft_method": soft_method}
        ours = soft_nms_fusion(boxes, scores, labels, weights, rescore=True, **kw)
        ref = reference_soft_nms_decayed(boxes, scores, labels, weights, **kw)
        assert_same(ours, ref, exact_order=True, context=f"(seed {seed})")
        plain = soft_nms_fusion(boxes, scores, labels, weights, rescore=False, **kw)
        np.testing.assert_array_equal(ours.boxes, plain.boxes)
        assert (ours.scores <= plain.scores + 1e-12).all()
        decayed_somewhere |= bool((ours.scores < plain.scores - 1e-9).any())
    assert decayed_somewhere  # the comparison above is not vacuous


def test_soft_nms_rescore_is_the_default():
    boxes = [np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.5]])]
    scores, labels = [np.array([0.9, 0.8])], [np.array([0, 0])]
    default = soft_nms_fusion(boxes, scores, labels)
    rescored = soft_nms_fusion(boxes, scores, labels, rescore=True)
    np.testing.assert_array_equal(default.scores, rescored.scores)
    # gaussian decay by hand: IoU = 0.38 * 0.4 / (0.4 * 0.4) = 0.95
    np.testing.assert_allclose(default.scores, [0.9, 0.8 * np.exp(-(0.95**2) / 0.5)], rtol=1e-9)


# --------------------------------------------------------------------------------------------
# Real detections of the asset models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_detections(asset):
    """Per photo, the yolox and nanodet detections (conf 0.01), normalised by the image size."""
    import cv2

    import visionpipe

    pipes = [
        visionpipe.Pipeline({"model": str(asset("models/yolox_nano_416_coco.onnx")), "family": "yolox"}, conf=0.01),
        visionpipe.Pipeline({"model": str(asset("models/nanodet_m_320_coco.onnx")), "family": "nanodet"}, conf=0.01),
    ]
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:6]
    assert len(photos) == 6
    cases = []
    for photo in photos:
        height, width = cv2.imread(str(photo)).shape[:2]
        scale = np.array([width, height, width, height], np.float64)
        boxes, scores, labels = [], [], []
        for pipe in pipes:
            d = pipe(str(photo))
            boxes.append(d.xyxy.astype(np.float64) / scale)
            scores.append(d.confidence.astype(np.float64))
            labels.append(d.class_id.copy())
        assert sum(len(b) for b in boxes) > 0
        cases.append((photo.name, boxes, scores, labels))
    return cases


REAL_WEIGHTS = [[2.0, 1.0], [1.0, 1.0], [0.7, 2.5]]


@pytest.mark.real
@pytest.mark.parametrize("iou", [0.4, 0.6])
@pytest.mark.parametrize("weights", REAL_WEIGHTS)
def test_real_nms(real_detections, iou, weights):
    for name, boxes, scores, labels in real_detections:
        ours = nms_fusion(boxes, scores, labels, weights, iou=iou)
        assert_same(ours, ref_nms(boxes, scores, labels, weights=weights, iou=iou), context=name)


@pytest.mark.real
@pytest.mark.parametrize("soft_method", ["linear", "gaussian"])
@pytest.mark.parametrize("weights", REAL_WEIGHTS[:2])
def test_real_soft_nms(real_detections, soft_method, weights):
    for name, boxes, scores, labels in real_detections:
        kw = {"iou": 0.5, "sigma": 0.5, "soft_threshold": 0.005, "soft_method": soft_method}
        ours = soft_nms_fusion(boxes, scores, labels, weights, rescore=False, **kw)
        assert_same(ours, ref_soft_nms(boxes, scores, labels, weights=weights, **kw), exact_order=True, context=name)
        rescored = soft_nms_fusion(boxes, scores, labels, weights, rescore=True, **kw)
        decayed = reference_soft_nms_decayed(boxes, scores, labels, weights, **kw)
        assert_same(rescored, decayed, exact_order=True, context=name)


@pytest.mark.real
@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("allows_overflow", [False, True])
@pytest.mark.parametrize("iou, conf, weights", [(0.55, 0.0, [2.0, 1.0]), (0.7, 0.05, [1.0, 1.0])])
def test_real_wbf(real_detections, conf_type, allows_overflow, iou, conf, weights):
    kw = {"iou": iou, "conf": conf, "conf_type": conf_type, "allows_overflow": allows_overflow}
    for name, boxes, scores, labels in real_detections:
        ours = weighted_boxes_fusion(boxes, scores, labels, weights, **kw)
        assert_same(ours, ref_wbf(boxes, scores, labels, weights=weights, **kw), exact_order=True, context=name)
        assert_counters(ours, prefiltered_count(boxes, scores, conf=conf), 2)


@pytest.mark.real
@pytest.mark.parametrize("iou, conf", [(0.55, 0.0), (0.4, 0.05), (0.7, 0.2)])
@pytest.mark.parametrize("weights", REAL_WEIGHTS[::2])
def test_real_nmw(real_detections, iou, conf, weights):
    kw = {"iou": iou, "conf": conf}
    for name, boxes, scores, labels in real_detections:
        ours = non_maximum_weighted(boxes, scores, labels, weights, **kw)
        assert_same(ours, ref_nmw(boxes, scores, labels, weights=weights, **kw), exact_order=True, context=name)
        assert_counters(ours, prefiltered_count(boxes, scores, conf=conf), 2)


# --------------------------------------------------------------------------------------------
# Edge cases reported on ensemble-boxes
# --------------------------------------------------------------------------------------------


def _all_methods():
    """(name, ours, reference) with matching settings, for every method and conf_type."""
    out = [
        (
            "nms",
            lambda b, s, l, w: nms_fusion(b, s, l, w, iou=0.5),
            lambda b, s, l, w: ref_nms(b, s, l, w, iou=0.5),
        ),
    ]
    for method in SOFT_METHODS:
        out.append(
            (
                f"soft-nms-{method}",
                lambda b, s, l, w, m=method: soft_nms_fusion(
                    b, s, l, w, iou=0.4, soft_threshold=0.01, soft_method=m, rescore=False
                ),
                lambda b, s, l, w, m=method: ref_soft_nms(b, s, l, w, iou=0.4, soft_threshold=0.01, soft_method=m),
            )
        )
    for conf_type in CONF_TYPES:
        out.append(
            (
                f"wbf-{conf_type}",
                lambda b, s, l, w, c=conf_type: weighted_boxes_fusion(b, s, l, w, iou=0.5, conf_type=c),
                lambda b, s, l, w, c=conf_type: ref_wbf(b, s, l, w, iou=0.5, conf_type=c),
            )
        )
    out.append(
        (
            "nmw",
            lambda b, s, l, w: non_maximum_weighted(b, s, l, w, iou=0.5),
            lambda b, s, l, w: ref_nmw(b, s, l, w, iou=0.5),
        )
    )
    return out


METHODS = _all_methods()
METHOD_IDS = [m[0] for m in METHODS]


@pytest.mark.parametrize("name, ours_fn, ref_fn", METHODS, ids=METHOD_IDS)
def test_zero_weight_model_equals_reference_without_it(name, ours_fn, ref_fn):
    compared = 0
    for seed in range(8):
        rng = np.random.default_rng(700 + seed)
        boxes, scores, labels, weights = random_case(rng, n_models=int(rng.integers(2, 5)))
        dropped = int(rng.integers(0, len(boxes)))
        weights[dropped] = 0.0
        rest = [m for m in range(len(boxes)) if m != dropped]
        sub = ([boxes[m] for m in rest], [scores[m] for m in rest], [labels[m] for m in rest])
        if prefiltered_count(*sub[:2]) == 0:
            continue
        ours = ours_fn(boxes, scores, labels, weights)
        ref = ref_fn(*sub, [float(weights[m]) for m in rest])
        assert_same(ours, ref, exact_order=not name.startswith("nms"), context=f"(seed {seed})")
        compared += 1
    assert compared >= 6


def _zero_weight_case():
    """Model 1 (weight 0) has two overlapping boxes away from model 0's box."""
    boxes = [np.array([[0.1, 0.1, 0.3, 0.3]]), np.array([[0.6, 0.6, 0.9, 0.9], [0.61, 0.6, 0.9, 0.9]])]
    scores = [np.array([0.9]), np.array([0.8, 0.7])]
    labels = [np.array([0]), np.array([0, 0])]
    return boxes, scores, labels, [1.0, 0.0]


def test_zero_weight_is_why_we_drop_the_model():
    """The reference divides by a zero score sum when zero-weight boxes cluster together (WBF) or
    stand alone (NMW), and keeps zero-score boxes in NMS; ours drops the model instead."""
    boxes, scores, labels, weights = _zero_weight_case()
    ref_boxes = ref_wbf(boxes, scores, labels, weights=weights, iou=0.55)[0]
    assert np.isnan(ref_boxes).any()
    assert np.isnan(ref_nmw(boxes, scores, labels, weights=weights)[0]).any()
    ref_scores = ref_nms(boxes, scores, labels, weights=weights)[1]
    assert (ref_scores == 0).any()

    alone = ([boxes[0]], [scores[0]], [labels[0]])
    for fused in (
        weighted_boxes_fusion(boxes, scores, labels, weights),
        non_maximum_weighted(boxes, scores, labels, weights),
        nms_fusion(boxes, scores, labels, weights),
        soft_nms_fusion(boxes, scores, labels, weights, rescore=False),
    ):
        assert not np.isnan(fused.boxes).any() and not np.isnan(fused.scores).any()
        np.testing.assert_allclose(fused.boxes, [[0.1, 0.1, 0.3, 0.3]], atol=TOL)
    assert_same(weighted_boxes_fusion(boxes, scores, labels, weights), ref_wbf(*alone, weights=[1.0]))
    assert_same(non_maximum_weighted(boxes, scores, labels, weights), ref_nmw(*alone, weights=[1.0]))
    assert_same(nms_fusion(boxes, scores, labels, weights), ref_nms(*alone, weights=[1.0]))


def _with_empty_model(empty):
    boxes, scores, labels, weights = random_case(np.random.default_rng(800), n_models=2)
    boxes.insert(1, empty)
    scores.insert(1, np.zeros(0))
    labels.insert(1, np.zeros(0, np.int64))
    return boxes, scores, labels, [float(weights[0]), 1.5, float(weights[1])]


@pytest.mark.parametrize("name, ours_fn, ref_fn", METHODS, ids=METHOD_IDS)
def test_empty_model_outputs(name, ours_fn, ref_fn):
    # An empty (0, 4) array: both work, and agree (the empty model still counts in the weight sum).
    boxes, scores, labels, weights = _with_empty_model(np.zeros((0, 4)))
    assert prefiltered_count(boxes, scores) > 0
    expected = ref_fn(boxes, scores, labels, weights)
    assert_same(ours_fn(boxes, scores, labels, weights), expected, exact_order=not name.startswith("nms"))
    # A flat empty array or list: ours gives the same; the reference's NMS cannot concatenate it.
    for empty in (np.zeros(0), []):
        boxes, scores, labels, weights = _with_empty_model(empty)
        assert_same(ours_fn(boxes, scores, labels, weights), expected, exact_order=not name.startswith("nms"))
        if "nms" in name:
            with pytest.raises(ValueError):
                ref_fn(boxes, scores, labels, weights)
        else:
            assert_same(
                ours_fn(boxes, scores, labels, weights), ref_fn(boxes, scores, labels, weights), exact_order=True
            )


@pytest.mark.parametrize("name, ours_fn, ref_fn", METHODS, ids=METHOD_IDS)
def test_all_models_empty(name, ours_fn, ref_fn):
    boxes = [np.zeros((0, 4)), np.zeros(0)]
    scores = [np.zeros(0), np.zeros(0)]
    labels = [np.zeros(0, np.int64), []]
    fused = ours_fn(boxes, scores, labels, [1.0, 2.0])
    assert fused.boxes.shape == (0, 4)
    assert len(fused.scores) == len(fused.labels) == len(fused.models) == len(fused.members) == 0
    if "nms" in name:  # the reference's NMS fails with nothing to concatenate
        with pytest.raises((ValueError, IndexError)):
            ref_fn(boxes, scores, labels, [1.0, 2.0])
    else:
        assert len(ref_fn(boxes, scores, labels, [1.0, 2.0])[0]) == 0
    # Boxes that are all dropped (zero area, outside the image) leave the same empty result.
    dropped = [np.array([[0.2, 0.2, 0.2, 0.5], [1.1, 0.1, 1.3, 0.4], [0.3, -0.4, 0.5, -0.1]])]
    fused = ours_fn(dropped, [np.array([0.9, 0.8, 0.7])], [np.array([0, 1, 0])], [1.0])
    assert len(fused.boxes) == 0


def _awkward_boxes():
    """A zero-area box with the top score over a real box, a box outside the image, a box with
    swapped corners partly outside, and an ordinary one."""
    boxes = [
        np.array([[0.2, 0.2, 0.2, 0.6], [0.1, 0.1, 0.5, 0.5], [1.05, 0.3, 1.2, 0.5]]),
        np.array([[0.52, 0.48, 0.08, 0.12], [-0.1, 0.7, 0.3, 1.15], [0.6, 0.6, 0.9, 0.6]]),
    ]
    scores = [np.array([0.99, 0.8, 0.95]), np.array([0.7, 0.6, 0.98])]
    labels = [np.array([0, 0, 0]), np.array([0, 0, 0])]
    return boxes, scores, labels


@pytest.mark.parametrize("name, ours_fn, ref_fn", METHODS, ids=METHOD_IDS)
def test_zero_area_and_outside_boxes(name, ours_fn, ref_fn):
    boxes, scores, labels = _awkward_boxes()
    weights = [1.0, 1.0]
    fused = ours_fn(boxes, scores, labels, weights)
    assert_same(fused, ref_fn(boxes, scores, labels, weights), exact_order=not name.startswith("nms"))
    # Zero-area and fully outside boxes are gone; the partly outside one is clipped.
    if name == "nms":
        assert len(fused.boxes) == 2
    assert (fused.boxes >= 0).all() and (fused.boxes <= 1).all()
    assert ((fused.boxes[:, 2] > fused.boxes[:, 0]) & (fused.boxes[:, 3] > fused.boxes[:, 1])).all()
    clipped = np.isclose(fused.boxes, [0.0, 0.7, 0.3, 1.0], atol=TOL).all(axis=1)
    assert clipped.sum() == 1


def test_zero_area_and_outside_boxes_by_hand():
    boxes, scores, labels = _awkward_boxes()
    nms = nms_fusion(boxes, scores, labels, [1.0, 1.0], iou=0.5)
    # scores are halved (weight / sum of weights); the swapped box is suppressed by the real one
    order = np.argsort(-nms.scores)
    np.testing.assert_allclose(nms.boxes[order], [[0.1, 0.1, 0.5, 0.5], [0.0, 0.7, 0.3, 1.0]], atol=1e-12)
    np.testing.assert_allclose(nms.scores[order], [0.4, 0.3], atol=1e-12)
    wbf = weighted_boxes_fusion(boxes, scores, labels, [1.0, 1.0], iou=0.5)
    # the real box and the swapped box fuse: score-weighted mean of (0.1, 0.1, 0.5, 0.5) and (0.08, 0.12, 0.52, 0.48)
    expected = (0.8 * np.array([0.1, 0.1, 0.5, 0.5]) + 0.7 * np.array([0.08, 0.12, 0.52, 0.48])) / 1.5
    np.testing.assert_allclose(wbf.boxes[0], expected, atol=1e-6)
    np.testing.assert_allclose(wbf.scores, [0.75, 0.3], atol=1e-6)
    assert wbf.members.tolist() == [2, 1] and wbf.models.tolist() == [2, 1]


def test_nms_long_overlap_chain_matches_reference():
    """A chain of boxes, each overlapping only its neighbours, scores falling along it: the greedy
    result alternates kept/suppressed all the way (longer than any fixed-point shortcut)."""
    n = 60
    x1 = np.arange(n) * 0.012
    chain = np.column_stack([x1, np.full(n, 0.2), x1 + 0.05, np.full(n, 0.6)])
    boxes = [chain[::2], chain[1::2]]  # interleaved over two models
    scores = [np.linspace(0.99, 0.1, n)[::2], np.linspace(0.99, 0.1, n)[1::2]]
    labels = [np.zeros(n // 2, np.int64), np.zeros(n // 2, np.int64)]
    ours = nms_fusion(boxes, scores, labels, [1.0, 1.0], iou=0.5)
    assert_same(ours, ref_nms(boxes, scores, labels, weights=[1.0, 1.0], iou=0.5))
    assert len(ours.boxes) == n // 2


def test_python_lists_as_input():
    boxes, scores, labels, weights = random_case(np.random.default_rng(950), n_models=3, max_boxes=15)
    as_lists = ([b.tolist() for b in boxes], [s.tolist() for s in scores], [l.tolist() for l in labels])
    for name, ours_fn, ref_fn in METHODS:
        expected = ref_fn(boxes, scores, labels, list(weights))
        assert_same(
            ours_fn(*as_lists, weights.tolist()), expected, exact_order=not name.startswith("nms"), context=name
        )


@pytest.mark.real
def test_real_detections_of_one_model_fused_with_itself(real_detections):
    """Duplicated members (e.g. a model listed twice) tie every score: results still match."""
    for name, boxes, scores, labels in real_detections[:3]:
        twice = ([boxes[0], boxes[0]], [scores[0], scores[0]], [labels[0], labels[0]])
        for method, ours_fn, ref_fn in METHODS:
            expected = ref_fn(*twice, [1.0, 1.0])
            assert_same(ours_fn(*twice, [1.0, 1.0]), expected, exact_order=not method.startswith("nms"), context=name)
        # every cluster is started by a box whose copy (IoU 1) joins it next
        wbf = weighted_boxes_fusion(*twice, [1.0, 1.0], iou=0.55)
        assert (wbf.models == 2).all() and wbf.members.sum() == 2 * len(boxes[0])


def test_nms_tie_break_matches_reference():
    """Equal scores (quantised scores, duplicated models): the reference visits boxes in
    ``scores.argsort()[::-1]`` order, so of two tied overlapping boxes it keeps the later one."""
    boxes = [np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([[0.12, 0.1, 0.5, 0.52]])]
    scores, labels = [np.array([0.7]), np.array([0.7])], [np.array([0]), np.array([0])]
    assert_same(nms_fusion(boxes, scores, labels, [1.0, 1.0]), ref_nms(boxes, scores, labels, weights=[1.0, 1.0]))


def test_zero_scores_never_give_nan_boxes():
    """Scores of 0 pass validation (and conf=0), but a cluster whose scores are all 0 has a
    zero score sum: the same division the zero-weight rule avoids. No NaN box may come out, and
    ``fuse`` must not fail building its Detections."""
    boxes = [np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([[0.11, 0.1, 0.5, 0.5]])]
    scores, labels = [np.array([0.0]), np.array([0.0])], [np.array([0]), np.array([0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for fn in ALL_FUNCTIONS:
            fused = fn(boxes, scores, labels)
            assert np.isfinite(fused.boxes).all(), f"{fn.__name__}: {fused.boxes.tolist()}"
        lone = non_maximum_weighted(boxes[:1], scores[:1], labels[:1])
        assert np.isfinite(lone.boxes).all(), f"NMW of one zero-score box: {lone.boxes.tolist()}"
        members = [
            Detections(xyxy=b * 640, confidence=s, class_id=l, class_names=("a",))
            for b, s, l in zip(boxes, scores, labels)
        ]
        for method in ("wbf", "nmw", "vote"):
            fuse(members, method, image_hw=(640, 640), min_votes=1)


# --------------------------------------------------------------------------------------------
# Counters and consensus voting, by hand
# --------------------------------------------------------------------------------------------

A = [0.1, 0.1, 0.5, 0.5]
A2 = [0.1, 0.1, 0.5, 0.54]  # IoU with A: 0.16 / 0.176 = 0.909
LONE = [0.6, 0.6, 0.8, 0.9]


def _voting_case():
    boxes = [np.array([A]), np.array([A2, LONE])]
    scores = [np.array([0.9]), np.array([0.6, 0.3])]
    labels = [np.array([3]), np.array([3, 3])]
    return boxes, scores, labels


def test_wbf_counters_and_fused_box_by_hand():
    fused = weighted_boxes_fusion(*_voting_case(), iou=0.55)
    assert fused.models.tolist() == [2, 1]
    assert fused.members.tolist() == [2, 1]
    assert fused.labels.tolist() == [3, 3]
    expected = (0.9 * np.array(A) + 0.6 * np.array(A2)) / 1.5
    np.testing.assert_allclose(fused.boxes, [expected, LONE], atol=1e-6)
    # avg: mean score 0.75 x min(2 models, 2 boxes) / 2 models; the lone box: 0.3 x 1 / 2
    np.testing.assert_allclose(fused.scores, [0.75, 0.15], atol=1e-6)
    assert_same(fused, ref_wbf(*_voting_case(), iou=0.55), exact_order=True)


def test_one_model_twice_counts_one_model():
    boxes = [np.array([A, A2])]
    fused = weighted_boxes_fusion(boxes, [np.array([0.9, 0.6])], [np.array([0, 0])], iou=0.55)
    assert fused.models.tolist() == [1] and fused.members.tolist() == [2]
    nmw = non_maximum_weighted(boxes, [np.array([0.9, 0.6])], [np.array([0, 0])], iou=0.55)
    assert nmw.models.tolist() == [1] and nmw.members.tolist() == [2]


def test_nmw_counters_and_fused_box_by_hand():
    fused = non_maximum_weighted(*_voting_case(), iou=0.55)
    assert fused.models.tolist() == [2, 1] and fused.members.tolist() == [2, 1]
    iou = 0.16 / 0.176
    expected = (0.9 * np.array(A) + 0.6 * iou * np.array(A2)) / (0.9 + 0.6 * iou)
    np.testing.assert_allclose(fused.boxes, [expected, LONE], atol=1e-6)
    np.testing.assert_allclose(fused.scores, [0.9, 0.3], atol=1e-6)


def test_consensus_vote_keeps_only_agreed_boxes():
    voted = consensus_vote(*_voting_case(), iou=0.55, min_votes=2)
    assert len(voted.boxes) == 1
    assert voted.models.tolist() == [2] and voted.members.tolist() == [2]
    np.testing.assert_allclose(voted.boxes[0], (0.9 * np.array(A) + 0.6 * np.array(A2)) / 1.5, atol=1e-6)
    np.testing.assert_allclose(voted.scores, [0.75], atol=1e-6)
    everything = consensus_vote(*_voting_case(), iou=0.55, min_votes=1)
    assert everything.models.tolist() == [2, 1]
    assert len(consensus_vote(*_voting_case(), iou=0.55, min_votes=3).boxes) == 0
    # A stricter IoU threshold splits the pair: no box has two votes any more.
    assert len(consensus_vote(*_voting_case(), iou=0.95, min_votes=2).boxes) == 0


def test_consensus_vote_equals_filtered_wbf_on_random_inputs():
    for seed in range(6):
        boxes, scores, labels, weights = random_case(np.random.default_rng(900 + seed), n_models=3)
        wbf = weighted_boxes_fusion(boxes, scores, labels, weights, iou=0.5, conf=0.1)
        for min_votes in (1, 2, 3):
            voted = consensus_vote(boxes, scores, labels, weights, iou=0.5, conf=0.1, min_votes=min_votes)
            keep = wbf.models >= min_votes
            np.testing.assert_array_equal(voted.boxes, wbf.boxes[keep])
            np.testing.assert_array_equal(voted.scores, wbf.scores[keep])
            np.testing.assert_array_equal(voted.models, wbf.models[keep])
            assert (voted.models >= min_votes).all()


# --------------------------------------------------------------------------------------------
# fuse(): Detections in pixels
# --------------------------------------------------------------------------------------------

NAMES = ("person", "car", "dog")
W, H = 640, 480


def _members(seed=0, n_models=3):
    rng = np.random.default_rng(seed)
    boxes, scores, labels, weights = random_case(rng, n_models=n_models)
    members = []
    for b, s, l in zip(boxes, scores, labels):
        b = np.clip(np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1), -0.1, 1.1)
        pixels = (b * [W, H, W, H]).astype(np.float32)
        members.append(Detections(xyxy=pixels, confidence=s.astype(np.float32), class_id=l % 3, class_names=NAMES))
    return members, weights


def _normalised(members):
    scale = np.array([W, H, W, H], np.float64)
    return (
        [m.xyxy.astype(np.float64) / scale for m in members],
        [m.confidence for m in members],
        [m.class_id for m in members],
    )


FUSE_CASES = [
    (FusionMethod.NMS, {}, lambda b, s, l, w: nms_fusion(b, s, l, w, iou=0.45)),
    (
        "soft-nms",
        {"soft_method": "linear", "sigma": 0.3, "soft_threshold": 0.02},
        lambda b, s, l, w: soft_nms_fusion(b, s, l, w, iou=0.45, sigma=0.3, soft_threshold=0.02, soft_method="linear"),
    ),
    (
        "wbf",
        {"conf_type": "box_and_model_avg", "conf": 0.1},
        lambda b, s, l, w: weighted_boxes_fusion(b, s, l, w, iou=0.45, conf=0.1, conf_type="box_and_model_avg"),
    ),
    (
        FusionMethod.NMW,
        {"conf": 0.1},
        lambda b, s, l, w: non_maximum_weighted(b, s, l, w, iou=0.45, conf=0.1),
    ),
    ("vote", {"min_votes": 2}, lambda b, s, l, w: consensus_vote(b, s, l, w, iou=0.45, min_votes=2)),
]


@pytest.mark.parametrize(
    "method, options, normalised_fn", FUSE_CASES, ids=[str(FusionMethod(c[0]).value) for c in FUSE_CASES]
)
def test_fuse_in_pixels_equals_normalised_functions(method, options, normalised_fn):
    for seed in range(3):
        members, weights = _members(seed)
        out = fuse(members, method, image_hw=(H, W), weights=weights, iou=0.45, **options)
        expected = normalised_fn(*_normalised(members), weights)
        assert isinstance(out, Detections)
        assert out.class_names == NAMES
        assert len(out) == len(expected.scores) > 0
        np.testing.assert_allclose(out.xyxy, expected.boxes * [W, H, W, H], rtol=0, atol=1e-3)
        np.testing.assert_allclose(out.confidence, expected.scores, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out.class_id, expected.labels)
        np.testing.assert_array_equal(out.data["models"], expected.models)
        np.testing.assert_array_equal(out.data["members"], expected.members)
        # float32 means of coordinates at the border may exceed it by an ulp, as in the reference
        assert out.xyxy.min() >= 0 and out.xyxy[:, [0, 2]].max() <= W + 1e-3 and out.xyxy[:, [1, 3]].max() <= H + 1e-3


def test_fuse_defaults_to_wbf_and_keeps_counters():
    members, _ = _members(5, n_models=2)
    out = fuse(members, image_hw=(H, W))
    expected = weighted_boxes_fusion(*_normalised(members), None, iou=0.55)
    np.testing.assert_allclose(out.xyxy, expected.boxes * [W, H, W, H], atol=1e-3)
    assert set(out.data) == {"models", "members"}
    normalised = _normalised(members)
    assert out.data["members"].sum() == prefiltered_count(*normalised[:2]) > 0
    assert (out.data["models"] <= 2).all()


def test_fuse_of_the_hand_built_case_in_pixels():
    scale = np.array([W, H, W, H])
    boxes, scores, labels = _voting_case()
    members = [
        Detections(xyxy=b * scale, confidence=s, class_id=l, class_names=("a", "b", "c", "d"))
        for b, s, l in zip(boxes, scores, labels)
    ]
    out = fuse(members, "wbf", image_hw=(H, W), iou=0.55)
    assert out.data["models"].tolist() == [2, 1] and out.data["members"].tolist() == [2, 1]
    expected = (0.9 * np.array(A) + 0.6 * np.array(A2)) / 1.5 * scale
    np.testing.assert_allclose(out.xyxy[0], expected, atol=1e-3)
    voted = fuse(members, "vote", image_hw=(H, W), iou=0.55, min_votes=2)
    assert len(voted) == 1 and voted.data["models"].tolist() == [2]


def test_fuse_with_an_empty_member():
    members, _ = _members(5, n_models=2)
    members.append(Detections.empty(NAMES))
    for method in FusionMethod:
        out = fuse(members, method, image_hw=(H, W))
        assert len(out) > 0 and set(out.data) == {"models", "members"}
    out = fuse([Detections.empty(NAMES)] * 2, "wbf", image_hw=(H, W))
    assert len(out) == 0 and out.class_names == NAMES


# --------------------------------------------------------------------------------------------
# Bad input -> FusionError
# --------------------------------------------------------------------------------------------


def _good():
    return (
        [np.array([[0.1, 0.1, 0.4, 0.4]]), np.array([[0.12, 0.1, 0.4, 0.42]])],
        [np.array([0.9]), np.array([0.8])],
        [np.array([0]), np.array([0])],
    )


ALL_FUNCTIONS = [nms_fusion, soft_nms_fusion, weighted_boxes_fusion, non_maximum_weighted, consensus_vote]
FN_IDS = [f.__name__ for f in ALL_FUNCTIONS]


def test_good_input_is_accepted():
    for fn in ALL_FUNCTIONS:
        assert len(fn(*_good(), [1.0, 2.0]).boxes) >= 1


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=FN_IDS)
@pytest.mark.parametrize(
    "weights",
    [[1.0], [1.0, 1.0, 1.0], [1.0, -0.5], [float("nan"), 1.0], [float("inf"), 1.0], [0.0, 0.0]],
    ids=["too-few", "too-many", "negative", "nan", "inf", "all-zero"],
)
def test_bad_weights(fn, weights):
    with pytest.raises(FusionError):
        fn(*_good(), weights)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=FN_IDS)
@pytest.mark.parametrize("bad_score", [float("nan"), -0.1, float("inf")])
def test_bad_scores(fn, bad_score):
    boxes, scores, labels = _good()
    scores[1] = np.array([bad_score])
    with pytest.raises(FusionError):
        fn(boxes, scores, labels)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=FN_IDS)
def test_bad_boxes(fn):
    boxes, scores, labels = _good()
    boxes[0] = np.array([[0.1, float("nan"), 0.4, 0.4]])
    with pytest.raises(FusionError):
        fn(boxes, scores, labels)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=FN_IDS)
@pytest.mark.parametrize("which", ["boxes", "scores", "labels", "models"])
def test_mismatched_lengths(fn, which):
    boxes, scores, labels = _good()
    if which == "boxes":
        boxes[1] = np.array([[0.12, 0.1, 0.4, 0.42], [0.5, 0.5, 0.6, 0.6]])
    elif which == "scores":
        scores[0] = np.array([0.9, 0.3])
    elif which == "labels":
        labels[1] = np.array([], np.int64)
    else:
        labels = labels[:1]
    with pytest.raises(FusionError):
        fn(boxes, scores, labels)


def test_fusion_error_is_a_visionpipe_value_error():
    from visionpipe.errors import VisionpipeError

    assert issubclass(FusionError, VisionpipeError) and issubclass(FusionError, ValueError)


def test_bad_options():
    good = _good()
    with pytest.raises(FusionError, match="conf_type"):
        weighted_boxes_fusion(*good, conf_type="median")
    with pytest.raises(FusionError, match="method"):
        soft_nms_fusion(*good, soft_method="hard")
    with pytest.raises(FusionError, match="method"):
        soft_nms_fusion(*good, soft_method=2)  # the reference's numeric codes are not accepted
    for sigma in (0.0, -0.5):
        with pytest.raises(FusionError, match="sigma"):
            soft_nms_fusion(*good, sigma=sigma)
    for min_votes in (0, -1):
        with pytest.raises(FusionError, match="min_votes"):
            consensus_vote(*good, min_votes=min_votes)


def test_fuse_bad_inputs():
    members, _ = _members(3, n_models=2)
    with pytest.raises(FusionError):
        fuse([], "wbf", image_hw=(H, W))
    other = Detections(
        xyxy=members[1].xyxy,
        confidence=members[1].confidence,
        class_id=members[1].class_id,
        class_names=("person", "car", "cat"),
    )
    with pytest.raises(FusionError, match="class"):
        fuse([members[0], other], "wbf", image_hw=(H, W))
    with pytest.raises(FusionError):
        fuse(members, "wbf", image_hw=(H, W), weights=[1.0])
    with pytest.raises(FusionError):
        fuse(members, "wbf", image_hw=(H, W), conf_type="median")
    with pytest.raises(FusionError):
        fuse(members, "soft-nms", image_hw=(H, W), soft_method="hard")
    with pytest.raises(FusionError):
        fuse(members, "soft-nms", image_hw=(H, W), sigma=0.0)
    with pytest.raises(FusionError):
        fuse(members, "vote", image_hw=(H, W), min_votes=0)
    with pytest.raises(ValueError):
        fuse(members, "median", image_hw=(H, W))


def test_fuse_reads_image_hw_as_height_then_width():
    """(height, width), as NumPy shapes: boxes are normalised by the width along x. Read the other
    way round, the 300-pixel-wide image would be 100 wide and the boxes clipped at x = 100."""
    a = Detections(xyxy=np.array([[10, 20, 210, 60]], np.float32), confidence=[0.9], class_id=[0], class_names=("x",))
    b = Detections(xyxy=np.array([[12, 22, 208, 58]], np.float32), confidence=[0.9], class_id=[0], class_names=("x",))
    out = fuse([a, b], "wbf", image_hw=(100, 300))
    np.testing.assert_allclose(out.xyxy, [[11, 21, 209, 59]], atol=1e-3)  # the mean of equal-score boxes
    swapped = fuse([a, b], "wbf", image_hw=(300, 100))
    assert swapped.xyxy[0, 2] == pytest.approx(100)  # what a swap would do: clipped to a 100-pixel width
    with pytest.raises(TypeError):
        fuse([a, b], "wbf", image_size=(300, 100))  # ensemble-boxes' (width, height) is no longer a keyword
