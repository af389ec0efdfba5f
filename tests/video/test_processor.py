"""VideoProcessor with a fake source, a fake clock and a fast constant-output model.

The model is a tiny ONNX graph (tests/models/onnx_graphs.constant_model) that returns one planted
box for every image, so inference takes microseconds. Its backend's ``forward`` is wrapped by a
:class:`ForwardHook` that tells frames apart (each fake frame is filled with its own index, which
survives preprocessing as the tensor's value), can hold inference until the test releases it (a
"slow pipeline" the test controls), and can make chosen frames fail. Time comes from a
:class:`FakeClock` that only moves when a test (or the fake source / recording sleep) moves it.
Waiting in these tests is only ever for a condition, never for a duration.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Pipeline
from visionpipe.video.frames import Frame
from visionpipe.video.processor import (
    DropCause,
    FrameResult,
    Sink,
    VideoProcessor,
    VideoStats,
)
from visionpipe.video.sinks import CallbackSink, JsonlSink
from visionpipe.video.sources import SourceState

SIZE = 64  # fake frames are SIZE x SIZE, the tiny model's input: no letterbox padding
TIMEOUT = 20.0  # only reached when something hangs
WORKERS = 2
CONCURRENCY = 2
# the planted box: YOLOv8 layout (cx, cy, w, h) = (32, 32, 20, 20), class 0, score 0.9
BOX = np.array([[22.0, 22.0, 42.0, 42.0]], np.float32)
SCORE = 0.9


# --- fakes ---------------------------------------------------------------------------------------
class FakeClock:
    """Monotonic seconds that move only when a test sets ``now`` or calls ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Records each wait and moves the fake clock by it, instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def frame_image(index: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), index % 256, np.uint8)


class FakeSource:
    """A source of ``count`` frames with the surface VideoProcessor uses.

    Frame ``i`` is filled with the value ``i``. ``timestamps`` are the source's own positions
    (default ``i / fps``). On each read the fake clock is moved: to ``times[i]`` when given, else
    by ``costs[i]`` (the time the read "took"); ``captured_at`` is the clock after that move.
    ``gated``: read ``i`` blocks until the test sets ``gates[i]`` (``close()`` opens them all).
    ``times`` and ``costs`` need ``clock`` to be a :class:`FakeClock`.
    """

    def __init__(
        self,
        count: int,
        *,
        clock: FakeClock | None = None,
        fps: float | None = 10.0,
        timestamps: list[float] | None = None,
        times: list[float] | None = None,
        costs: list[float] | None = None,
        gated: bool = False,
    ) -> None:
        self.count = count
        self.clock = clock or time.monotonic  # the processor's default clock, unless a test fakes it
        self.fps = fps
        self.timestamps = timestamps if timestamps is not None else [i / (fps or 1.0) for i in range(count)]
        self.times = times
        self.costs = costs
        self.gates = [threading.Event() for _ in range(count)] if gated else None
        self.state = SourceState.STARTING
        self.failure: str | None = None
        self.position = 0
        self.frames: list[Frame] = []
        self.opened = 0
        self.closed = 0
        self._closing = threading.Event()

    def open(self) -> FakeSource:
        self.opened += 1
        self.state = SourceState.RUNNING
        return self

    def read(self) -> Frame | None:
        i = self.position
        if i >= self.count or self._closing.is_set():
            if not self.state.is_final:
                self.state = SourceState.ENDED
            return None
        if self.gates is not None:
            assert self.gates[i].wait(TIMEOUT), f"the test never released frame {i}"
            if self._closing.is_set():
                return None
        if self.times is not None:
            self.clock.now = self.times[i]
        elif self.costs is not None:
            self.clock.advance(self.costs[i])
        frame = Frame(index=i, image=frame_image(i), timestamp=self.timestamps[i], captured_at=self.clock())
        self.frames.append(frame)
        self.position = i + 1
        return frame

    def close(self) -> None:
        self.closed += 1
        self._closing.set()
        for gate in self.gates or ():
            gate.set()
        if not self.state.is_final:
            self.state = SourceState.ENDED


def frame_id(tensor: np.ndarray) -> int:
    """Which fake frame a preprocessed (3, H, W) tensor came from (RGB scaled by 1/255)."""
    return round(float(tensor[0, SIZE // 2, SIZE // 2]) * 255)


class ForwardHook:
    """Wraps ``backend.forward``: records frames, can hold them, can fail chosen ones.

    ``blocked``: every forward waits for ``release`` (set it to let inference run).
    ``fail``: frame ids whose inference raises. ``after``: {frame: other} makes ``frame`` wait
    until ``other`` has finished its forward (to make a later frame finish first).
    """

    def __init__(self, backend, *, blocked: bool = False, fail=(), after: dict[int, int] | None = None) -> None:
        self.original = backend.forward
        self.release = threading.Event()
        if not blocked:
            self.release.set()
        self.entered = threading.Event()
        self.fail = set(fail)
        self.after = dict(after or {})
        self.finished = {i: threading.Event() for i in range(256)}
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.completed: list[int] = []
        backend.forward = self

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        ids = [frame_id(t) for t in tensor]
        with self.lock:
            self.started.extend(ids)
        self.entered.set()
        assert self.release.wait(TIMEOUT), "the test never released inference"
        for i in ids:
            if i in self.after:
                assert self.finished[self.after[i]].wait(TIMEOUT)
        try:
            for i in ids:
                if i in self.fail:
                    raise RuntimeError(f"inference failed on frame {i}")
            return self.original(tensor)
        finally:
            with self.lock:
                self.completed.extend(ids)
            for i in ids:
                self.finished[i].set()


def wait_until(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def indices(results: list[FrameResult]) -> list[int]:
    return [r.frame.index for r in results]


def assert_accounted(stats: VideoStats) -> None:
    assert stats.captured == stats.processed + stats.dropped_total, stats
    assert stats.dropped_total == sum(stats.dropped.values())


def no_drops() -> dict[str, int]:
    return {cause.value: 0 for cause in DropCause}


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    values = np.zeros((4 + 2, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)
    values[4, 0] = SCORE
    return constant_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", values, input_hw=(SIZE, SIZE))


@pytest.fixture
def rig(tiny_model_path):
    """``rig(**hook_options) -> (pipeline, hook)``; ``rig.processor(...)`` builds a processor that
    is stopped at teardown. Everything held is released at teardown so nothing hangs."""
    made: list[tuple[Pipeline, ForwardHook]] = []
    processors: list[VideoProcessor] = []

    def make(**options):
        model = visionpipe.load_model(tiny_model_path, family="yolov8")
        hook = ForwardHook(model.backend, **options)
        pipeline = Pipeline(model, workers=WORKERS, concurrency=CONCURRENCY)
        made.append((pipeline, hook))
        return pipeline, hook

    def processor(pipeline, source, **options):
        proc = VideoProcessor(pipeline, source, **options)
        processors.append(proc)
        return proc

    make.processor = processor
    yield make
    for _, hook in made:
        hook.release.set()
    for proc in processors:
        proc.stop(drain=False, timeout=5.0)
        for thread in proc._threads:  # white box: the pipeline must outlive the processor's worker
            thread.join(TIMEOUT)
    for pipeline, _ in made:
        pipeline.close()


def run_all(processor: VideoProcessor) -> tuple[list[FrameResult], VideoStats]:
    results: list[FrameResult] = []
    stats = processor.run(results.append)
    return results, stats


def assert_planted_box(result: FrameResult) -> None:
    assert result.error is None, result.error
    assert result.detections is not None
    np.testing.assert_allclose(result.detections.xyxy, BOX, atol=1e-4)
    np.testing.assert_allclose(result.detections.confidence, [SCORE], atol=1e-6)
    assert result.detections.class_id.tolist() == [0]


# --- construction --------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"stride": 0}, {"max_fps": 0}, {"max_fps": -5}, {"speed": 0}, {"buffer_size": 0}])
def test_invalid_settings_are_refused(rig, options):
    pipeline, _ = rig()
    with pytest.raises(ValueError):
        VideoProcessor(pipeline, FakeSource(1), **options)


# --- policy wait ---------------------------------------------------------------------------------
def test_wait_processes_every_frame_exactly_once_in_order_even_when_the_buffer_fills(rig):
    pipeline, hook = rig(blocked=True)
    source = FakeSource(60)
    processor = rig.processor(pipeline, source, policy="wait", buffer_size=3)
    results: list[FrameResult] = []
    processor.start()
    # inference is held: the buffer fills and capture must block instead of dropping
    wait_until(lambda: hook.entered.is_set() and len(processor.buffer) == 3, "a full buffer")
    assert source.position < 60, "capture did not wait for room"
    assert processor.stats.dropped_total == 0
    hook.release.set()
    results.extend(processor.results())
    stats = processor.stop()

    assert indices(results) == list(range(60))
    assert [r.frame for r in results] == source.frames  # the source's own frames, none copied or lost
    assert all(r.frame is f for r, f in zip(results, source.frames))
    for result in results:
        assert_planted_box(result)
    assert sorted(hook.started) == list(range(60))  # inference saw each frame exactly once
    assert stats.captured == 60 and stats.processed == 60 and stats.errors == 0
    assert stats.dropped == no_drops()
    assert stats.source_state == "ended"
    assert source.opened == 1 and source.closed >= 1


def test_results_come_out_in_frame_order_when_a_later_frame_finishes_first(rig):
    # frame 0's inference waits until frame 1's has finished (two inference lanes run side by side)
    pipeline, hook = rig(after={0: 1, 5: 7})
    results, stats = run_all(rig.processor(pipeline, FakeSource(12), buffer_size=4))
    assert hook.completed.index(1) < hook.completed.index(0)  # really finished out of order
    assert hook.completed.index(7) < hook.completed.index(5)
    assert indices(results) == list(range(12))
    assert stats.processed == 12 and stats.dropped == no_drops()


def test_context_manager_runs_and_stops(rig):
    pipeline, _ = rig()
    source = FakeSource(7)
    with rig.processor(pipeline, source) as processor:
        results = list(processor.results())
    assert indices(results) == list(range(7))
    assert source.closed >= 1
    assert processor.stats.processed == 7


# --- stride and max_fps --------------------------------------------------------------------------
def test_stride_processes_only_multiples_of_the_stride(rig):
    pipeline, hook = rig()
    results, stats = run_all(rig.processor(pipeline, FakeSource(23), stride=4))
    assert indices(results) == [0, 4, 8, 12, 16, 20]
    assert sorted(hook.started) == [0, 4, 8, 12, 16, 20]  # skipped frames never reach the model
    assert stats.captured == 23
    assert stats.processed == 6
    assert stats.dropped == {**no_drops(), "stride": 17}
    assert_accounted(stats)


def test_max_fps_drops_frames_arriving_too_soon_after_the_last_accepted_one(rig):
    # max_fps 4: a frame is accepted when at least 0.25 s after the last ACCEPTED frame
    t0 = 1000.0
    offsets = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 1.0, 1.125, 1.5, 1.625, 1.75]
    # accepted:  0 (first)  2 (0.25 after 0, though 0.125 after 1)  4  6  8  10 (0.25 after 8)
    clock = FakeClock(t0)
    source = FakeSource(len(offsets), clock=clock, times=[t0 + o for o in offsets])
    pipeline, _ = rig()
    results, stats = run_all(rig.processor(pipeline, source, max_fps=4, clock=clock))
    assert indices(results) == [0, 2, 4, 6, 8, 10]
    assert [r.frame.captured_at for r in results] == [t0 + offsets[i] for i in (0, 2, 4, 6, 8, 10)]
    assert stats.captured == 11
    assert stats.dropped == {**no_drops(), "rate": 5}
    assert_accounted(stats)


def test_stride_comes_before_max_fps_and_stride_drops_are_not_accepted_frames(rig):
    # frames every 1/16 s; stride 2 leaves 0, 2, 4, ... every 1/8 s; max_fps 4 keeps every other one
    t0 = 1000.0
    clock = FakeClock(t0)
    source = FakeSource(12, clock=clock, times=[t0 + i / 16 for i in range(12)])
    pipeline, _ = rig()
    results, stats = run_all(rig.processor(pipeline, source, stride=2, max_fps=4, clock=clock))
    assert indices(results) == [0, 4, 8]
    assert stats.dropped == {**no_drops(), "stride": 6, "rate": 3}
    assert_accounted(stats)


# --- realtime pacing -----------------------------------------------------------------------------
def test_realtime_waits_for_each_frames_due_time_and_restamps_capture_time(rig):
    # source timestamps start at 5 s, every 0.25 s; speed 2 -> due every 0.125 s after start.
    # Each read "takes" costs[i] on the fake clock; frame 3 is late (0.5 s), so 3..6 need no wait
    # and the schedule (not the previous frame) decides when waiting resumes.
    clock = FakeClock(1000.0)
    costs = [0.0, 0.0625, 0.0625, 0.5, 0.0, 0.0625, 0.0, 0.0, 0.0]
    timestamps = [5.0 + 0.25 * i for i in range(9)]
    source = FakeSource(9, clock=clock, costs=costs, timestamps=timestamps, fps=4.0)
    sleep = RecordingSleep(clock)
    pipeline, _ = rig()
    processor = rig.processor(pipeline, source, realtime=True, speed=2.0, clock=clock, sleep=sleep)
    results, stats = run_all(processor)

    # start = 1000; frame i is due at 1000 + 0.125 i; clock after each read, then the wait:
    #   0: 1000      due 1000     -> none       captured 1000
    #   1: 1000.0625 due 1000.125 -> 0.0625     captured 1000.125
    #   2: 1000.1875 due 1000.25  -> 0.0625     captured 1000.25
    #   3: 1000.75   due 1000.375 -> none       captured 1000.75
    #   4: 1000.75   due 1000.5   -> none       captured 1000.75
    #   5: 1000.8125 due 1000.625 -> none       captured 1000.8125
    #   6: 1000.8125 due 1000.75  -> none       captured 1000.8125
    #   7: 1000.8125 due 1000.875 -> 0.0625     captured 1000.875
    #   8: 1000.875  due 1001.0   -> 0.125      captured 1001.0
    assert sleep.waits == pytest.approx([0.0625, 0.0625, 0.0625, 0.125])
    expected = [1000.0, 1000.125, 1000.25, 1000.75, 1000.75, 1000.8125, 1000.8125, 1000.875, 1001.0]
    assert [r.frame.captured_at for r in results] == pytest.approx(expected)
    assert [r.frame.timestamp for r in results] == timestamps  # the source's position is kept
    assert indices(results) == list(range(9))
    assert stats.dropped == no_drops()


def test_without_realtime_nothing_sleeps(rig):
    clock = FakeClock()
    sleep = RecordingSleep(clock)
    pipeline, _ = rig()
    source = FakeSource(5, clock=clock, costs=[0.0] * 5)
    results, _ = run_all(rig.processor(pipeline, source, clock=clock, sleep=sleep))
    assert sleep.waits == []
    assert indices(results) == list(range(5))


# --- latency statistics --------------------------------------------------------------------------
def test_latency_percentiles_fps_and_elapsed_follow_the_clock(rig):
    # frames captured at t = 1, 2, ..., 10 on the fake clock; inference is held until all are in,
    # then the clock jumps to 2000: every result finishes at 2000, latencies are 1999 ... 1990.
    clock = FakeClock(0.0)
    source = FakeSource(10, clock=clock, times=[float(i) for i in range(1, 11)])
    pipeline, hook = rig(blocked=True)
    processor = rig.processor(pipeline, source, buffer_size=16, clock=clock)
    processor.start()
    wait_until(lambda: processor.stats.captured == 10, "all frames captured")
    clock.now = 2000.0
    hook.release.set()
    results = list(processor.results())
    stats = processor.stop()

    assert [r.latency for r in results] == [2000.0 - i for i in range(1, 11)]
    assert stats.latency_p50 == pytest.approx(1994.5)  # median of 1990..1999
    assert stats.latency_p95 == pytest.approx(1990 + 0.95 * 9)  # linear interpolation
    assert stats.latency_p99 == pytest.approx(1990 + 0.99 * 9)
    assert stats.fps == 10.0  # ten results within the last second
    assert stats.elapsed == 2000.0  # started at clock 0


# --- drop policies under a slow pipeline ---------------------------------------------------------
def _pipeline_capacity(pipeline: Pipeline, batch_size: int = 1) -> int:
    # Pipeline.stream holds a read-ahead window of 2 * batch_size + workers decoded inputs and at
    # most concurrency + 1 batches in inference
    return 2 * batch_size + pipeline.workers + (pipeline.concurrency + 1) * batch_size


def record_pulls(processor: VideoProcessor) -> list[int]:
    """The indices of the frames the worker takes from the buffer, in order (wraps get_batch)."""
    pulled: list[int] = []
    original = processor.buffer.get_batch

    def get_batch(max_items, timeout=None):
        batch = original(max_items, timeout)
        pulled.extend(frame.index for frame in batch)
        return batch

    processor.buffer.get_batch = get_batch
    return pulled


def _held_run(rig, policy: str, count: int, buffer_size: int):
    """Fill the (held) pipeline frame by frame, then let the rest of the source arrive at once.

    Frames 0 .. capacity-1 are released one at a time and each is taken by the pipeline before the
    next comes, so none is dropped and the pipeline ends up full with inference held. The rest
    arrive while nothing is taken from the buffer: what the policy keeps is then determined.
    """
    pipeline, hook = rig(blocked=True)
    source = FakeSource(count, gated=True)
    processor = rig.processor(pipeline, source, policy=policy, buffer_size=buffer_size)
    pulled = record_pulls(processor)
    processor.start()
    capacity = _pipeline_capacity(pipeline)
    for i in range(capacity):
        source.gates[i].set()
        wait_until(lambda i=i: len(pulled) == i + 1, f"the pipeline to take frame {i}")
    wait_until(hook.entered.is_set, "inference to start")
    for gate in source.gates[capacity:]:
        gate.set()
    wait_until(lambda: source.state is SourceState.ENDED, "capture to reach the end of the source")
    assert pulled == list(range(capacity))  # a held pipeline takes no more than its capacity
    assert processor.stats.captured == count  # a drop policy never makes capture wait
    hook.release.set()
    results = list(processor.results())
    stats = processor.stop()
    return capacity, results, stats


def test_latency_bound_counts_buffer_read_ahead_and_inference_lanes(rig):
    # processor.py: buffer_size + 2 * batch_size + workers + (concurrency + 1) * batch_size + 1
    pipeline, _ = rig()  # workers 2, concurrency 2
    processor = VideoProcessor(pipeline, FakeSource(1), buffer_size=5, batch_size=2)
    assert processor.latency_bound_frames == 5 + 4 + 2 + 6 + 1
    assert VideoProcessor(pipeline, FakeSource(1), buffer_size=1).latency_bound_frames == 1 + 2 + 2 + 3 + 1


def test_drop_oldest_under_a_slow_pipeline_keeps_the_newest_frames(rig):
    count, size = 40, 3
    capacity, results, stats = _held_run(rig, "drop_oldest", count, size)
    # the pipeline's frames, then the newest `size` frames; everything between was pushed out
    assert indices(results) == [*range(capacity), 37, 38, 39]
    assert stats.captured == count
    assert stats.processed == capacity + size
    assert stats.dropped == {**no_drops(), "buffer": count - capacity - size}
    assert_accounted(stats)


def test_drop_latest_under_a_slow_pipeline_keeps_the_waiting_frames(rig):
    count, size = 40, 3
    capacity, results, stats = _held_run(rig, "drop_latest", count, size)
    # the pipeline's frames, then the first `size` frames that found the buffer with room
    assert indices(results) == list(range(capacity + size))
    assert stats.captured == count
    assert stats.processed == capacity + size
    assert stats.dropped == {**no_drops(), "buffer": count - capacity - size}
    assert_accounted(stats)


# --- stop ----------------------------------------------------------------------------------------
def _held_until_full(rig, count: int, size: int):
    pipeline, hook = rig(blocked=True)
    source = FakeSource(count)
    sink_results: list[FrameResult] = []
    processor = rig.processor(
        pipeline, source, policy="wait", buffer_size=size, sinks=[CallbackSink(sink_results.append)]
    )
    pulled = record_pulls(processor)
    processor.start()
    capacity = _pipeline_capacity(pipeline)
    # held inference: the pipeline takes `capacity` frames, the buffer fills, and capture holds one
    # more frame while it waits for room
    wait_until(
        lambda: (
            len(pulled) == capacity
            and len(processor.buffer) == size
            and processor.stats.captured == capacity + size + 1
        ),
        "a full pipeline and buffer",
    )
    assert hook.entered.is_set()
    return processor, hook, source, sink_results


def test_stop_without_drain_counts_waiting_frames_as_stopped_and_returns_within_its_timeout(rig):
    count, size = 50, 4
    processor, hook, source, processed = _held_until_full(rig, count, size)
    waiting = len(processor.buffer)

    # inference stays held: stop must give up on the stuck worker after its timeout, not hang
    returned: list[VideoStats] = []
    stopper = threading.Thread(target=lambda: returned.append(processor.stop(drain=False, timeout=0.5)), daemon=True)
    stopper.start()
    stopper.join(0.5 + TIMEOUT)
    assert not stopper.is_alive(), "stop(drain=False) did not return after its timeout"
    assert source.closed >= 1
    assert returned[0].dropped["stopped"] >= waiting

    hook.release.set()  # let the frames already in inference finish
    list(processor.results())  # the end marker comes once the worker is done: the counts are final
    stats = processor.stats

    assert stats.captured < count
    assert stats.dropped["stopped"] >= waiting
    assert stats.dropped == {**no_drops(), "stopped": stats.dropped["stopped"]}
    # only frames already inside the pipeline when stop was called were processed
    assert stats.processed == _pipeline_capacity(processor.pipeline)
    assert indices(processed) == list(range(stats.processed))
    # every captured frame: processed, or dropped as "stopped" (nothing left behind unaccounted)
    left = len(processor.buffer)
    assert stats.captured == stats.processed + stats.dropped_total, (
        f"{stats.captured} captured != {stats.processed} processed + {stats.dropped_total} dropped; "
        f"{left} frame(s) still sitting in the closed buffer"
    )
    assert left == 0


def test_stop_with_drain_processes_the_waiting_frames(rig):
    count, size = 50, 4
    processor, hook, source, processed = _held_until_full(rig, count, size)
    returned: list[VideoStats] = []
    stopper = threading.Thread(target=lambda: returned.append(processor.stop(drain=True, timeout=TIMEOUT)), daemon=True)
    stopper.start()
    wait_until(processor._stop_capture.is_set, "stop() to begin")  # white box: stop has been requested
    hook.release.set()
    stopper.join(TIMEOUT + 5)
    assert not stopper.is_alive()
    stats = returned[0]

    assert stats.captured < count  # capture really stopped early
    assert stats.captured >= size + 1  # at least the buffered frames and the one in inference
    assert stats.processed == stats.captured
    assert stats.dropped == no_drops()
    assert indices(processed) == list(range(stats.captured))
    assert source.closed >= 1


# --- errors --------------------------------------------------------------------------------------
def test_a_frame_whose_inference_fails_carries_the_error_and_the_stream_goes_on(rig):
    pipeline, _ = rig(fail={3, 8})
    results, stats = run_all(rig.processor(pipeline, FakeSource(12)))
    assert indices(results) == list(range(12))
    for result in results:
        if result.frame.index in (3, 8):
            assert isinstance(result.error, RuntimeError)
            assert f"frame {result.frame.index}" in str(result.error)
            assert result.detections is None
        else:
            assert_planted_box(result)
    assert stats.errors == 2
    assert stats.processed == 12
    assert stats.dropped == no_drops()


# --- sinks ---------------------------------------------------------------------------------------
class RecordingSink(Sink):
    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.written: list[FrameResult] = []
        self.fail_on = fail_on or set()
        self.closed = 0
        self.raised: dict[int, Exception] = {}

    def write(self, result: FrameResult) -> None:
        self.written.append(result)
        if result.frame.index in self.fail_on:
            error = OSError(f"disk full at frame {result.frame.index}")
            self.raised[result.frame.index] = error
            raise error

    def close(self) -> None:
        self.closed += 1


def test_sinks_receive_every_result_in_order_and_are_closed(rig):
    pipeline, _ = rig()
    seen: list[FrameResult] = []
    recorder = RecordingSink()
    processor = rig.processor(pipeline, FakeSource(15), stride=2, sinks=[CallbackSink(seen.append), recorder])
    results, stats = run_all(processor)
    assert indices(seen) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert all(a is b for a, b in zip(seen, results)) and len(seen) == len(results)
    assert all(a is b for a, b in zip(recorder.written, results)) and len(recorder.written) == len(results)
    assert recorder.closed == 1
    assert stats.processed == 8


def test_a_failing_sink_marks_that_result_and_the_stream_goes_on(rig):
    pipeline, _ = rig(fail={5})
    failing = RecordingSink(fail_on={2, 5})
    after: list[FrameResult] = []
    processor = rig.processor(pipeline, FakeSource(8), sinks=[failing, CallbackSink(after.append)])
    results, stats = run_all(processor)

    assert indices(results) == list(range(8))
    assert indices(after) == list(range(8))  # the next sink still gets every result
    assert results[2].error is failing.raised[2]
    assert results[2].detections is not None  # the detections themselves were fine
    assert isinstance(results[5].error, RuntimeError)  # an inference error is not replaced by the sink's
    assert all(r.error is None for r in results if r.frame.index not in (2, 5))
    assert stats.errors == 2
    assert stats.processed == 8


def test_jsonl_sink_writes_one_record_per_processed_frame(rig, tmp_path):
    pipeline, _ = rig(fail={4})
    path = tmp_path / "frames.jsonl"
    _, stats = run_all(rig.processor(pipeline, FakeSource(9), stride=2, sinks=[JsonlSink(path)]))
    assert stats.processed == 5 and stats.errors == 1
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["frame"] for r in records] == [0, 2, 4, 6, 8]
    assert [r["timestamp"] for r in records] == [0.0, 0.2, 0.4, 0.6, 0.8]
    for record in records:
        if record["frame"] == 4:
            assert "frame 4" in record["error"] and record["detections"] == []
        else:
            assert record["error"] is None
            (det,) = record["detections"]
            assert det["xyxy"] == [22.0, 22.0, 42.0, 42.0]
            assert det["confidence"] == SCORE and det["class_id"] == 0
            assert "tracker_id" not in det
            assert "crossed_in" not in record


def test_tracker_and_line_counter_results_reach_the_jsonl_log(rig, tmp_path):
    from visionpipe.video.tracking import ByteTracker
    from visionpipe.video.zones import LineCounter

    pipeline, _ = rig()
    path = tmp_path / "tracked.jsonl"
    # the planted box sits still: one track (id 1 from the first frame), never crossing the line
    processor = rig.processor(
        pipeline,
        FakeSource(6),
        tracker=ByteTracker(),
        line_counter=LineCounter((0, 10), (SIZE, 10)),
        sinks=[JsonlSink(path)],
    )
    results, stats = run_all(processor)
    assert [r.error for r in results] == [None] * 6
    assert stats.errors == 0
    assert all(r.detections.tracker_id.tolist() == [1] for r in results)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["frame"] for r in records] == list(range(6))
    for record in records:
        assert [d["tracker_id"] for d in record["detections"]] == [1]
        assert record["crossed_in"] == [] and record["crossed_out"] == []
        assert record["error"] is None
