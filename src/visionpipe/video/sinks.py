"""Where processed frames go: an annotated MP4, a JSONL log, or your own callback."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from visionpipe.io.annotate import annotate, draw_line_counter, draw_zone, overlay_text
from visionpipe.video.processor import FrameResult, Sink


def frame_record(result: FrameResult) -> dict:
    dets = result.detections
    record = {
        "frame": result.frame.index,
        "timestamp": round(result.frame.timestamp, 4),
        "latency_ms": round(result.latency * 1000, 2),
        "detections": [],
        "error": None if result.error is None else str(result.error) or type(result.error).__name__,
    }
    if dets is not None:
        record["detections"] = dets.to_records()
    if result.crossed is not None:
        record["crossed_in"], record["crossed_out"] = ([int(i) for i in ids] for ids in result.crossed)
    if result.overlay is not None and result.overlay.zones:
        record["zone_counts"] = [zone.count for zone in result.overlay.zones]
    return record


class JsonlSink(Sink):
    """One JSON line per processed frame, flushed as it goes (a live log can be followed with tail).

    The file is created (an existing one replaced) when the first frame arrives, not before: a
    source that fails to open leaves the previous log as it was.

    Example::

        VideoProcessor(pipeline, "street.mp4", sinks=[JsonlSink("frames.jsonl")]).run()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; give a file name for the JSONL log")
        self.handle: TextIO | None = None

    def write(self, result: FrameResult) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("w", encoding="utf-8")
        self.handle.write(json.dumps(frame_record(result)) + "\n")
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()


class CallbackSink(Sink):
    """Calls a function with every processed frame, on the processor's thread.

    Example::

        VideoProcessor(pipeline, "street.mp4", sinks=[CallbackSink(lambda r: print(r.frame.index))]).run()
    """

    def __init__(self, callback: Callable[[FrameResult], None]) -> None:
        self.callback = callback

    def write(self, result: FrameResult) -> None:
        self.callback(result)


class VideoFileSink(Sink):
    """Annotated MP4: boxes, class, score, track id; the counting line with live in/out counts and
    the zones with their current counts; frame, FPS and latency at the bottom left. Boxes and labels
    are drawn last, so the overlay never hides them.

    H.264 through PyAV when it is installed (``pip install 'visionpipe[video]'``), else OpenCV's
    MPEG-4 Part 2 ("mp4v") writer, which every OpenCV build has. The frame size is taken from the
    first frame; ``fps`` should be the source's (a function is asked when the first frame arrives).

    Example::

        VideoProcessor(pipeline, "street.mp4", sinks=[VideoFileSink("annotated.mp4", fps=25)]).run()
    """

    SUFFIXES = (".mp4", ".m4v", ".mov")

    def __init__(self, path: str | Path, fps: float | Callable[[], float | None], codec: str | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; give a file name ending in .mp4 for the annotated video")
        if self.path.suffix.lower() not in self.SUFFIXES:
            raise ValueError(f"{self.path} does not end in .mp4; the annotated video is written as MP4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fps = fps  # or a function giving it once the source is open
        self.codec = codec
        self._writer = None
        self._finish_times: deque[float] = deque()

    @property
    def fps(self) -> float:
        fps = self._fps() if callable(self._fps) else self._fps
        return fps if fps and fps > 0 else 25.0

    def _open(self, width: int, height: int) -> None:
        try:
            import av  # noqa: F401

            self._writer = _PyAvWriter(self.path, self.fps, width, height, self.codec or "libx264")
        except ImportError:
            self._writer = _OpenCvWriter(self.path, self.fps, width, height, self.codec or "mp4v")

    @property
    def backend(self) -> str:
        return "" if self._writer is None else self._writer.name

    def write(self, result: FrameResult) -> None:
        image = result.frame.image
        if image is None:  # a frame that could not be decoded: nothing to draw on
            return
        if self._writer is None:
            self._open(image.shape[1], image.shape[0])
        # the line, zones and status go under the detections, so no label is ever hidden by them
        canvas = image.copy()
        if result.overlay is not None:
            for k, zone in enumerate(result.overlay.zones, 1):
                draw_zone(canvas, zone.points, zone.count, f"zone {k}" if len(result.overlay.zones) > 1 else "zone")
            if result.overlay.line is not None:
                line = result.overlay.line
                draw_line_counter(canvas, line.start, line.end, line.in_count, line.out_count)
        self._finish_times.append(result.finished_at)
        while self._finish_times and result.finished_at - self._finish_times[0] > 1.0:
            self._finish_times.popleft()
        lines = [f"frame {result.frame.index}  {len(self._finish_times)} fps  {result.latency * 1000:.0f} ms"]
        if result.error is not None:
            lines.append(f"error: {result.error}"[:80])
        overlay_text(canvas, lines, bottom=True)
        if result.detections is not None:
            canvas = annotate(canvas, result.detections)
        self._writer.write(canvas)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _OpenCvWriter:
    name = "opencv"

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str) -> None:
        import cv2

        self.frame_wh = (width, height)  # width first: OpenCV's frameSize and dsize order
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, self.frame_wh)
        if not self.writer.isOpened():
            raise OSError(f"OpenCV cannot write {path} with codec {codec!r}")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(_fit(image, self.frame_wh))

    def close(self) -> None:
        self.writer.release()


class _PyAvWriter:
    name = "pyav"

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str) -> None:
        from fractions import Fraction

        import av

        self.frame_wh = (width - width % 2, height - height % 2)  # H.264 wants even sides; OpenCV's order
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height = self.frame_wh
        self.stream.pix_fmt = "yuv420p"

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(_fit(image, self.frame_wh), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _fit(image: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
    """The frame at the writer's (width, height) (frames are all one size; H.264 needs even sides)."""
    if (image.shape[1], image.shape[0]) == frame_wh:
        return image
    import cv2

    return cv2.resize(image, frame_wh)
