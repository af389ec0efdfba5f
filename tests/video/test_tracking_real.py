"""Tracking on the real person clip keeps one id per person while they are visible.

Hand labels, by eye from a contact sheet of the clip (one person walks through at a time): the
frames below show, in turn, six different people — A: blonde hair, grey cardigan; B: black hoodie;
C: long blonde hair, black top; D: black T-shirt and glasses; E: dark hair, grey cardigan;
F: grey shirt, jeans.
"""

from __future__ import annotations

import pytest

from visionpipe import Pipeline
from visionpipe.video.processor import VideoProcessor
from visionpipe.video.sources import CaptureSource
from visionpipe.video.tracking import ByteTracker

PEOPLE = {
    "A": [80, 150, 190],
    "B": [260, 350, 440],
    "C": [530, 620, 690],
    "D": [760, 850],
    "E": [960, 1060, 1180],
    "F": [1260, 1350],
}


@pytest.fixture(scope="module")
def person_clip_detections(asset):
    """YOLOX-Nano's detections on every frame of the person clip, untracked (run once, tracked
    several ways below)."""
    frames: dict[int, object] = {}
    with Pipeline({"model": asset("models/yolox_nano_416_coco.onnx"), "family": "yolox"}, conf=0.1) as pipeline:
        stats = VideoProcessor(
            pipeline, CaptureSource(asset("video/one-by-one-person-detection.mp4")), policy="wait"
        ).run(lambda result: frames.__setitem__(result.frame.index, result.detections))
    assert stats.processed == 1394 and stats.errors == 0
    return [frames[i] for i in range(stats.processed)]


SETTINGS = {
    "defaults": {},
    # ByteTrack's own decisions: no duplicate-label rule, the Kalman box out (its published
    # settings are the defaults: class-agnostic, score fusion, thresholds 0.5/0.1/0.6, match 0.8)
    "bytetrack-equivalent": {"duplicate_iou": None, "box": "kalman"},
}


@pytest.mark.real
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_each_person_keeps_one_track_id_while_visible(person_clip_detections, settings):
    labelled = {frame for frames in PEOPLE.values() for frame in frames}
    tracker = ByteTracker(**settings)
    ids_at: dict[int, list[int]] = {}
    for index, detections in enumerate(person_clip_detections):
        tracked = tracker.update(detections)
        if index in labelled:
            ids_at[index] = tracked.tracker_id[[n == "person" for n in tracked.names]].tolist()

    # exactly one tracked person in every labelled frame (they walk through one at a time)
    assert {frame: len(ids) for frame, ids in ids_at.items()} == {frame: 1 for frame in labelled}
    person_ids = {person: {ids_at[frame][0] for frame in frames} for person, frames in PEOPLE.items()}
    for person, ids in person_ids.items():
        assert len(ids) == 1, f"person {person} changed track id: {ids}"
    assert len({next(iter(ids)) for ids in person_ids.values()}) == len(PEOPLE), person_ids
