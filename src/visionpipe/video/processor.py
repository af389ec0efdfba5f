"""Run a Pipeline over a video source in real time: capture never waits for inference.

A capture thread reads frames into a bounded :class:`FrameBuffer`; a worker thread feeds them to
``Pipeline.stream`` (so decoding, inference lanes and post-processing overlap as for images),
tracks and counts, writes sinks, and hands :class:`FrameResult` objects out in frame order. Every
frame read is either processed or dropped for a counted cause:
``captured == processed + sum(dropped.values())`` once the processor has stopped.

Latency bound under ``drop_oldest``: a frame waits behind at most ``buffer_size`` frames in the
buffer, the pipeline's read-ahead window (``2 * batch_size + workers``) and the batches in its
inference lanes (``(concurrency + 1) * batch_size``), so its capture-to-result latency is at most
about ``buffer_size + 2 * batch_size + workers + (concurrency + 1) * batch_size + 1`` times the
time per frame, however fast the source is (see ``latency_bound_frames``).
"""

from __future__ import annotations

import inspect
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from visionpipe.detections import Detections
from visionpipe.io import sinks as io_sinks
from visionpipe.pipeline import Pipeline
from visionpipe.video.buffer import BufferPolicy, FrameBuffer
from visionpipe.video.frames import Frame
from visionpipe.video.sources import VideoSource, open_source
from visionpipe.video.zones import PolygonZone


class DropCause(str, Enum):
    STRIDE = "stride"  # skipped by --stride
    RATE = "rate"  # over the maximum processing rate
    BUFFER = "buffer"  # the buffer was full (drop_oldest / drop_latest)
    STOPPED = "stopped"  # still waiting when the processor was stopped without draining


@dataclass
class FrameResult:
    """One processed frame: its detections (tracked, when a tracker is set) or the error.

    Example::

        for result in processor.results():
            result.frame.index, result.detections, result.latency
    """

    frame: Frame
    detections: Detections | None
    error: Exception | None
    finished_at: float
    crossed: tuple[list[int], list[int]] | None = None  # line counter: (in ids, out ids) this frame
    overlay: Overlay | None = None  # the line and zones with their counts as of this frame, to draw

    @property
    def latency(self) -> float:
        """Seconds from capture to result."""
        return self.finished_at - self.frame.captured_at


@dataclass(frozen=True)
class LineOverlay:
    """A counting line as of one frame: its end points and running totals."""

    start: tuple[float, float]
    end: tuple[float, float]
    in_count: int
    out_count: int


@dataclass(frozen=True)
class ZoneOverlay:
    """A polygon zone as of one frame: its points and how many objects stand in it now."""

    points: tuple[tuple[float, float], ...]
    count: int


@dataclass(frozen=True)
class Overlay:
    """What a sink draws besides the detections: the counting line and zones, live counts."""

    line: LineOverlay | None = None
    zones: tuple[ZoneOverlay, ...] = ()


@dataclass
class VideoStats:
    captured: int = 0
    processed: int = 0
    errors: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {cause.value: 0 for cause in DropCause})
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None
    fps: float = 0.0  # results per second over the last second
    elapsed: float = 0.0
    source_state: str = ""
    source_message: str | None = None
    sink_errors: dict[str, str] = field(default_factory=dict)  # first failure of each output

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items()}
        out["dropped_total"] = self.dropped_total
        return out


class Sink(io_sinks.Sink[FrameResult]):
    """Receives every processed frame, in order; ``close`` when the run ends (see :mod:`visionpipe.io.sinks`)."""


_END = object()


class VideoProcessor:
    """Capture, buffer, detect, track and emit results for one video source.

    ``clock`` and ``sleep`` come in as parameters so pacing and latency are testable without
    waiting. Use as a context manager, or ``start()`` / ``results()`` / ``stop()``; ``run()`` does
    all three and returns the final statistics.

    Example::

        with VideoProcessor(Pipeline("yolox.yaml"), "street.mp4", tracker=ByteTracker()) as video:
            for frame in video.results():
                print(frame.frame.index, len(frame.detections or ()))
    """

    def __init__(
        self,
        pipeline: Pipeline,
        source: VideoSource | str | int | os.PathLike,
        *,
        policy: BufferPolicy | str = BufferPolicy.WAIT,
        buffer_size: int = 8,
        batch_size: int = 1,
        stride: int = 1,
        max_fps: float | None = None,
        realtime: bool = False,
        speed: float = 1.0,
        tracker=None,
        line_counter=None,
        zones: Sequence[PolygonZone] = (),
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        latency_window: int = 10_000,
    ) -> None:
        if stride < 1:
            raise ValueError("stride must be at least 1")
        if max_fps is not None and max_fps <= 0:
            raise ValueError("max_fps must be positive")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.pipeline = pipeline
        # a path, URL or camera index is opened here (lazily: start() opens it)
        # (anything with open/read/close works as a source; a path, URL or camera index is opened here)
        self.source: VideoSource = (
            source if hasattr(source, "read") and hasattr(source, "open") else open_source(source)  # type: ignore[assignment]
        )
        self.buffer: FrameBuffer[Frame] = FrameBuffer(buffer_size, policy, on_drop=self._dropped_by_buffer)
        self.batch_size = batch_size
        self.stride = stride
        self.max_fps = max_fps
        self.realtime = realtime
        self.speed = speed
        self.tracker = tracker
        self.line_counter = line_counter
        self.zones = list(zones)
        self.sinks = list(sinks)
        self.clock = clock
        self.sleep = sleep

        self._lock = threading.Lock()
        self._stats = VideoStats()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._recent: deque[float] = deque()
        self._output: queue.Queue = queue.Queue(maxsize=max(4, 2 * buffer_size))
        self._stop_capture = threading.Event()
        self._discard = threading.Event()
        self._abandoned = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> VideoProcessor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(drain=exc_info[0] is None)

    def start(self) -> None:
        """Open the source and start capturing and detecting (``results()`` calls it when needed)."""
        if self._closed:
            raise RuntimeError("the processor was stopped; create a new one")
        if self._threads:
            raise RuntimeError("the processor is already started")
        self._open_source()
        self._started_at = self.clock()
        self._threads = [
            threading.Thread(target=self._capture, name="visionpipe-capture", daemon=True),
            threading.Thread(target=self._work, name="visionpipe-detect", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _open_source(self) -> None:
        """Open the source on a helper thread while this one waits in short steps: opening a
        stream can block in native code for its whole timeout, and a signal (Ctrl-C) is only
        handled between the steps of the waiting thread, so it is honoured within 0.1 s."""
        failure: list[BaseException] = []

        def open_it() -> None:
            try:
                self.source.open()
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)

        opener = threading.Thread(target=open_it, name="visionpipe-open", daemon=True)
        opener.start()
        while opener.is_alive():
            opener.join(0.1)
        if failure:
            raise failure[0]

    def stop(self, drain: bool = True, timeout: float = 10.0) -> VideoStats:
        """Stop capturing; process (``drain``) or discard what is buffered; release everything."""
        if self._closed:
            return self.stats
        self._stop_capture.set()
        if not drain:
            self._discard.set()
            # close first: a capture blocked in put() then drops its frame (counted) rather than
            # slipping it into a buffer nobody will read
            self.buffer.close()
            for _ in self.buffer.drain():
                self._count_drop(DropCause.STOPPED)
        self._abandoned.set()  # nobody may be reading results any more: do not block on them
        deadline = time.monotonic() + timeout
        # discarding, the capture thread is not waited for long: it may be blocked in a stream read
        # until that read times out; the inference thread finishes the frames already in flight
        brief = 0.25
        for thread in self._threads:
            limit = deadline - time.monotonic()
            if not drain and thread.name == "visionpipe-capture":
                limit = min(limit, brief)
            thread.join(max(0.0, limit))
        self.buffer.close()
        try:
            # a read blocked in a stream that stopped answering must not hold the stop up
            close_source = self.source.close
            if "wait" in inspect.signature(close_source).parameters:
                close_source(wait=brief if not drain else max(0.0, deadline - time.monotonic()))
            else:
                close_source()
        finally:
            for sink in self.sinks:  # every sink closed (an MP4 finalised) whatever else failed
                try:
                    sink.close()
                except Exception as exc:
                    self._sink_failed(sink, exc)
            self._closed = True
        return self.stats

    def run(self, on_result: Callable[[FrameResult], None] | None = None) -> VideoStats:
        """Process the whole source (until it ends or fails) and return the final statistics."""
        self.start()
        try:
            for result in self.results():
                if on_result is not None:
                    on_result(result)
        except BaseException:
            self.stop(drain=False)
            raise
        return self.stop()

    def results(self) -> Iterator[FrameResult]:
        """Processed frames in frame order, until the source ends and the buffer is empty.

        Starts the processor if it was not started, so ``for r in VideoProcessor(p, "clip.mp4").
        results()`` works; a source that cannot be opened raises here. It never waits forever:
        once the worker has finished (or died) and nothing is left, the iteration ends.
        """
        if not self._threads and not self._closed:
            self.start()
        while True:
            try:
                item = self._output.get(timeout=0.1)
            except queue.Empty:
                if self._closed or not any(t.is_alive() for t in self._threads):
                    # the worker is gone: take what it left, then end (never block on nothing)
                    try:
                        item = self._output.get_nowait()
                    except queue.Empty:
                        return
                else:
                    continue
            if item is _END:
                return
            yield item

    def __iter__(self) -> Iterator[FrameResult]:
        return self.results()

    @property
    def latency_bound_frames(self) -> int:
        """How many frame-times a frame can wait, at most, from capture to result (see above)."""
        p = self.pipeline
        return self.buffer.capacity + 2 * self.batch_size + p.workers + (p.concurrency + 1) * self.batch_size + 1

    @property
    def stats(self) -> VideoStats:
        """A snapshot of the counters, live or final."""
        now = self.clock()
        with self._lock:
            snapshot = VideoStats(
                captured=self._stats.captured,
                processed=self._stats.processed,
                errors=self._stats.errors,
                dropped=dict(self._stats.dropped),
                fps=float(sum(1 for t in self._recent if now - t <= 1.0)),
                elapsed=0.0 if self._started_at is None else now - self._started_at,
                source_state=getattr(self.source, "state", ""),
                sink_errors=dict(self._stats.sink_errors),
                source_message=getattr(self.source, "failure", None),
            )
            latencies = np.fromiter(self._latencies, float)
        if isinstance(snapshot.source_state, Enum):
            snapshot.source_state = snapshot.source_state.value
        if latencies.size:
            snapshot.latency_p50, snapshot.latency_p95, snapshot.latency_p99 = (
                float(v) for v in np.percentile(latencies, [50, 95, 99])
            )
        return snapshot

    # -- threads ------------------------------------------------------------------------------

    def _capture(self) -> None:
        last_accepted: float | None = None
        first_timestamp: float | None = None
        try:
            while not self._stop_capture.is_set():
                frame = self.source.read()
                if frame is None or self._stop_capture.is_set():
                    break
                if self.realtime:
                    # play a file at its own pace (times speed): the frame "arrives" on schedule
                    first_timestamp = frame.timestamp if first_timestamp is None else first_timestamp
                    assert self._started_at is not None  # set by start() before this thread runs
                    due = self._started_at + (frame.timestamp - first_timestamp) / self.speed
                    wait = due - self.clock()
                    if wait > 0:
                        self.sleep(wait)
                    frame.captured_at = self.clock()
                with self._lock:
                    self._stats.captured += 1
                if frame.index % self.stride:
                    self._count_drop(DropCause.STRIDE)
                    continue
                if (
                    self.max_fps is not None
                    and last_accepted is not None
                    and frame.captured_at - last_accepted < 1.0 / self.max_fps
                ):
                    self._count_drop(DropCause.RATE)
                    continue
                last_accepted = frame.captured_at
                self.buffer.put(frame)
        finally:
            self.buffer.close()

    def _frames(self, in_flight: deque[Frame]) -> Iterator:
        while not self._discard.is_set():
            batch = self.buffer.get_batch(1, timeout=0.05)
            if batch:
                in_flight.append(batch[0])
                # a frame that failed upstream goes through as its error, keeping frame order
                yield batch[0].image if batch[0].error is None else batch[0].error
            elif self.buffer.closed and not len(self.buffer):
                return

    def _work(self) -> None:
        in_flight: deque[Frame] = deque()
        try:
            for result in self.pipeline.stream(self._frames(in_flight), batch_size=self.batch_size):
                frame = in_flight.popleft()
                self._emit(frame, result.detections, result.error)
        finally:
            self._publish(_END, final=True)

    def _emit(self, frame: Frame, detections: Detections | None, error: Exception | None) -> None:
        crossed = None
        try:
            if detections is not None and self.tracker is not None:
                detections = self.tracker.update(detections)
            if detections is not None and self.line_counter is not None:
                crossed = self.line_counter.update(detections)
            if detections is not None:
                for zone in self.zones:
                    zone.update(detections)
        except Exception as exc:  # one bad frame never stops the stream
            detections, error = None, exc
        result = FrameResult(frame, detections, error, self.clock(), crossed, self._overlay())
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception as exc:
                result.error = result.error or exc
                self._sink_failed(sink, exc)
        with self._lock:
            self._stats.processed += 1
            self._stats.errors += result.error is not None
            self._latencies.append(result.latency)
            self._recent.append(result.finished_at)
            while self._recent and result.finished_at - self._recent[0] > 1.0:
                self._recent.popleft()
        self._publish(result)

    def _overlay(self) -> Overlay | None:
        if self.line_counter is None and not self.zones:
            return None
        line = None
        if self.line_counter is not None:
            c = self.line_counter
            line = LineOverlay(
                (float(c.start[0]), float(c.start[1])), (float(c.end[0]), float(c.end[1])), c.in_count, c.out_count
            )
        zones = tuple(
            ZoneOverlay(tuple((float(x), float(y)) for x, y in z.polygon.tolist()), z.current_count) for z in self.zones
        )
        return Overlay(line, zones)

    def _publish(self, item, final: bool = False) -> None:
        while True:
            try:
                self._output.put(item, timeout=0.05)
                return
            except queue.Full:
                if self._abandoned.is_set() and not final:
                    return  # nobody reads results any more; sinks have them already
                if self._abandoned.is_set():
                    try:
                        self._output.get_nowait()  # make room for the end marker
                    except queue.Empty:
                        pass

    def _sink_failed(self, sink: Sink, exc: Exception) -> None:
        """Remember the first failure of each output, so the run can say why frames failed."""
        with self._lock:
            self._stats.sink_errors.setdefault(type(sink).__name__, f"{type(exc).__name__}: {exc}")

    def _dropped_by_buffer(self, frame: Frame) -> None:
        self._count_drop(DropCause.STOPPED if self.buffer.closed else DropCause.BUFFER)

    def _count_drop(self, cause: DropCause) -> None:
        with self._lock:
            self._stats.dropped[cause.value] += 1
