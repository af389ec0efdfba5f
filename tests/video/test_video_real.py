"""VideoProcessor on the real clip (shared assets): offline completeness and exactness with YOLOX,
live-style playback with bounded latency and flat memory, and a truncated file.

Clip: video/one-by-one-person-detection.mp4 (MANIFEST: 1394 frames, 10 fps, 768x432).
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Pipeline
from visionpipe.video.processor import DropCause, FrameResult, VideoProcessor
from visionpipe.video.sinks import VideoFileSink
from visionpipe.video.sources import CaptureSource, SourceState

pytestmark = pytest.mark.real

CLIP = "video/one-by-one-person-detection.mp4"
CLIP_FRAMES = 1394
CLIP_FPS = 10.0
CLIP_W, CLIP_H = 768, 432
YOLOX = "models/yolox_nano_416_coco.onnx"
CONF = 0.3
SAMPLE = 100  # frames compared against Pipeline one by one (seeded)


def no_drops() -> dict[str, int]:
    return {cause.value: 0 for cause in DropCause}


def yolox_spec(asset) -> dict:
    return {"model": str(asset(YOLOX)), "family": "yolox"}


def count_by_reading(path) -> int:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


# --- (a) offline: policy wait, every frame, exact detections, annotated MP4 ------------------------
@pytest.fixture(scope="module")
def offline(asset, tmp_path_factory):
    """The whole clip once through VideoProcessor (policy wait) with YOLOX-Nano and an MP4 sink.

    Only index, timestamp and detections are kept per frame (holding every FrameResult would
    hold every decoded frame: ~1.4 GB)."""
    out = tmp_path_factory.mktemp("offline") / "annotated.mp4"
    source = CaptureSource(asset(CLIP))
    sink = VideoFileSink(out, lambda: source.fps)
    kept: list[tuple[int, float, object, object]] = []
    with Pipeline(yolox_spec(asset), conf=CONF) as pipeline:
        processor = VideoProcessor(pipeline, source, policy="wait", sinks=[sink])
        stats = processor.run(lambda r: kept.append((r.frame.index, r.frame.timestamp, r.detections, r.error)))
    return SimpleNamespace(
        out=out,
        stats=stats,
        indices=[k[0] for k in kept],
        timestamps=[k[1] for k in kept],
        detections={k[0]: k[2] for k in kept},
        errors=[k[3] for k in kept],
        source=source,
    )


def test_offline_processes_every_frame_exactly_once_in_order(offline):
    assert offline.indices == list(range(CLIP_FRAMES))
    assert offline.errors == [None] * CLIP_FRAMES
    stats = offline.stats
    assert stats.captured == CLIP_FRAMES
    assert stats.processed == CLIP_FRAMES
    assert stats.errors == 0
    assert stats.dropped == no_drops()
    assert stats.source_state == "ended"
    assert stats.source_message is None  # read to its declared end: not "ended early"
    assert np.all(np.diff(offline.timestamps) > 0)
    assert offline.timestamps[-1] == pytest.approx((CLIP_FRAMES - 1) / CLIP_FPS, abs=0.01)


def test_offline_detections_equal_the_pipeline_run_frame_by_frame(offline, asset):
    sample = set(np.random.default_rng(20240611).choice(CLIP_FRAMES, SAMPLE, replace=False).tolist())
    sample |= {0, CLIP_FRAMES - 1}
    frames = {}
    capture = cv2.VideoCapture(str(asset(CLIP)))
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index in sample:
            frames[index] = image
        index += 1
    capture.release()
    assert index == CLIP_FRAMES
    assert set(frames) == sample

    found = 0
    with Pipeline(yolox_spec(asset), conf=CONF) as pipeline:
        for i in sorted(sample):
            expected = pipeline(frames[i])
            got = offline.detections[i]
            assert got is not None, f"frame {i} has no detections object"
            assert np.array_equal(got.xyxy, expected.xyxy), f"frame {i}: boxes differ"
            assert np.array_equal(got.confidence, expected.confidence), f"frame {i}: scores differ"
            assert np.array_equal(got.class_id, expected.class_id), f"frame {i}: classes differ"
            found += len(expected)
    assert found > 0  # the comparison is not between empty sets
    names = {name for i in sample for name in offline.detections[i].names}
    assert "person" in names


def test_offline_annotated_mp4_has_every_frame_and_opens_in_opencv(offline):
    assert offline.out.is_file() and offline.out.stat().st_size > 0
    capture = cv2.VideoCapture(str(offline.out))
    assert capture.isOpened()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == CLIP_FRAMES
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (CLIP_W, CLIP_H)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(CLIP_FPS, rel=0.01)
    capture.release()
    assert count_by_reading(offline.out) == CLIP_FRAMES


# --- (b) live-style: realtime playback faster than the model, drop_oldest --------------------------
BUFFER = 4
SPEED = 50.0  # 500 frames/s offered: several times what the (slowed) model can do
EXTRA_S = 0.030  # added to every inference, so the source is always faster than the model
SLACK = 2.0  # for a noisy shared machine: the bound is a model of the queue, not a hard guarantee


@pytest.fixture(scope="module")
def live(asset):
    """The clip played at 50x its rate into a slowed YOLOX, drop_oldest, buffer 4, memory traced."""
    model = visionpipe.load_model(yolox_spec(asset))
    original = model.backend.forward
    durations: list[float] = []

    def slow_forward(tensor):
        start = time.perf_counter()
        time.sleep(EXTRA_S)
        outputs = original(tensor)
        durations.append(time.perf_counter() - start)
        return outputs

    model.backend.forward = slow_forward
    frame_bytes = CLIP_W * CLIP_H * 3
    memory = {}
    results: list[tuple[int, float]] = []

    def on_result(result: FrameResult) -> None:
        results.append((result.frame.index, result.latency))  # not the frame: see `offline`
        if "first_half_peak" not in memory and result.frame.index >= CLIP_FRAMES // 2:
            memory["first_half_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()

    with Pipeline(model, conf=CONF) as pipeline:
        source = CaptureSource(asset(CLIP))
        processor = VideoProcessor(
            pipeline, source, policy="drop_oldest", buffer_size=BUFFER, realtime=True, speed=SPEED
        )
        tracemalloc.start()
        try:
            stats = processor.run(on_result)
            memory["second_half_peak"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return SimpleNamespace(
        stats=stats,
        results=results,
        durations=durations,
        memory=memory,
        frame_bytes=frame_bytes,
        pipeline=pipeline,
        processor=processor,
    )


def test_live_every_frame_is_processed_or_dropped_for_the_buffer(live):
    stats = live.stats
    indices = [i for i, _ in live.results]
    assert stats.captured == CLIP_FRAMES  # drop_oldest: capture never waited, the whole clip was read
    assert stats.captured == stats.processed + stats.dropped_total
    assert stats.processed == len(indices)
    assert stats.dropped["buffer"] > 0
    assert stats.dropped == {**no_drops(), "buffer": stats.dropped["buffer"]}
    assert indices == sorted(set(indices))  # in order, none twice
    assert indices[-1] == CLIP_FRAMES - 1  # drop_oldest keeps the newest frame
    assert stats.errors == 0
    assert stats.source_state == "ended"


def test_live_latency_p95_stays_within_the_documented_bound(live):
    # processor.py: under drop_oldest a frame waits behind at most buffer_size frames in the
    # buffer, the pipeline's read-ahead window (2 * batch_size + workers) and the batches in its
    # inference lanes ((concurrency + 1) * batch_size), so its latency is at most about
    # (buffer_size + 2 * batch_size + workers + (concurrency + 1) * batch_size + 1) x the time per
    # frame. "Time per frame" is measured here: the median wall time of one (slowed) inference.
    batch_size = 1
    pipe = live.pipeline
    frames_ahead = BUFFER + 2 * batch_size + pipe.workers + (pipe.concurrency + 1) * batch_size + 1
    assert live.processor.latency_bound_frames == frames_ahead
    per_frame = float(np.median(live.durations))
    assert per_frame >= EXTRA_S  # the slowdown really applied
    bound = frames_ahead * per_frame
    p95 = live.stats.latency_p95
    print(
        f"\nlatency p50 {live.stats.latency_p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"p99 {live.stats.latency_p99 * 1000:.1f} ms; median inference {per_frame * 1000:.1f} ms; "
        f"bound {frames_ahead} x {per_frame * 1000:.1f} = {bound * 1000:.1f} ms (x{SLACK:g} slack); "
        f"processed {live.stats.processed}/{live.stats.captured}"
    )
    assert p95 is not None
    assert p95 <= SLACK * bound, f"p95 {p95:.3f} s exceeds {SLACK} x {bound:.3f} s"
    # the latencies the results carry are the ones the statistics summarise
    latencies = np.array([lat for _, lat in live.results])
    assert p95 == pytest.approx(float(np.percentile(latencies, 95)))


def test_live_memory_stays_flat(live):
    # Python-side memory traced over the run (numpy arrays included). A frame can be held by: the
    # buffer (BUFFER), the pipeline (read-ahead 2*batch+workers and concurrency+1 batches in
    # inference, each with its preprocessed tensor), the processor's result queue
    # (max(4, 2*BUFFER)), the frame being captured and the one being handed out.
    first = live.memory["first_half_peak"]
    second = live.memory["second_half_peak"]
    tensor_bytes = 3 * 416 * 416 * 4
    pipe = live.pipeline
    slots = BUFFER + (2 + pipe.workers) + (pipe.concurrency + 1) + max(4, 2 * BUFFER) + 2
    cap = slots * (live.frame_bytes + tensor_bytes)
    print(f"\ntraced peak: first half {first / 1e6:.1f} MB, second half {second / 1e6:.1f} MB, cap {cap / 1e6:.1f} MB")
    assert second <= 1.5 * first, "memory grew during the run"
    assert max(first, second) <= cap


# --- (c) a truncated file -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast_model(tmp_path_factory):
    """A constant-output stand-in for a detector (one box), so the truncated run costs little."""
    values = np.zeros((4 + 2, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)
    values[4, 0] = 0.9
    return constant_model(tmp_path_factory.mktemp("fast") / "fast.onnx", values, input_hw=(64, 64))


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_a_truncated_clip_ends_cleanly_after_processing_every_readable_frame(asset, tmp_path, fast_model):
    data = asset(CLIP).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.4)])

    # what the source reads on its own
    alone = CaptureSource(truncated)
    with alone:
        reference = [(f.index, f.timestamp, _digest(f.image)) for f in alone]
    assert 0 < len(reference) < CLIP_FRAMES

    source = CaptureSource(truncated)
    seen: list[tuple[int, float, str]] = []
    with Pipeline(visionpipe.load_model(fast_model, family="yolov8")) as pipeline:
        processor = VideoProcessor(pipeline, source, policy="wait")
        stats = processor.run(lambda r: seen.append((r.frame.index, r.frame.timestamp, _digest(r.frame.image))))

    assert seen == reference
    assert stats.captured == len(reference)
    assert stats.processed == len(reference)
    assert stats.errors == 0
    assert stats.dropped == no_drops()
    assert stats.source_state == "ended"
    assert source.state is SourceState.ENDED
    assert stats.source_message is not None and "ended early" in stats.source_message
    assert f"read {len(reference)} of {CLIP_FRAMES}" in stats.source_message
