"""Boxes planted in tiny ONNX graphs come back, in original-image pixels, through the whole Pipeline.

Each test chooses boxes in ORIGINAL image pixels, maps them into model-input pixels with its own
letterbox (or stretch) arithmetic, encodes them into the family's raw output layout by inverting the
family's formula, and checks that the pipeline returns exactly the chosen boxes, classes and scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Pipeline

H, W = 320, 320  # model input (height, width) of most graphs here
IMAGE = np.full((300, 500, 3), 90, np.uint8)  # non-square original: letterbox matters
NAMES = ["cat", "dog", "bird"]
NC = len(NAMES)


# -- the test's own geometry ------------------------------------------------------------------------


def input_transform(h: int, w: int, in_h: int = H, in_w: int = W, mode: str = "center"):
    """(scale_x, scale_y, left, top) with input = original * scale + offset."""
    if mode == "stretch":
        return in_w / w, in_h / h, 0, 0
    r = min(in_h / h, in_w / w)
    new_w, new_h = int(w * r), int(h * r)
    if mode == "top_left":
        return r, r, 0, 0
    return r, r, (in_w - new_w) // 2, (in_h - new_h) // 2


def to_input(box, h, w, in_h=H, in_w=W, mode="center"):
    sx, sy, left, top = input_transform(h, w, in_h, in_w, mode)
    x1, y1, x2, y2 = box
    return (x1 * sx + left, y1 * sy + top, x2 * sx + left, y2 * sy + top)


def to_original(box, h, w, in_h=H, in_w=W, mode="center"):
    """Inverse of to_input, clipped to the original image."""
    sx, sy, left, top = input_transform(h, w, in_h, in_w, mode)
    x1, y1, x2, y2 = box
    out = [(x1 - left) / sx, (y1 - top) / sy, (x2 - left) / sx, (y2 - top) / sy]
    return (min(max(out[0], 0), w), min(max(out[1], 0), h), min(max(out[2], 0), w), min(max(out[3], 0), h))


def cxcywh(box):
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def assert_detections(dets, expected, atol=1e-3):
    """``expected``: (box in original pixels, class id, score) triples, in any order."""
    assert dets is not None
    got = sorted(zip(dets.xyxy.tolist(), dets.class_id.tolist(), dets.confidence.tolist()), key=lambda e: (-e[2], e[1]))
    want = sorted(expected, key=lambda e: (-e[2], e[1]))
    assert len(got) == len(want), f"got {len(got)} detections {got}, expected {len(want)} {want}"
    for (gbox, gcls, gscore), (wbox, wcls, wscore) in zip(got, want):
        assert gcls == wcls, (got, want)
        assert gscore == pytest.approx(wscore, rel=1e-5, abs=1e-6), (got, want)
        np.testing.assert_allclose(gbox, wbox, atol=atol, err_msg=f"{got} vs {want}")


def detect(model, image=IMAGE, **kwargs):
    with Pipeline(model, **kwargs) as pipe:
        return pipe(image)


def record_batches(monkeypatch, model):
    """Wrap the backend's forward so the test sees every batch size the runtime received."""
    sizes: list[int] = []
    original = model.backend.forward

    def forward(tensor):
        sizes.append(int(tensor.shape[0]))
        return original(tensor)

    monkeypatch.setattr(model.backend, "forward", forward)
    return sizes


def spec(path, family, **extra):
    return {"model": str(path), "family": family, "classes": NAMES, **extra}


# -- YOLOv8: (B, 4 + C, N), cx cy w h in input pixels, class scores, no objectness --------------------

# (box in original pixels, {class: score})
V8_A = ((50, 40, 150, 120), {0: 0.9})
V8_B = ((200, 100, 300, 250), {1: 0.8, 2: 0.7})  # both class scores pass 0.25: a multi-label box
V8_C = ((350, 20, 480, 90), {2: 0.3})  # low score
V8_D = ((52, 42, 152, 122), {0: 0.6})  # near-duplicate of A, same class
V8_E = ((60, 180, 160, 280), {1: 0.55})
V8_PLAN = [V8_A, V8_B, V8_C, V8_D, V8_E]


def yolov8_values(entries_input_px, n=16, nc=NC):
    out = np.zeros((4 + nc, n), np.float32)
    for j, (box, scores) in enumerate(entries_input_px):
        out[:4, j] = cxcywh(box)
        for c, s in scores.items():
            out[4 + c, j] = s
    return out


def yolov8_graph(tmp_path, plan=V8_PLAN, image_hw=(300, 500), mode="center", name="v8.onnx", **kwargs):
    entries = [(to_input(box, *image_hw, mode=mode), scores) for box, scores in plan]
    return constant_model(tmp_path / name, yolov8_values(entries), **kwargs)


def test_planted_boxes_are_near_duplicates_as_intended():
    # guard the plan itself: D really overlaps A above YOLOv8's IoU 0.7 (and below 0.95)
    assert 0.7 < iou(V8_A[0], V8_D[0]) < 0.95


@pytest.mark.parametrize("mode", ["center", "top_left", "stretch"])
def test_yolov8_boxes_come_back_in_original_pixels(tmp_path, mode):
    path = yolov8_graph(tmp_path, mode=mode)
    preprocess = (
        {}
        if mode == "center"
        else {"preprocess": {"resize": "stretch"} if mode == "stretch" else {"anchor": "top_left"}}
    )
    dets = detect(spec(path, "yolov8", **preprocess))
    # default conf 0.25, best class per box, NMS at 0.7 removes D
    assert_detections(
        dets,
        [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8), (V8_E[0], 1, 0.55), (V8_C[0], 2, 0.3)],
    )
    assert dets.class_names == tuple(NAMES)
    assert dets.names == [NAMES[c] for c in dets.class_id]


def test_yolov8_family_and_class_count_guessed_from_layout(tmp_path):
    path = yolov8_graph(tmp_path)
    model = visionpipe.load_model(path)
    assert model.family == "yolov8"
    assert model.input_hw == (H, W)
    assert model.class_names == ("0", "1", "2")  # no names anywhere: ids as text
    dets = detect(model)
    assert sorted(dets.class_id.tolist()) == [0, 1, 1, 2]


def test_yolov8_conf(tmp_path):
    path = yolov8_graph(tmp_path)
    assert_detections(
        detect(spec(path, "yolov8"), conf=0.5), [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8), (V8_E[0], 1, 0.55)]
    )
    assert_detections(detect(spec(path, "yolov8"), conf=0.85), [(V8_A[0], 0, 0.9)])
    assert len(detect(spec(path, "yolov8"), conf=0.95)) == 0


def test_yolov8_class_filter_by_id_and_name(tmp_path):
    path = yolov8_graph(tmp_path)
    expected = [(V8_B[0], 1, 0.8), (V8_E[0], 1, 0.55)]
    assert_detections(detect(spec(path, "yolov8"), classes=[1]), expected)
    assert_detections(detect(spec(path, "yolov8"), classes=["dog"]), expected)
    # class 0: A survives, its duplicate D is still suppressed
    assert_detections(detect(spec(path, "yolov8"), classes=[0]), [(V8_A[0], 0, 0.9)])


def test_yolov8_multi_label_on_and_off(tmp_path):
    path = yolov8_graph(tmp_path)
    on = detect(spec(path, "yolov8"), multi_label=True)
    assert_detections(
        on,
        [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8), (V8_B[0], 2, 0.7), (V8_E[0], 1, 0.55), (V8_C[0], 2, 0.3)],
    )
    off = detect(spec(path, "yolov8"), multi_label=False)
    assert_detections(off, [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8), (V8_E[0], 1, 0.55), (V8_C[0], 2, 0.3)])
    # multi-label with a class filter keeps B's second class
    assert_detections(
        detect(spec(path, "yolov8"), multi_label=True, classes=[2]), [(V8_B[0], 2, 0.7), (V8_C[0], 2, 0.3)]
    )


def test_yolov8_nms_iou_and_agnostic(tmp_path):
    f = ((203, 103, 303, 253), {2: 0.65})  # near-duplicate of B, other class
    assert iou(V8_B[0], f[0]) > 0.9
    path = yolov8_graph(tmp_path, plan=[V8_A, V8_B, V8_D, f])
    base = [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8)]
    # class-aware: F (class 2) survives B (class 1); D (same class as A) does not
    assert_detections(detect(spec(path, "yolov8")), base + [(f[0], 2, 0.65)])
    # agnostic: F is removed by B too
    assert_detections(detect(spec(path, "yolov8"), agnostic=True), base)
    # a looser IoU threshold lets D through (IoU(A, D) < 0.95)
    assert_detections(detect(spec(path, "yolov8"), iou=0.95), base + [(f[0], 2, 0.65), (V8_D[0], 0, 0.6)])


def test_yolov8_max_det_keeps_best(tmp_path):
    path = yolov8_graph(tmp_path)
    assert_detections(detect(spec(path, "yolov8"), max_det=2), [(V8_A[0], 0, 0.9), (V8_B[0], 1, 0.8)])


def test_yolov8_box_outside_image_is_clipped(tmp_path):
    g = ((400, 250, 520, 330), {0: 0.9})  # crosses the right and bottom edges of the 500x300 image
    path = yolov8_graph(tmp_path, plan=[g])
    assert_detections(detect(spec(path, "yolov8")), [((400, 250, 500, 300), 0, 0.9)])


def test_yolov8_real_batch_maps_each_image_with_its_own_transform(tmp_path, monkeypatch):
    # boxes chosen in INPUT pixels, inside the content area of every image below
    planted = [((80, 90, 150, 200), {0: 0.9}), ((160, 70, 250, 140), {2: 0.6})]
    path = constant_model(tmp_path / "v8.onnx", yolov8_values(planted))
    model = visionpipe.load_model(spec(path, "yolov8"))
    sizes = record_batches(monkeypatch, model)
    images = [
        np.zeros((300, 500, 3), np.uint8),
        np.zeros((500, 300, 3), np.uint8),
        np.zeros((200, 200, 3), np.uint8),
        np.zeros((1000, 1000, 3), np.uint8),
    ]
    with Pipeline(model) as pipe:
        results = pipe.run(images, batch_size=4)
    assert sizes == [4]
    for image, result in zip(images, results):
        h, w = image.shape[:2]
        assert result.error is None
        assert result.image_size == (h, w)
        assert_detections(
            result.detections, [(to_original(box, h, w), next(iter(s)), next(iter(s.values()))) for box, s in planted]
        )


# -- YOLOv5 decoded: (B, N, 5 + C), cx cy w h, objectness, class scores; score = obj * cls ------------

# (box in original pixels, objectness, {class: score})
V5_A = ((50, 40, 150, 120), 1.0, {0: 0.9})  # 0.9
V5_B = ((200, 100, 300, 250), 0.9, {1: 0.9, 2: 0.8})  # 0.81 and 0.72
V5_C = ((350, 20, 480, 90), 0.5, {2: 0.8})  # 0.4: its class score alone would pass 0.5, the product does not
V5_D = ((52, 42, 152, 122), 0.8, {0: 0.8})  # 0.64, near-duplicate of A
V5_PLAN = [V5_A, V5_B, V5_C, V5_D]


def yolov5_values(plan, n=16, image_hw=(300, 500)):
    out = np.zeros((n, 5 + NC), np.float32)
    for j, (box, obj, scores) in enumerate(plan):
        out[j, :4] = cxcywh(to_input(box, *image_hw))
        out[j, 4] = obj
        for c, s in scores.items():
            out[j, 5 + c] = s
    return out


def f32(x):
    return float(np.float32(x))


def test_yolov5_decoded_boxes_scores_and_nms(tmp_path):
    assert iou(V5_A[0], V5_D[0]) > 0.45
    path = constant_model(tmp_path / "v5.onnx", yolov5_values(V5_PLAN))
    dets = detect(spec(path, "yolov5"))
    # default conf 0.25, one class per box, D suppressed by A at IoU 0.45
    assert_detections(dets, [(V5_A[0], 0, 0.9), (V5_B[0], 1, f32(0.9) * f32(0.9)), (V5_C[0], 2, 0.4)])


def test_yolov5_decoded_family_guessed_from_layout(tmp_path):
    path = constant_model(tmp_path / "v5.onnx", yolov5_values(V5_PLAN))
    model = visionpipe.load_model(path)
    assert model.family == "yolov5"
    assert len(model.class_names) == NC


def test_yolov5_decoded_threshold_uses_objectness_times_class(tmp_path):
    path = constant_model(tmp_path / "v5.onnx", yolov5_values(V5_PLAN))
    assert_detections(detect(spec(path, "yolov5"), conf=0.5), [(V5_A[0], 0, 0.9), (V5_B[0], 1, f32(0.9) * f32(0.9))])


def test_yolov5_decoded_class_filter_and_multi_label(tmp_path):
    path = constant_model(tmp_path / "v5.onnx", yolov5_values(V5_PLAN))
    b1, b2 = f32(0.9) * f32(0.9), f32(0.9) * f32(0.8)
    assert_detections(detect(spec(path, "yolov5"), classes=[0]), [(V5_A[0], 0, 0.9)])
    assert_detections(
        detect(spec(path, "yolov5"), multi_label=True),
        [(V5_A[0], 0, 0.9), (V5_B[0], 1, b1), (V5_B[0], 2, b2), (V5_C[0], 2, 0.4)],
    )
    assert_detections(
        detect(spec(path, "yolov5"), multi_label=True, classes=["bird"]), [(V5_B[0], 2, b2), (V5_C[0], 2, 0.4)]
    )
    # a looser IoU keeps the duplicate
    assert_detections(
        detect(spec(path, "yolov5"), iou=0.95),
        [(V5_A[0], 0, 0.9), (V5_B[0], 1, b1), (V5_C[0], 2, 0.4), (V5_D[0], 0, f32(0.8) * f32(0.8))],
    )


def test_yolov5_decoded_real_batch(tmp_path, monkeypatch):
    path = constant_model(tmp_path / "v5.onnx", yolov5_values(V5_PLAN))
    model = visionpipe.load_model(spec(path, "yolov5"))
    sizes = record_batches(monkeypatch, model)
    with Pipeline(model) as pipe:
        results = pipe.run([IMAGE, IMAGE.copy(), IMAGE], batch_size=3)
    assert sizes == [3]
    for result in results:
        assert_detections(result.detections, [(V5_A[0], 0, 0.9), (V5_B[0], 1, f32(0.9) * f32(0.9)), (V5_C[0], 2, 0.4)])


# -- YOLOv5 raw head with anchors: logits, rows ordered level, anchor, row, column --------------------

RAW_H, RAW_W = 256, 320  # non-square input: grids 32x40, 16x20, 8x10
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]
NEG = -20.0  # sigmoid(-20) ~ 2e-9: nothing passes


def raw_rows() -> int:
    return sum(len(a) // 2 * math.ceil(RAW_H / s) * math.ceil(RAW_W / s) for a, s in zip(ANCHORS, STRIDES))


def encode_raw(box_input_px, level, anchor):
    """(row index, 4 box logits) that YOLOv5's grid decodes to ``box_input_px``."""
    s = STRIDES[level]
    aw, ah = ANCHORS[level][2 * anchor], ANCHORS[level][2 * anchor + 1]
    cx, cy, w, h = cxcywh(box_input_px)
    gx, gy = int(cx // s), int(cy // s)
    # xy = (2 sig - 0.5 + cell) * stride  ->  sig = (xy / stride - cell + 0.5) / 2
    sx, sy = (cx / s - gx + 0.5) / 2, (cy / s - gy + 0.5) / 2
    # wh = (2 sig)^2 * anchor  ->  sig = sqrt(wh / anchor) / 2
    sw, sh = math.sqrt(w / aw) / 2, math.sqrt(h / ah) / 2
    sigmoids = [sx, sy, sw, sh]
    assert all(0.02 < v < 0.98 for v in sigmoids), (
        f"box {box_input_px} cannot be encoded at level {level} anchor {anchor}"
    )
    offset = sum(
        len(ANCHORS[l]) // 2 * math.ceil(RAW_H / STRIDES[l]) * math.ceil(RAW_W / STRIDES[l]) for l in range(level)
    )
    gh, gw = math.ceil(RAW_H / s), math.ceil(RAW_W / s)
    row = offset + anchor * gh * gw + gy * gw + gx
    return row, [logit(v) for v in sigmoids]


# (box in original pixels, level, anchor, objectness, {class: probability})
RAW_PLAN = [
    ((100, 50, 130, 100), 0, 1, 0.95, {0: 0.9}),
    ((250, 120, 400, 280), 1, 2, 0.9, {1: 0.9, 2: 0.8}),
    ((20, 30, 480, 290), 2, 0, 0.8, {2: 0.75}),
    ((485, 10, 498, 30), 0, 0, 0.9, {1: 0.7}),  # far right column, near the top of the 40x32 grid
    ((300, 200, 340, 240), 1, 0, 0.6, {0: 0.6}),  # 0.36: below 0.5
]
RAW_DUP = ((101, 51, 131, 101), 0, 2, 0.8, {0: 0.9})  # near-duplicate of the first, other anchor


def raw_values(plan):
    out = np.full((raw_rows(), 5 + NC), NEG, np.float32)
    used = set()
    for box, level, anchor, obj, scores in plan:
        row, box_logits = encode_raw(to_input(box, 300, 500, RAW_H, RAW_W), level, anchor)
        assert row not in used
        used.add(row)
        out[row, :4] = box_logits
        out[row, 4] = logit(obj)
        for c, p in scores.items():
            out[row, 5 + c] = logit(p)
    return out


def raw_spec(path, **extra):
    return spec(path, "yolov5", decoder={"anchors": ANCHORS, "strides": STRIDES}, **extra)


def raw_expected(plan, conf=0.25, multi_label=False):
    out = []
    for box, _, _, obj, scores in plan:
        pairs = sorted(scores.items(), key=lambda kv: -kv[1])
        pairs = pairs if multi_label else pairs[:1]
        out += [(box, c, obj * p) for c, p in pairs if obj * p > conf]
    return out


def test_raw_plan_geometry():
    assert raw_rows() == 3 * (32 * 40 + 16 * 20 + 8 * 10)
    assert iou(RAW_PLAN[0][0], RAW_DUP[0]) > 0.45
    r = 0.64  # min(256/300, 320/500); content 320x192 centred at top 32
    assert to_input((0, 0, 500, 300), 300, 500, RAW_H, RAW_W) == pytest.approx((0, 32, 500 * r, 32 + 300 * r))


def test_yolov5_raw_anchors_decode_to_planted_boxes(tmp_path):
    path = constant_model(tmp_path / "raw.onnx", raw_values(RAW_PLAN + [RAW_DUP]), input_hw=(RAW_H, RAW_W))
    model = visionpipe.load_model(raw_spec(path))
    assert model.input_hw == (RAW_H, RAW_W)
    dets = detect(model, conf=0.25)
    # the duplicate (score 0.72 < 0.855) is suppressed
    assert_detections(dets, raw_expected(RAW_PLAN), atol=1e-3)


def test_yolov5_raw_threshold_classes_and_multi_label(tmp_path):
    path = constant_model(tmp_path / "raw.onnx", raw_values(RAW_PLAN), input_hw=(RAW_H, RAW_W))
    model = visionpipe.load_model(raw_spec(path))
    assert_detections(detect(model, conf=0.5), raw_expected(RAW_PLAN, conf=0.5), atol=1e-3)
    assert_detections(
        detect(model, conf=0.5, multi_label=True), raw_expected(RAW_PLAN, conf=0.5, multi_label=True), atol=1e-3
    )
    only_dog = [e for e in raw_expected(RAW_PLAN, multi_label=True) if e[1] == 1]
    assert_detections(detect(model, classes=["dog"], multi_label=True), only_dog, atol=1e-3)


def test_yolov5_raw_head_with_sigmoid_already_applied(tmp_path):
    probabilities = 1.0 / (1.0 + np.exp(-raw_values(RAW_PLAN).astype(np.float64)))
    path = constant_model(tmp_path / "raw.onnx", probabilities.astype(np.float32), input_hw=(RAW_H, RAW_W))
    model = visionpipe.load_model(
        spec(path, "yolov5", decoder={"anchors": ANCHORS, "strides": STRIDES, "logits": False})
    )
    assert_detections(detect(model), raw_expected(RAW_PLAN), atol=1e-3)


def test_yolov5_raw_real_batch(tmp_path, monkeypatch):
    path = constant_model(tmp_path / "raw.onnx", raw_values(RAW_PLAN), input_hw=(RAW_H, RAW_W))
    model = visionpipe.load_model(raw_spec(path))
    sizes = record_batches(monkeypatch, model)
    with Pipeline(model) as pipe:
        results = pipe.run([IMAGE] * 2, batch_size=2)
    assert sizes == [2]
    for result in results:
        assert_detections(result.detections, raw_expected(RAW_PLAN), atol=1e-3)


# -- End-to-end: (B, K, 6) = x1 y1 x2 y2 score class, NMS already done in the graph -------------------

E2E_PLAN = [
    ((50, 40, 150, 120), 0.9, 0),
    ((200, 100, 300, 250), 0.8, 1),
    ((350, 20, 480, 90), 0.3, 2),
    ((52, 42, 152, 122), 0.6, 0),  # would be an NMS duplicate of the first: end2end must keep it
]


def e2e_values(plan, k=8, swap_corners=False):
    out = np.zeros((k, 6), np.float32)  # padding rows: score 0
    for j, (box, score, cls) in enumerate(plan):
        x1, y1, x2, y2 = to_input(box, 300, 500)
        out[j] = (x2, y2, x1, y1, score, cls) if swap_corners else (x1, y1, x2, y2, score, cls)
    return out


def e2e_expected(plan, conf=0.25, classes=None):
    return [(box, cls, score) for box, score, cls in plan if score > conf and (classes is None or cls in classes)]


def test_end2end_boxes_come_back_without_nms(tmp_path):
    path = constant_model(tmp_path / "e2e.onnx", e2e_values(E2E_PLAN))
    dets = detect(spec(path, "end2end"))
    assert_detections(dets, e2e_expected(E2E_PLAN))  # 4 boxes: duplicate kept, padding dropped
    # no NMS whatever the IoU threshold
    assert_detections(detect(spec(path, "end2end"), iou=0.1), e2e_expected(E2E_PLAN))


def test_end2end_threshold_classes_max_det(tmp_path):
    path = constant_model(tmp_path / "e2e.onnx", e2e_values(E2E_PLAN))
    assert_detections(detect(spec(path, "end2end"), conf=0.5), e2e_expected(E2E_PLAN, conf=0.5))
    assert_detections(detect(spec(path, "end2end"), classes=[0]), e2e_expected(E2E_PLAN, classes=[0]))
    assert_detections(detect(spec(path, "end2end"), classes=["dog", "bird"]), e2e_expected(E2E_PLAN, classes=[1, 2]))
    assert_detections(detect(spec(path, "end2end"), max_det=2), e2e_expected(E2E_PLAN)[:2])


def test_end2end_swapped_corners_are_normalised(tmp_path):
    path = constant_model(tmp_path / "e2e.onnx", e2e_values(E2E_PLAN, swap_corners=True))
    assert_detections(detect(spec(path, "end2end")), e2e_expected(E2E_PLAN))


def test_end2end_real_batch(tmp_path, monkeypatch):
    path = constant_model(tmp_path / "e2e.onnx", e2e_values(E2E_PLAN))
    model = visionpipe.load_model(spec(path, "end2end"))
    sizes = record_batches(monkeypatch, model)
    with Pipeline(model) as pipe:
        results = pipe.run([IMAGE] * 3, batch_size=3)
    assert sizes == [3]
    assert [r.index for r in results] == [0, 1, 2]
    for result in results:
        assert_detections(result.detections, e2e_expected(E2E_PLAN))


def test_family_aliases(tmp_path):
    v8 = yolov8_graph(tmp_path)
    assert visionpipe.load_model(v8, family="yolo11").family == "yolov8"
    e2e = constant_model(tmp_path / "e2e.onnx", e2e_values(E2E_PLAN))
    assert visionpipe.load_model(e2e, family="yolov10").family == "end2end"
