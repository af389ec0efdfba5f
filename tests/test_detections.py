"""Unit tests for visionpipe.detections.Detections.

Expected values are hand-computed (see the comments) or come from the inputs by explicit index
arithmetic, never from the class's own output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.errors import DetectionsError, VisionpipeError

NAMES = ("person", "car", "dog")


def make(n: int = 5, tracked: bool = True, names=NAMES) -> Detections:
    """n boxes with distinct, easy-to-trace values in every column."""
    i = np.arange(n, dtype=np.float64)
    xyxy = np.stack([i, 10 * i, i + 1 + i, 10 * i + 5], axis=1)  # x2 = 2i + 1 >= x1, y2 = y1 + 5
    return Detections(
        xyxy=xyxy,
        confidence=(i + 1) / 10,
        class_id=np.arange(n) % 3,
        tracker_id=np.arange(100, 100 + n) if tracked else None,
        data={"member": np.array([f"m{k}" for k in range(n)]), "mask": np.arange(n * 4).reshape(n, 2, 2)},
        class_names=names,
    )


# --------------------------------------------------------------------------------------------
# Construction and coercion
# --------------------------------------------------------------------------------------------


def test_construction_coerces_dtypes():
    dets = Detections(
        xyxy=[[0, 0, 10, 20], [1.5, 2.5, 3.5, 4.5]],  # python ints / floats -> float32 (N, 4)
        confidence=np.array([0.5, 0.25], np.float64),
        class_id=[0, 2],
        tracker_id=np.array([7, 8], np.int32),
        class_names=["a", "b", "c"],  # list -> tuple
    )
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (2, 4)
    assert dets.confidence.dtype == np.float32 and dets.confidence.shape == (2,)
    assert dets.class_id.dtype == np.int64 and dets.class_id.shape == (2,)
    assert dets.tracker_id.dtype == np.int64
    assert dets.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(dets.xyxy, [[0, 0, 10, 20], [1.5, 2.5, 3.5, 4.5]])
    np.testing.assert_array_equal(dets.confidence, [0.5, 0.25])
    np.testing.assert_array_equal(dets.class_id, [0, 2])
    np.testing.assert_array_equal(dets.tracker_id, [7, 8])
    assert len(dets) == 2


def test_whole_number_float_class_ids_are_accepted():
    dets = Detections(xyxy=np.zeros((3, 4)), confidence=np.ones(3), class_id=np.array([0.0, 2.0, 1.0]))
    assert dets.class_id.dtype == np.int64
    np.testing.assert_array_equal(dets.class_id, [0, 2, 1])


def test_zero_size_boxes_and_last_class_are_valid():
    dets = Detections(xyxy=[[3, 4, 3, 4]], confidence=[0.1], class_id=[2], class_names=NAMES)
    assert len(dets) == 1
    np.testing.assert_array_equal(dets.area, [0.0])


def test_class_ids_unbounded_without_names():
    dets = Detections(xyxy=np.zeros((1, 4)), confidence=[1.0], class_id=[999])
    assert dets.names == ["999"]


def _kwargs(**over):
    base = dict(
        xyxy=np.array([[0, 0, 1, 1], [2, 2, 4, 4]], np.float32),
        confidence=np.array([0.9, 0.8], np.float32),
        class_id=np.array([0, 1]),
    )
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over",
    [
        pytest.param(dict(xyxy=np.zeros(4)), id="xyxy-1d"),
        pytest.param(dict(xyxy=np.zeros((2, 5))), id="xyxy-5-cols"),
        pytest.param(dict(xyxy=np.zeros((2, 4, 1))), id="xyxy-3d"),
        pytest.param(dict(confidence=np.ones(3)), id="confidence-too-long"),
        pytest.param(dict(confidence=np.ones(1)), id="confidence-too-short"),
        pytest.param(dict(confidence=np.ones((2, 1))), id="confidence-2d"),
        pytest.param(dict(confidence=np.float32(0.5)), id="confidence-scalar"),
        pytest.param(dict(class_id=np.array([0])), id="class-id-too-short"),
        pytest.param(dict(class_id=np.array([[0], [1]])), id="class-id-2d"),
        pytest.param(dict(tracker_id=np.array([1, 2, 3])), id="tracker-too-long"),
        pytest.param(dict(xyxy=np.array([[0, 0, 1, 1], [np.nan, 2, 4, 4]])), id="xyxy-nan"),
        pytest.param(dict(xyxy=np.array([[0, 0, np.inf, 1], [2, 2, 4, 4]])), id="xyxy-inf"),
        pytest.param(dict(xyxy=np.array([[-np.inf, 0, 1, 1], [2, 2, 4, 4]])), id="xyxy-neg-inf"),
        pytest.param(
            dict(xyxy=np.array([[0, 0, 1, 1], [2, 2, 1e39, 4]])),
            id="xyxy-overflows-float32",
            marks=pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
        ),
        pytest.param(dict(confidence=np.array([0.5, np.nan])), id="confidence-nan"),
        pytest.param(dict(confidence=np.array([np.inf, 0.5])), id="confidence-inf"),
        pytest.param(dict(xyxy=np.array([[0, 0, 1, 1], [5, 2, 4, 4]])), id="x2-lt-x1"),
        pytest.param(dict(xyxy=np.array([[0, 3, 1, 1], [2, 2, 4, 4]])), id="y2-lt-y1"),
        pytest.param(dict(class_id=np.array([0, -1])), id="negative-class"),
        pytest.param(dict(class_id=np.array([0, 3]), class_names=NAMES), id="class-beyond-names"),
        pytest.param(dict(class_id=np.array([0.0, 1.5])), id="non-integral-class"),
        pytest.param(dict(class_id=np.array([0.0, np.nan])), id="nan-class"),
        pytest.param(dict(data={"member": np.array([1, 2, 3])}), id="data-too-long"),
        pytest.param(dict(data={"member": np.array([1])}), id="data-too-short"),
        pytest.param(dict(data={"member": np.array(1)}), id="data-scalar"),
    ],
)
def test_invalid_construction_raises(over):
    with pytest.raises(DetectionsError):
        Detections(**_kwargs(**over))


def test_detections_error_is_value_error_and_visionpipe_error():
    with pytest.raises(ValueError):
        Detections(**_kwargs(class_id=np.array([0, -1])))
    with pytest.raises(VisionpipeError):
        Detections(**_kwargs(class_id=np.array([0, -1])))


# --------------------------------------------------------------------------------------------
# Empty detections
# --------------------------------------------------------------------------------------------


def _assert_empty(dets: Detections, names=()):
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4) and dets.xyxy.dtype == np.float32
    assert dets.confidence.shape == (0,) and dets.confidence.dtype == np.float32
    assert dets.class_id.shape == (0,) and dets.class_id.dtype == np.int64
    assert dets.class_names == tuple(names)


def test_empty_constructor():
    dets = Detections.empty(NAMES)
    _assert_empty(dets, NAMES)
    assert dets.tracker_id is None and dets.data == {}


@pytest.mark.parametrize(
    "xyxy", [np.zeros((0, 4)), [], np.zeros(0, np.float64)], ids=["zeros-0x4", "empty-list", "zeros-0"]
)
def test_zero_length_arrays(xyxy):
    dets = Detections(xyxy=xyxy, confidence=[], class_id=[], class_names=NAMES)
    _assert_empty(dets, NAMES)


def test_empty_behaves_normally():
    dets = Detections.empty(NAMES)
    _assert_empty(dets[np.zeros(0, bool)], NAMES)
    _assert_empty(dets[np.zeros(0, np.int64)], NAMES)
    _assert_empty(dets[0:10], NAMES)
    _assert_empty(dets[dets.confidence > 0.5], NAMES)
    assert dets.to_coco(image_id=1) == []
    assert dets.to_coco(image_id=1, category_ids=[1, 2, 3]) == []
    assert dets.to_yolo(width=100, height=100).shape == (0, 5)
    assert dets.names == []
    assert dets.area.shape == (0,)
    assert dets == Detections.empty(NAMES)
    _assert_empty(Detections.concatenate([dets, dets]), NAMES)


def test_filtering_everything_out_gives_empty_with_columns():
    dets = make(4)
    out = dets[dets.confidence > 10]
    _assert_empty(out, NAMES)
    assert out.tracker_id.shape == (0,)
    assert out.data["member"].shape == (0,)
    assert out.data["mask"].shape == (0, 2, 2)


# --------------------------------------------------------------------------------------------
# Indexing keeps every column aligned
# --------------------------------------------------------------------------------------------


def _assert_rows(out: Detections, src: Detections, rows: list[int]):
    assert len(out) == len(rows)
    np.testing.assert_array_equal(out.xyxy, np.stack([src.xyxy[r] for r in rows]) if rows else np.zeros((0, 4)))
    np.testing.assert_array_equal(out.confidence, [src.confidence[r] for r in rows])
    np.testing.assert_array_equal(out.class_id, [src.class_id[r] for r in rows])
    np.testing.assert_array_equal(out.tracker_id, [100 + r for r in rows])  # tracker id = 100 + row
    np.testing.assert_array_equal(out.data["member"], [f"m{r}" for r in rows])
    for k, r in enumerate(rows):
        np.testing.assert_array_equal(out.data["mask"][k], np.arange(4 * r, 4 * r + 4).reshape(2, 2))
    assert out.class_names == src.class_names
    assert out.xyxy.dtype == np.float32 and out.class_id.dtype == np.int64


@pytest.mark.parametrize(
    "index, rows",
    [
        (np.array([True, False, True, True, False]), [0, 2, 3]),
        (np.array([4, 0, 2]), [4, 0, 2]),
        ([1, 1, 3], [1, 1, 3]),
        (slice(1, 4), [1, 2, 3]),
        (slice(None, None, -2), [4, 2, 0]),
        (3, [3]),
        (-1, [4]),
        (np.int64(2), [2]),
    ],
    ids=["bool-mask", "int-array", "int-list", "slice", "reverse-step-slice", "int", "negative-int", "np-int"],
)
def test_indexing_keeps_columns_aligned(index, rows):
    dets = make(5)
    _assert_rows(dets[index], dets, rows)


def test_indexing_by_confidence_mask():
    dets = make(5)  # confidence = 0.1 .. 0.5
    out = dets[dets.confidence > 0.25]
    _assert_rows(out, dets, [2, 3, 4])


def test_indexing_untracked_stays_untracked():
    dets = make(4, tracked=False)
    assert dets[[0, 2]].tracker_id is None


def test_int_index_out_of_range_raises():
    with pytest.raises(IndexError):
        make(3)[3]


# --------------------------------------------------------------------------------------------
# Concatenate
# --------------------------------------------------------------------------------------------


def test_concatenate_stacks_all_columns():
    dets = make(5)
    out = Detections.concatenate([dets[[0, 1]], dets[[4]], dets[[2, 3]]])
    _assert_rows(out, dets, [0, 1, 4, 2, 3])


def test_concatenate_untracked_and_empty_parts():
    dets = make(3, tracked=False)
    no_rows = Detections(
        xyxy=np.zeros((0, 4)),
        confidence=[],
        class_id=[],
        data={"member": np.zeros(0, dets.data["member"].dtype), "mask": np.zeros((0, 2, 2), int)},
        class_names=NAMES,
    )
    out = Detections.concatenate([no_rows, dets, no_rows])
    assert len(out) == 3 and out.tracker_id is None
    np.testing.assert_array_equal(out.xyxy, dets.xyxy)
    np.testing.assert_array_equal(out.data["member"], ["m0", "m1", "m2"])
    assert out.data["mask"].shape == (3, 2, 2)


def test_concatenate_nothing_is_empty():
    _assert_empty(Detections.concatenate([]))


def test_concatenate_different_names_raises():
    a = make(2)
    b = make(2, names=("x", "y", "z"))
    with pytest.raises(DetectionsError):
        Detections.concatenate([a, b])


def test_concatenate_different_data_keys_raises():
    a = make(2)
    b = Detections(
        xyxy=a.xyxy,
        confidence=a.confidence,
        class_id=a.class_id,
        tracker_id=a.tracker_id,
        data={"member": a.data["member"]},
        class_names=NAMES,
    )
    with pytest.raises(DetectionsError):
        Detections.concatenate([a, b])


def test_concatenate_tracked_with_untracked_raises():
    with pytest.raises(DetectionsError):
        Detections.concatenate([make(2), make(2, tracked=False)])


# --------------------------------------------------------------------------------------------
# Equality, names, area
# --------------------------------------------------------------------------------------------


def test_equality():
    assert make(4) == make(4)
    assert make(4) != make(3)
    assert make(4) != make(4, tracked=False)
    assert make(4) != make(4, names=("a", "b", "c"))
    other = make(4)
    other.confidence[1] += 0.01
    assert make(4) != other
    other = make(4)
    other.tracker_id[0] = 1
    assert make(4) != other
    other = make(4)
    other.data["mask"][2, 0, 0] = -1
    assert make(4) != other
    other = make(4)
    other.data["extra"] = np.zeros(4)
    assert make(4) != other
    other = make(4)
    other.class_id[3] = 2
    assert make(4) != other
    assert (make(2) == "not detections") is False


def test_names():
    dets = Detections(xyxy=np.zeros((3, 4)), confidence=np.ones(3), class_id=[2, 0, 2], class_names=NAMES)
    assert dets.names == ["dog", "person", "dog"]
    anonymous = Detections(xyxy=np.zeros((2, 4)), confidence=np.ones(2), class_id=[5, 0])
    assert anonymous.names == ["5", "0"]


def test_area():
    dets = Detections(xyxy=[[0, 0, 2, 3], [1, 1, 5, 2]], confidence=[1, 1], class_id=[0, 0])
    np.testing.assert_allclose(dets.area, [6.0, 4.0])


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------


def _coco_dets():
    return Detections(
        xyxy=[[10, 20, 50, 80], [0.5, 1.5, 2.5, 4.0], [100, 100, 100.25, 130]],
        confidence=[0.9, 0.5, 0.125],
        class_id=[0, 2, 1],
        class_names=NAMES,
    )


def test_to_coco_with_list_mapping():
    records = _coco_dets().to_coco(image_id=42, category_ids=[1, 3, 18])
    assert records == [
        # bbox = x1, y1, x2 - x1, y2 - y1
        {"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9},
        {"image_id": 42, "category_id": 18, "bbox": [0.5, 1.5, 2.0, 2.5], "score": 0.5},
        {"image_id": 42, "category_id": 3, "bbox": [100.0, 100.0, 0.25, 30.0], "score": 0.125},
    ]
    json.dumps(records)  # plain Python types only
    assert all(type(v) is float for r in records for v in r["bbox"])
    assert all(type(r["category_id"]) is int and type(r["score"]) is float for r in records)


def test_to_coco_with_dict_mapping_and_without_mapping():
    dets = _coco_dets()
    by_dict = dets.to_coco(image_id=7, category_ids={0: 11, 1: 12, 2: 13})
    assert [r["category_id"] for r in by_dict] == [11, 13, 12]
    plain = dets.to_coco(image_id=7)
    assert [r["category_id"] for r in plain] == [0, 2, 1]
    assert [r["image_id"] for r in plain] == [7, 7, 7]


@pytest.mark.parametrize("mapping", [[1, 3], {0: 1, 1: 3}], ids=["short-list", "dict-missing-class"])
def test_to_coco_missing_category_raises(mapping):
    with pytest.raises(DetectionsError):
        _coco_dets().to_coco(image_id=1, category_ids=mapping)


def test_from_coco_hand_computed():
    records = [
        {"image_id": 1, "category_id": 18, "bbox": [10, 20, 40, 60], "score": 0.75},
        {"image_id": 1, "category_id": 1, "bbox": [0.5, 1.5, 2.0, 2.5]},  # ground truth: no score
    ]
    dets = Detections.from_coco(records, category_to_class={1: 0, 3: 1, 18: 2}, class_names=NAMES)
    np.testing.assert_array_equal(dets.xyxy, [[10, 20, 50, 80], [0.5, 1.5, 2.5, 4.0]])
    np.testing.assert_array_equal(dets.confidence, [0.75, 1.0])
    np.testing.assert_array_equal(dets.class_id, [2, 0])
    assert dets.class_names == NAMES
    unmapped = Detections.from_coco(records)
    np.testing.assert_array_equal(unmapped.class_id, [18, 1])


def test_from_coco_unknown_category_raises():
    with pytest.raises(DetectionsError):
        Detections.from_coco([{"category_id": 5, "bbox": [0, 0, 1, 1]}], category_to_class={1: 0})


def test_from_coco_empty():
    _assert_empty(Detections.from_coco([], class_names=NAMES), NAMES)


def test_coco_round_trip():
    dets = _coco_dets()
    category_ids = [1, 3, 18]
    records = dets.to_coco(image_id=3, category_ids=category_ids)
    back = Detections.from_coco(records, {c: k for k, c in enumerate(category_ids)}, class_names=NAMES)
    assert back == dets


# --------------------------------------------------------------------------------------------
# YOLO
# --------------------------------------------------------------------------------------------


def _yolo_dets():
    return Detections(
        xyxy=[[20, 10, 60, 50], [0, 0, 200, 100], [150, 75, 160, 100]],
        confidence=[0.5, 0.25, 1.0],
        class_id=[2, 0, 1],
        class_names=NAMES,
    )


# Image 200 wide, 100 high.
# box 0: cx = 40/200 = 0.2, cy = 30/100 = 0.3, w = 40/200 = 0.2, h = 40/100 = 0.4
# box 1: the whole image -> 0.5 0.5 1 1
# box 2: cx = 155/200 = 0.775, cy = 87.5/100 = 0.875, w = 10/200 = 0.05, h = 25/100 = 0.25
YOLO_ROWS = np.array(
    [
        [2, 0.2, 0.3, 0.2, 0.4],
        [0, 0.5, 0.5, 1.0, 1.0],
        [1, 0.775, 0.875, 0.05, 0.25],
    ]
)


def test_to_yolo_hand_computed():
    rows = _yolo_dets().to_yolo(width=200, height=100)
    assert rows.shape == (3, 5)
    np.testing.assert_allclose(rows, YOLO_ROWS, rtol=0, atol=1e-12)


def test_to_yolo_with_confidence():
    rows = _yolo_dets().to_yolo(width=200, height=100, with_confidence=True)
    assert rows.shape == (3, 6)
    np.testing.assert_allclose(rows[:, :5], YOLO_ROWS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rows[:, 5], [0.5, 0.25, 1.0])


def test_from_yolo_hand_computed_labels_and_predictions():
    labels = Detections.from_yolo(YOLO_ROWS, width=200, height=100, class_names=NAMES)
    np.testing.assert_allclose(labels.xyxy, [[20, 10, 60, 50], [0, 0, 200, 100], [150, 75, 160, 100]], atol=1e-4)
    np.testing.assert_array_equal(labels.confidence, [1, 1, 1])
    np.testing.assert_array_equal(labels.class_id, [2, 0, 1])
    assert labels.class_id.dtype == np.int64
    assert labels.class_names == NAMES

    preds = Detections.from_yolo(np.c_[YOLO_ROWS, [0.5, 0.25, 1.0]], width=200, height=100)
    np.testing.assert_array_equal(preds.confidence, np.float32([0.5, 0.25, 1.0]))


def test_yolo_width_and_height_by_name_only():
    with pytest.raises(TypeError):
        _yolo_dets().to_yolo(200, 100)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Detections.from_yolo(YOLO_ROWS, 200, 100)  # type: ignore[misc]


def test_yolo_round_trip():
    dets = _yolo_dets()
    back = Detections.from_yolo(
        dets.to_yolo(width=200, height=100, with_confidence=True), width=200, height=100, class_names=NAMES
    )
    np.testing.assert_allclose(back.xyxy, dets.xyxy, atol=1e-4)
    np.testing.assert_array_equal(back.confidence, dets.confidence)
    np.testing.assert_array_equal(back.class_id, dets.class_id)


def test_yolo_round_trip_random():
    rng = np.random.default_rng(3)
    w, h = 640, 427
    xy = rng.uniform(0, 300, size=(20, 2))
    wh = rng.uniform(0, 120, size=(20, 2))
    dets = Detections(np.c_[xy, xy + wh], rng.uniform(0, 1, 20), rng.integers(0, 3, 20), class_names=NAMES)
    back = Detections.from_yolo(
        dets.to_yolo(width=w, height=h, with_confidence=True), width=w, height=h, class_names=NAMES
    )
    np.testing.assert_allclose(back.xyxy, dets.xyxy, atol=1e-3)
    np.testing.assert_array_equal(back.class_id, dets.class_id)
    np.testing.assert_array_equal(back.confidence, dets.confidence)


def test_from_yolo_empty():
    _assert_empty(Detections.from_yolo(np.zeros((0, 5)), width=10, height=10, class_names=NAMES), NAMES)


@pytest.mark.parametrize("columns", [4, 7, 1])
def test_from_yolo_bad_column_count_raises(columns):
    with pytest.raises(DetectionsError):
        Detections.from_yolo(np.full((2, columns), 0.5), width=100, height=100)


def test_from_yolo_3d_rows_raise():
    with pytest.raises(DetectionsError):
        Detections.from_yolo(np.full((2, 5, 1), 0.5), width=100, height=100)


def test_from_yolo_non_integral_class_raises():
    with pytest.raises(DetectionsError):
        Detections.from_yolo(np.array([[0.5, 0.5, 0.5, 0.2, 0.2]]), width=100, height=100)


def test_to_records_is_what_image_and_video_json_outputs_both_write():
    from visionpipe.io.formats import result_record
    from visionpipe.results import Result
    from visionpipe.video.frames import Frame
    from visionpipe.video.processor import FrameResult
    from visionpipe.video.sinks import frame_record

    dets = Detections(
        xyxy=np.array([[1.23456, 2.5, 10.0001, 20.99999]], np.float32),
        confidence=np.array([0.9123456], np.float32),
        class_id=np.array([1]),
        tracker_id=np.array([7]),
        data={"polygon": np.array([[[1.234, 2.345], [3.456, 4.567]]], np.float32)},
        class_names=("a", "b"),
    )
    (record,) = dets.to_records()
    # the names of the Detections columns (one vocabulary from the API to every JSON output)
    assert set(record) == {"xyxy", "confidence", "class_id", "class_name", "tracker_id", "polygon"}
    assert record["xyxy"] == [round(float(v), 3) for v in dets.xyxy[0]]
    assert record["confidence"] == round(float(dets.confidence[0]), 5)
    assert (record["class_id"], record["class_name"], record["tracker_id"]) == (1, "b", 7)
    assert record["polygon"] == [[1.23, 2.35], [3.46, 4.57]]
    image = result_record(Result(index=0, image_id="x", source="x.jpg", image_size=(30, 40), detections=dets))
    frame = Frame(index=0, timestamp=0.0, image=np.zeros((30, 40, 3), np.uint8), captured_at=0.0)
    video = frame_record(FrameResult(frame=frame, detections=dets, error=None, finished_at=0.0))
    assert image["detections"] == video["detections"] == [record]
