"""Accuracy ingestion on the real val2017 photos: equals `visionpipe eval` on the same detections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from visionpipe import Pipeline
from visionpipe.detections import Detections
from visionpipe.monitor import Monitor
from visionpipe.monitor.accuracy import ingest_labels, precision_recall
from visionpipe.results import Result

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, asset):
    """YOLOX-Nano at the evaluation settings over the 64 val photos, monitored into SQLite."""
    store = tmp_path_factory.mktemp("accuracy") / "monitor.db"
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))
    clock = iter(np.arange(len(photos)) * 600.0 + 1_800_000_000.0)  # 10 min apart: several hourly windows
    model = {"model": asset("models/yolox_nano_416_coco.onnx"), "family": "yolox"}
    with Pipeline(model, conf=0.01, max_det=300) as pipe, Monitor(store, clock=lambda: next(clock)) as monitor:
        pipe.monitor = monitor
        pipe.run(photos)
    return store


def test_ingested_map_equals_visionpipe_eval(monitored, asset):
    annotations = asset("coco/annotations/instances_val2017_dev64.json")
    with Monitor(monitored) as monitor:
        report = ingest_labels(monitor.store, annotations)
        saved = monitor.store.accuracy()
    command = [
        sys.executable, "-m", "visionpipe", "eval", "-m", str(asset("models/yolox_nano_416_coco.onnx")),
        "--family", "yolox", "--images", str(asset("coco/images/val2017")), "--annotations", str(annotations),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    assert report.matched == 64 and report.unmatched_labels == 0
    assert abs(report.overall.map_50_95 - expected["map_50_95"]) <= 1e-9
    assert abs(report.overall.map_50 - expected["map_50"]) <= 1e-9
    assert len(report.windows) == len(saved) >= 10  # 64 images 10 minutes apart
    assert sum(w.images for w in report.windows) == 64
    assert saved[0][4] == pytest.approx(report.windows[0].map_50_95)


def test_yolo_txt_labels_give_the_same_map_as_the_coco_json(monitored, asset):
    with Monitor(monitored) as monitor:
        from_json = ingest_labels(monitor.store, asset("coco/annotations/instances_val2017_dev64.json"))
        from_txt = ingest_labels(monitor.store, asset("coco/labels/val2017"))
    assert from_txt.matched == 64
    # the json's boxes were made from these txt files; only float rounding may differ
    assert from_txt.overall.map_50_95 == pytest.approx(from_json.overall.map_50_95, abs=1e-4)
    person = from_txt.overall.per_class["person"]
    assert 0 < person["precision"] <= 1 and 0 < person["recall"] <= 1


def test_precision_recall_by_hand():
    truth = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [100, 100, 10, 10], "iscrowd": 1},
        ],
    }
    dets = Detections(
        xyxy=[[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110], [0, 0, 10, 10]],
        confidence=[0.9, 0.8, 0.1, 0.9, 0.7],
        class_id=[0, 0, 0, 1, 1],
        class_names=("person", "car"),
    )
    pr = precision_recall([Result(0, "a.jpg", "a.jpg", detections=dets)], truth, ("person", "car"), conf=0.5)
    # person: the 0.9 box matches, the 0.8 duplicate is a false positive, the 0.1 box is under conf
    assert pr["person"]["precision"] == 0.5 and pr["person"]["recall"] == 0.5
    # car: the only ground truth is a crowd region (ignored), so both car boxes are false positives
    assert pr["car"]["precision"] == 0.0 and pr["car"]["recall"] is None
