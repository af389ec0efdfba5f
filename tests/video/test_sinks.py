"""The annotated MP4 sink writes readable files with either writer, and the JSONL sink one line per frame."""

from __future__ import annotations

import builtins
import json

import cv2
import numpy as np
import pytest

from visionpipe import Detections
from visionpipe.video.frames import Frame
from visionpipe.video.processor import FrameResult
from visionpipe.video.sinks import JsonlSink, VideoFileSink


def result(i: int, size=(433, 769)) -> FrameResult:
    image = np.full((*size, 3), (i * 10) % 256, np.uint8)
    dets = Detections(
        xyxy=[[10, 20, 110, 220]], confidence=[0.9], class_id=[0], tracker_id=[7], class_names=("person",)
    )
    return FrameResult(Frame(i, image, i / 10, 0.0), dets, None, 0.05)


def read_all(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


@pytest.fixture(params=["pyav", "opencv"])
def writer(request, monkeypatch):
    if request.param == "opencv":  # as on a machine without the optional PyAV
        real_import = builtins.__import__

        def no_av(name, *args, **kwargs):
            if name == "av":
                raise ImportError("no av here")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_av)
    return request.param


def test_video_sink_writes_every_frame_readably(tmp_path, writer):
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path, lambda: 10.0)
    for i in range(12):
        sink.write(result(i))
    assert sink.backend == writer
    sink.close()
    frames = read_all(path)
    assert len(frames) == 12
    # the odd-sized frames come back at (nearly) their size: H.264 needs even sides
    height, width = frames[0].shape[:2]
    assert abs(height - 433) <= 1 and abs(width - 769) <= 1
    # annotation is drawn: the box edge at x=10 differs from the flat background
    assert np.abs(frames[5][100:200, 8:13].astype(int) - 50).max() > 40


def test_jsonl_sink_writes_one_line_per_frame_with_track_ids(tmp_path):
    sink = JsonlSink(tmp_path / "f.jsonl")
    for i in range(3):
        sink.write(result(i))
    sink.close()
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2]
    assert lines[1]["detections"][0] == {
        "xyxy": [10.0, 20.0, 110.0, 220.0],
        "confidence": 0.9,
        "class_id": 0,
        "class_name": "person",
        "tracker_id": 7,
    }
    assert lines[2]["latency_ms"] == 50.0 and lines[0]["error"] is None
