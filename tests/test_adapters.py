"""Adapters to the neighbouring libraries: supervision (the real package), Ultralytics-shaped results
(ultralytics itself is too heavy to install here: a stand-in with its attribute layout and torch
tensors), pandas, FiftyOne (not installed: only the pure conversion and the missing-extra error are
tested), plus PIL and list inputs, ``Result.plot`` and ``visionpipe.annotate``."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import supervision as sv
import torch
from PIL import Image

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Detections, Pipeline
from visionpipe.errors import DetectionsError, MissingExtraError
from visionpipe.io.formats import results_to_pandas

NAMES = ("person", "car", "dog")


@pytest.fixture
def tracked() -> Detections:
    return Detections(
        xyxy=np.array([[10.5, 20.25, 110.0, 220.0], [0, 0, 5, 5], [300, 40, 350.75, 90]], np.float32),
        confidence=np.array([0.9, 0.42, 0.77], np.float32),
        class_id=np.array([0, 2, 1], np.int64),
        tracker_id=np.array([7, 3, 12], np.int64),
        data={"member": np.array([0, 1, 1])},
        class_names=NAMES,
    )


# -- supervision --------------------------------------------------------------------------------------


def test_supervision_round_trip_keeps_boxes_scores_classes_track_ids_and_data(tracked):
    theirs = tracked.to_supervision()
    assert isinstance(theirs, sv.Detections)
    np.testing.assert_array_equal(theirs.xyxy, tracked.xyxy)
    np.testing.assert_array_equal(theirs.confidence, tracked.confidence)
    np.testing.assert_array_equal(theirs.class_id, tracked.class_id)
    np.testing.assert_array_equal(theirs.tracker_id, tracked.tracker_id)
    assert theirs.data["class_name"].tolist() == ["person", "dog", "car"]
    # supervision's own operations work on it: filtering keeps every column aligned
    strong = theirs[theirs.confidence > 0.5]
    assert strong.tracker_id.tolist() == [7, 12] and strong.data["class_name"].tolist() == ["person", "car"]

    back = Detections.from_supervision(theirs, class_names=NAMES)
    assert back == tracked
    # without class_names, the names come from supervision's data["class_name"]
    inferred = Detections.from_supervision(theirs)
    assert inferred.names == tracked.names and inferred.class_names == NAMES


def test_supervision_merge_of_two_frames_comes_back_with_its_ids(tracked):
    """supervision's own operations (merge, filtering) on converted detections keep track ids."""
    merged = sv.Detections.merge([tracked[:1].to_supervision(), tracked[1:].to_supervision()])
    back = Detections.from_supervision(merged, class_names=NAMES)
    assert back == tracked


def test_from_supervision_of_ground_truth_and_untyped_boxes():
    gt = sv.Detections(xyxy=np.array([[1, 2, 3, 4]], np.float32), class_id=np.array([1]))
    back = Detections.from_supervision(gt, class_names=NAMES)
    assert back.confidence.tolist() == [1.0] and back.names == ["car"]
    with pytest.raises(DetectionsError, match="class_id"):
        Detections.from_supervision(sv.Detections(xyxy=np.array([[1, 2, 3, 4]], np.float32)))
    assert len(Detections.from_supervision(sv.Detections.empty())) == 0


# -- Ultralytics --------------------------------------------------------------------------------------


def ultralytics_like(track: bool) -> SimpleNamespace:
    """The attributes of an ``ultralytics.engine.results.Results`` that hold detections:
    ``boxes.xyxy`` (N, 4), ``boxes.conf`` (N,), ``boxes.cls`` (N,) float tensors, ``boxes.id``
    (N,) or None, and ``names`` {id: name}."""
    boxes = SimpleNamespace(
        xyxy=torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 50.0, 60.0]]),
        conf=torch.tensor([0.8, 0.6]),
        cls=torch.tensor([2.0, 0.0]),
        id=torch.tensor([4.0, 9.0]) if track else None,
    )
    return SimpleNamespace(boxes=boxes, names={0: "person", 1: "bicycle", 2: "car"})


@pytest.mark.parametrize("track", [False, True])
def test_from_ultralytics(track):
    dets = Detections.from_ultralytics(ultralytics_like(track))
    assert dets.class_names == ("person", "bicycle", "car")
    assert dets.names == ["car", "person"]
    np.testing.assert_allclose(dets.xyxy, [[10, 20, 30, 40], [5, 5, 50, 60]])
    np.testing.assert_allclose(dets.confidence, [0.8, 0.6])
    assert (dets.tracker_id.tolist() if track else dets.tracker_id) == ([4, 9] if track else None)


# -- pandas -------------------------------------------------------------------------------------------


def test_to_pandas(tracked):
    frame = tracked.to_pandas()
    assert list(frame.columns) == ["x1", "y1", "x2", "y2", "confidence", "class_id", "class_name", "tracker_id"]
    assert frame["class_name"].tolist() == ["person", "dog", "car"]
    assert frame["x1"].tolist() == pytest.approx([10.5, 0, 300])
    assert len(Detections.empty(NAMES).to_pandas()) == 0


def test_results_to_pandas_keeps_images_without_detections(tracked):
    from visionpipe.errors import ImageDecodeError
    from visionpipe.results import Result

    results = [
        Result(index=0, image_id="a.jpg", source="a.jpg", image_size=(480, 640), detections=tracked),
        Result(index=1, image_id="b.jpg", source="b.jpg", image_size=(480, 640), detections=Detections.empty(NAMES)),
        Result(index=2, image_id="c.jpg", source="c.jpg", error=ImageDecodeError("c.jpg", "truncated")),
    ]
    frame = results_to_pandas(results)
    assert frame["path"].tolist() == ["a.jpg"] * 3 + ["b.jpg", "c.jpg"]
    empty = frame[frame["path"] == "b.jpg"].iloc[0]
    assert pd.isna(empty["x1"]) and pd.isna(empty["class_id"]) and pd.isna(empty["error"])
    assert "truncated" in frame[frame["path"] == "c.jpg"].iloc[0]["error"]
    assert frame["confidence"].dtype == np.float64


# -- FiftyOne (not installed here) --------------------------------------------------------------------


def test_fiftyone_fields_are_relative_top_left_width_height(tracked):
    from visionpipe.adapters import fiftyone_fields

    fields = fiftyone_fields(tracked, width=400, height=250)
    # FiftyOne's bounding_box: [top-left x, top-left y, width, height] / image size
    assert fields[0]["bounding_box"] == pytest.approx([10.5 / 400, 20.25 / 250, 99.5 / 400, 199.75 / 250])
    assert fields[0]["label"] == "person" and fields[0]["confidence"] == pytest.approx(0.9)
    assert [f["index"] for f in fields] == [7, 3, 12]


def test_to_fiftyone_without_fiftyone_names_the_extra(tracked, monkeypatch):
    monkeypatch.setitem(sys.modules, "fiftyone", None)  # as if not installed, whatever the machine has
    with pytest.raises(MissingExtraError, match="fiftyone"):
        tracked.to_fiftyone(width=400, height=250)


# -- Pipeline inputs, plot, annotate ------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path):
    """A dynamic-batch YOLOv8-layout graph with one planted box (class 0, score 0.9) on a 64x64 input."""
    values = np.zeros((4 + 2, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)
    values[4, 0] = 0.9
    return visionpipe.load_model(constant_model(tmp_path / "tiny.onnx", values, input_hw=(64, 64)), family="yolov8")


def test_pipeline_takes_pil_images_and_lists(tiny):
    bgr = np.zeros((64, 64, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in BGR
    pil = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    with Pipeline(tiny) as pipe:
        from_array = pipe(bgr)
        from_pil = pipe(pil)
        many = pipe([bgr, pil, pil.convert("L")])
        results = pipe.run([pil])
    assert from_pil == from_array and len(from_pil) == 1
    assert isinstance(many, list) and len(many) == 3 and all(isinstance(d, Detections) for d in many)
    assert many[1] == from_array
    assert results[0].ok and results[0].image_size == (64, 64)


def test_pil_image_is_read_as_rgb_not_bgr():
    from visionpipe.io.images import as_image_input

    pil = Image.new("RGB", (4, 2), (255, 0, 0))
    array = as_image_input(pil)
    assert array.shape == (2, 4, 3) and array[0, 0].tolist() == [0, 0, 255]  # red, in BGR order


def test_result_plot_and_top_level_annotate(tiny, tmp_path):
    path = tmp_path / "grey.png"
    image = np.full((64, 64, 3), 128, np.uint8)
    assert cv2.imwrite(str(path), image)
    with Pipeline(tiny) as pipe:
        (result,) = pipe.run([path])
        (from_array,) = pipe.run([image])
    drawn = result.plot()
    assert drawn.shape == image.shape and (np.abs(drawn.astype(int) - 128).max(axis=2) > 60).sum() > 20
    np.testing.assert_array_equal(drawn, visionpipe.annotate(image, result.detections))
    np.testing.assert_array_equal(from_array.plot(image), drawn)
    with pytest.raises(ValueError, match="pass the image"):
        from_array.plot()


def test_class_name_is_per_box_and_class_names_the_mapping(tracked):
    assert tracked.class_name.tolist() == ["person", "dog", "car"] == tracked.names
    assert tracked.class_names == NAMES  # Ultralytics' `names`: the id -> name list
    assert Detections.empty(NAMES).class_name.shape == (0,)
