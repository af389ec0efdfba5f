"""The Python video flow cannot hang: VideoProcessor takes a path and starts on first use (or raises),
and every way of reading results ends. Plus: the drawn overlay (line, zones, counts) and the
line-crossing convention against supervision's LineZone.

Each flow runs in a thread joined with a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import supervision as sv

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Detections, Pipeline
from visionpipe.errors import VideoSourceError
from visionpipe.video.processor import VideoProcessor
from visionpipe.video.sinks import VideoFileSink
from visionpipe.video.zones import LineCounter, PolygonZone

HANG = 60.0  # seconds; only reached when something hangs
FRAMES = 12


def within(seconds: float, job):
    """Run ``job()`` in a thread; its result, or a test failure if it has not finished in time."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = job()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: the video API hung")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    values = np.zeros((4 + 2, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)  # one planted box: cx, cy, w, h on a 64x64 input
    values[4, 0] = 0.9
    path = constant_model(tmp_path_factory.mktemp("model") / "tiny.onnx", values, input_hw=(64, 64))
    with Pipeline(visionpipe.load_model(path, family="yolov8")) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A real MP4 file of FRAMES 64x64 frames (OpenCV's mp4v writer)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((64, 64, 3), 20 * i % 256, np.uint8))
    writer.release()
    return path


def test_a_path_and_results_without_start_processes_the_whole_file(pipeline, clip):
    """The README's flow: construct with a path, iterate results() (no start() call), stop."""

    def flow():
        processor = VideoProcessor(pipeline, str(clip))
        frames = [r.frame.index for r in processor.results()]
        stats = processor.stop()
        return frames, stats

    frames, stats = within(HANG, flow)
    assert frames == list(range(FRAMES))
    assert stats.processed == stats.captured == FRAMES


def test_a_path_object_in_a_with_block_and_iteration(pipeline, clip):
    def flow():
        with VideoProcessor(pipeline, clip) as processor:
            return [len(r.detections) for r in processor]

    assert within(HANG, flow) == [1] * FRAMES


def test_results_after_the_end_or_after_stop_return_at_once(pipeline, clip):
    def flow():
        processor = VideoProcessor(pipeline, clip)
        first = list(processor.results())
        again = list(processor.results())  # exhausted: ends, does not wait for more
        processor.stop()
        after_stop = list(processor.results())
        return len(first), again, after_stop

    assert within(HANG, flow) == (FRAMES, [], [])


def test_a_missing_file_raises_on_first_use_instead_of_waiting(pipeline, tmp_path):
    processor = VideoProcessor(pipeline, tmp_path / "no-such-clip.mp4")
    with pytest.raises(VideoSourceError):
        within(HANG, lambda: list(processor.results()))


def test_a_stopped_processor_cannot_be_restarted(pipeline, clip):
    processor = VideoProcessor(pipeline, clip)
    within(HANG, processor.run)
    with pytest.raises(RuntimeError, match="stopped"):
        processor.start()


# -- overlay --------------------------------------------------------------------------------------


def test_the_annotated_video_shows_the_line_and_the_zone(pipeline, tmp_path):
    """Pixels of a decoded frame: the line's colour along the line, the zone's along its edge, and
    the detection's box drawn on top of the zone (labels and boxes come last)."""
    from visionpipe.video.tracking import ByteTracker

    clip = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for _ in range(4):
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    out = tmp_path / "annotated.mp4"
    zone = PolygonZone([(20, 20), (300, 20), (300, 220), (20, 220)])
    line = LineCounter((0, 200), (320, 200))

    def flow():
        processor = VideoProcessor(
            pipeline, clip, tracker=ByteTracker(), line_counter=line, zones=[zone], sinks=[VideoFileSink(out, 10.0)]
        )
        return [r.overlay for r in processor.results()], processor.stop()

    overlays, _ = within(HANG, flow)
    assert all(o is not None and o.line is not None and len(o.zones) == 1 for o in overlays)
    assert overlays[-1].zones[0].count == 1  # the planted box stands in the zone
    capture = cv2.VideoCapture(str(out))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (240, 320, 3)

    def share(pixels: np.ndarray, colour) -> float:  # video compression moves colours a little
        return float((np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) < 70).mean())

    # the line (magenta) along row 200, away from its two count labels in the middle
    assert share(np.concatenate([frame[200, 5:100], frame[200, 220:315]]), (255, 0, 255)) > 0.8
    # the zone (cyan) along its right edge, x = 300, below its label
    assert share(frame[60:190, 300], (255, 255, 0)) > 0.8
    # the grey background elsewhere
    assert share(frame[100:110, 250:260].reshape(-1, 3), (90, 90, 90)) > 0.9


def test_line_counter_counts_like_supervision_line_zone():
    """The same tracks through the same start and end give the same in and out counts as
    supervision's LineZone (boxes small and moves long, so its four-corner rule and our one
    anchor agree on every move)."""
    start, end = (0.0, 100.0), (200.0, 100.0)
    ours = LineCounter(start, end)
    theirs = sv.LineZone(start=sv.Point(*start), end=sv.Point(*end))
    paths = {
        1: [(50, 150), (50, 60), (50, 30)],  # walks up
        2: [(120, 40), (120, 140), (120, 160)],  # walks down
        3: [(160, 150), (160, 40), (160, 150), (160, 40)],  # up, down, up
    }
    for step in range(4):
        live = [(tid, path[step]) for tid, path in paths.items() if step < len(path)]
        points = np.array([p for _, p in live], np.float64)
        dets = Detections(
            xyxy=np.concatenate([points - 4, points + 4], axis=1),
            confidence=np.full(len(live), 0.9),
            class_id=np.zeros(len(live), np.int64),
            tracker_id=[tid for tid, _ in live],
        )
        ours.update(dets)
        theirs.trigger(dets.to_supervision())
    assert (theirs.in_count, theirs.out_count) == (3, 2)
    assert (ours.in_count, ours.out_count) == (theirs.in_count, theirs.out_count)


def test_the_readme_video_flow_runs_to_its_end_within_a_timeout(assets, capsys):
    """The README's Python video example, executed as written (assets path adjusted), in a thread
    joined with a timeout."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.+?)\n```", readme, flags=re.S) if "VideoProcessor(" in b]
    code = compile(block.replace('Path("../shared/assets")', f"Path({str(assets)!r})"), "README.md", "exec")
    within(HANG * 3, lambda: exec(code, {}))
    printed = capsys.readouterr().out
    processed, ins, outs = (int(v) for v in re.findall(r"(\d+) frames, (\d+) in, (\d+) out", printed)[0])
    assert processed == 140  # 1394 frames, every 10th
    assert ins + outs >= 0


def test_labels_are_drawn_over_the_status_line_and_counts_not_under(tmp_path):
    """A box in the bottom-left corner puts its label where the status line goes: the label
    (filled with the class colour) must be what the frame shows there."""
    from visionpipe.io.annotate import class_colour
    from visionpipe.video.frames import Frame
    from visionpipe.video.processor import FrameResult, LineOverlay, Overlay

    image = np.full((240, 320, 3), 90, np.uint8)
    dets = Detections(xyxy=[[0, 230, 120, 239]], confidence=[0.9], class_id=[0], class_names=("person",))
    overlay = Overlay(line=LineOverlay((0, 225), (320, 225), 12, 34))
    sink = VideoFileSink(tmp_path / "one.mp4", 10.0)
    frame = Frame(index=0, timestamp=0.0, image=image, captured_at=0.0)
    sink.write(FrameResult(frame, dets, None, 0.02, None, overlay))
    sink.close()
    capture = cv2.VideoCapture(str(tmp_path / "one.mp4"))
    ok, drawn = capture.read()
    capture.release()
    assert ok
    # the label box sits just above the detection (rows ~214..229) from x = 0, where the status
    # line's black box and the line's count labels would otherwise be
    region = drawn[218:228, 2:40].reshape(-1, 3).astype(int)
    colour = np.array(class_colour(0))
    assert (np.abs(region - colour).max(axis=1) < 70).mean() > 0.5
