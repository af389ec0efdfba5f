"""Video sources: files, cameras, network streams and image folders, as explicit state machines.

A source is opened, read frame by frame and closed (or used as a context manager)::

    with open_source("rtsp://camera/stream") as source:
        for frame in source:
            ...

Every source walks through :class:`SourceState` and tells its subscribers about each change with a
:class:`SourceEvent`::

    STARTING -> RUNNING -> ENDED                      a file read to its end (or closed)
    STARTING -> RUNNING -> RECONNECTING -> RUNNING    a live stream that dropped and came back
    ... -> RECONNECTING -> ... -> FAILED              one that did not come back in time

Time comes in through parameters: ``clock`` stamps frames and events, ``sleep`` waits between
reconnection attempts, and ``opener`` builds the capture, so every path here is testable without a
camera, a network or real waiting.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from visionpipe.errors import SourceError, VideoSourceError, VisionpipeError
from visionpipe.io.images import decode_image
from visionpipe.io.sources import scan_folder
from visionpipe.video.frames import Frame

__all__ = [
    "CaptureSource",
    "ImageFolderSource",
    "ReconnectPolicy",
    "SourceEvent",
    "SourceState",
    "VideoSource",
    "VideoSourceError",
    "open_source",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], object]
_SourceT = TypeVar("_SourceT", bound="VideoSource")


class SourceState(str, Enum):
    """Where a source is in its life. ENDED and FAILED are final."""

    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (SourceState.ENDED, SourceState.FAILED)


@dataclass
class SourceEvent:
    """One thing that happened to a source.

    Every state change is an event; so is each reconnection attempt (RECONNECTING again, with the
    next ``attempt``) and each skipped image of an image sequence (state unchanged). ``previous`` is
    None for the first event (STARTING, sent by ``open()``). ``time`` is read from the source's clock.
    """

    state: SourceState
    previous: SourceState | None
    time: float
    message: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a live source retries after it loses its stream.

    The wait before retry ``n`` (0-based) is ``delay(n) = min(max_delay, initial_delay * factor**n)``.
    After ``max_attempts`` consecutive failed attempts (no frame read in between) the source FAILS;
    ``max_attempts=None`` retries for ever.
    """

    max_attempts: int | None = 5
    initial_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 or None, got {self.max_attempts}")
        if not (self.initial_delay >= 0 and self.max_delay >= 0):
            raise ValueError("initial_delay and max_delay must be >= 0")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            raw = self.initial_delay * self.factor**attempt
        except OverflowError:
            raw = math.inf
        return min(self.max_delay, raw)


class CaptureLike(Protocol):
    """What :class:`CaptureSource` needs from a capture (``cv2.VideoCapture`` or a test fake)."""

    def isOpened(self) -> bool: ...  # OpenCV's name
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


class VideoSource:
    """Base of every source: state, events, context manager and iteration.

    Subclasses implement ``_open()``, ``_read()`` and ``_release()``. ``read()`` opens the source on
    first use when ``open()`` was not called. Sources are read from one thread; ``close()`` may be
    called from another and interrupts a reconnection wait.

    Example::

        source = open_source("street.mp4")
        source.subscribe(lambda event: print(event.state))
        with source:
            for frame in source:
                ...
    """

    def __init__(self, name: str, *, clock: Clock = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._state = SourceState.STARTING
        self._failure: str | None = None
        self._subscribers: list[Callable[[SourceEvent], object]] = []
        self._opened = False
        self._stop = threading.Event()
        self._lock = threading.RLock()

    # --- public surface ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def failure(self) -> str | None:
        """Why the source FAILED, or why a file ENDED before its declared frame count; else None."""
        return self._failure

    @property
    def fps(self) -> float | None:
        """The nominal frame rate, or None when the source does not say."""
        return None

    @property
    def frame_count(self) -> int | None:
        """How many frames the source declares (files, image sequences), or None (live sources)."""
        return None

    def subscribe(self, callback: Callable[[SourceEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns a function that unsubscribes.

        Callbacks run on the reading thread; an exception in one is logged and does not stop the source.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def open(self: _SourceT) -> _SourceT:
        """Open the source (STARTING, then RUNNING), or raise :class:`VideoSourceError`."""
        with self._lock:
            if self._opened:
                if self._state.is_final:
                    raise VideoSourceError(self._name, f"the source has already {self._state.value}; create a new one")
                return self
            self._opened = True
            self._emit(SourceState.STARTING, None, f"opening {self._name}")
            try:
                self._open()
            except VideoSourceError as exc:
                self._failure = exc.cause
                self._transition(SourceState.FAILED, exc.cause)
                raise
            return self

    def read(self) -> Frame | None:
        """The next frame, or None once the source has ENDED or FAILED."""
        with self._lock:
            if not self._opened:
                self.open()
            if self._state.is_final or self._stop.is_set():
                return None
            frame = self._read()
            if self._stop.is_set():
                self._finish_closing()  # closed meanwhile (close() may have stopped waiting for us)
                return None
            return frame

    def close(self, wait: float | None = None) -> None:
        """Release the source; a source not yet ENDED or FAILED ENDS. Safe to call more than once.

        A read blocked in the capture (a stream that stopped answering) holds the source until
        it times out; ``wait`` bounds how long ``close`` waits for it (None: as long as it takes).
        When that runs out, the reader releases the source itself as soon as its read returns.
        """
        self._stop.set()  # wakes a reconnection wait on another thread; a blocked read ends the source
        if not self._lock.acquire(timeout=-1 if wait is None else max(0.0, wait)):
            return
        try:
            self._finish_closing()
        finally:
            self._lock.release()

    def _finish_closing(self) -> None:
        self._release()
        if self._opened and not self._state.is_final:
            self._transition(SourceState.ENDED, "closed")
        self._opened = True  # a closed source cannot be reopened

    def __enter__(self: _SourceT) -> _SourceT:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, state={self._state.value})"

    # --- for subclasses ---------------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> Frame | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _transition(self, state: SourceState, message: str = "", attempt: int = 0) -> None:
        self._emit(state, self._state, message, attempt)

    def _emit(self, state: SourceState, previous: SourceState | None, message: str, attempt: int = 0) -> None:
        self._state = state
        event = SourceEvent(state=state, previous=previous, time=self._clock(), message=message, attempt=attempt)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a faulty subscriber must not take the stream down
                logger.exception("video source %s: subscriber %r failed on %s", self._name, callback, event)


def _redact(uri: str) -> str:
    """The URI with any password replaced, for names, messages and logs."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/:@]*):[^/@]*@", r"\1:***@", uri)


def _scheme(uri: str) -> str | None:
    match = re.match(r"^([a-zA-Z][\w+.-]*)://", uri)
    return match.group(1).lower() if match else None


# schemes OpenCV's FFmpeg backend reads as network streams: these get the open and read timeouts
NETWORK_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt", "mms", "mmsh", "hls"}
)  # fmt: skip
DEFAULT_OPEN_TIMEOUT = 10.0  # seconds; OpenCV's FFmpeg backend would wait 30
DEFAULT_READ_TIMEOUT = 10.0


def capture_opener(
    open_timeout: float = DEFAULT_OPEN_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT
) -> Callable[[int | str], CaptureLike]:
    """``cv2.VideoCapture`` with its open and read timeouts set (network streams: FFmpeg backend)."""

    def open_capture(uri: int | str) -> CaptureLike:
        if isinstance(uri, str) and _scheme(uri) in NETWORK_SCHEMES:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                max(1, int(open_timeout * 1000)),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                max(1, int(read_timeout * 1000)),
            ]
            return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(uri)

    return open_capture


def _default_opener(uri: int | str) -> CaptureLike:
    return capture_opener()(uri)


class CaptureSource(VideoSource):
    """A file, camera or network stream read through ``cv2.VideoCapture`` (or an injected opener).

    ``uri``: a path, a camera index (an int or a string of digits), or a URL (rtsp://, http(s)://,
    rtmp://, udp://, ...). ``live`` (default: True for cameras and URLs, False for files) chooses
    what a failed read means: the end of a file, or a lost stream to reconnect to under
    ``reconnect``. Files and cameras that cannot be opened raise :class:`VideoSourceError` from
    ``open()``; a network stream that cannot be opened is retried like a lost one.

    Frame timestamps: a file's position (``CAP_PROP_POS_MSEC``, or ``index / fps`` when the backend
    reports no position); ``clock()`` at capture for live sources. ``captured_at`` is always
    ``clock()``. ``index`` keeps counting across reconnections.

    ``sleep`` waits between reconnection attempts; the default is a wait that ``close()`` interrupts.
    ``open_timeout`` and ``read_timeout`` (seconds) bound how long a network stream may keep the
    capture waiting to open, and for each frame, before it counts as a failed attempt.
    """

    def __init__(
        self,
        uri: str | int | os.PathLike,
        *,
        live: bool | None = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        opener: Callable[[int | str], CaptureLike] | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if isinstance(uri, bool):
            raise TypeError("uri must be a path, a camera index or a URL, not a bool")
        self._kind, self._target = self._classify(uri)
        name = f"camera {self._target}" if self._kind == "camera" else _redact(str(self._target))
        super().__init__(name, clock=clock)
        self.live = live if live is not None else self._kind != "file"
        self.reconnect = reconnect
        self._sleep: Sleep = sleep if sleep is not None else self._stop.wait
        self._opener = opener or capture_opener(open_timeout, read_timeout)
        self._capture: CaptureLike | None = None
        self._fps: float | None = None
        self._frame_count: int | None = None
        self._index = 0
        self._failures = 0  # consecutive failed reconnection attempts since the last good frame
        self._opened_at = 0.0

    @staticmethod
    def _classify(uri: str | int | os.PathLike) -> tuple[str, int | str]:
        if isinstance(uri, int):
            return "camera", uri
        text = os.fspath(uri)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if isinstance(uri, str) and text.strip().isdigit():
            return "camera", int(text.strip())
        scheme = _scheme(text)
        if scheme is not None and scheme != "file":
            return "stream", text
        if scheme == "file":
            text = text[len("file://") :]
        return "file", text

    @property
    def kind(self) -> str:
        """``"file"``, ``"camera"`` or ``"stream"``."""
        return self._kind

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return self._frame_count

    @property
    def frames_read(self) -> int:
        return self._index

    # --- opening ----------------------------------------------------------------------------------
    def _try_open(self) -> tuple[CaptureLike | None, str]:
        try:
            capture = self._opener(self._target)
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        try:
            opened = bool(capture.isOpened())
        except Exception as exc:
            opened, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "the capture did not open"
        if not opened:
            _safe_release(capture)
            return None, why
        return capture, ""

    def _open(self) -> None:
        self._opened_at = self._clock()
        capture, why = self._try_open()
        if capture is None:
            if self._kind == "file":
                raise VideoSourceError(self._name, self._diagnose_file(why))
            if self._kind == "camera":
                raise VideoSourceError(self._name, f"camera index {self._target} could not be opened (absent or busy)")
            self._reconnect(f"could not open the stream ({why})")  # network: retried; may end FAILED
            return
        self._attach(capture)
        self._transition(SourceState.RUNNING, f"opened {self._name}")

    def _diagnose_file(self, why: str) -> str:
        path = Path(str(self._target))
        if not path.exists():
            return "file not found"
        if path.is_dir():
            return "is a directory (use ImageFolderSource or open_source for image folders)"
        if not os.access(path, os.R_OK):
            return "permission denied"
        if path.stat().st_size == 0:
            return "empty file"
        return f"not a readable video (not a video, unsupported codec or corrupt header; {why})"

    def _attach(self, capture: CaptureLike) -> None:
        self._capture = capture
        fps = _get(capture, cv2.CAP_PROP_FPS)
        if fps > 0 and math.isfinite(fps):
            self._fps = fps
        if not self.live:
            count = _get(capture, cv2.CAP_PROP_FRAME_COUNT)
            self._frame_count = int(count) if count > 0 and math.isfinite(count) else None

    def _release(self) -> None:
        if self._capture is not None:
            _safe_release(self._capture)
            self._capture = None

    # --- reading ----------------------------------------------------------------------------------
    def _read(self) -> Frame | None:
        while not self._state.is_final:
            ok, image, why = self._grab()
            if ok:
                self._failures = 0
                return self._frame(image)
            if not self.live:
                self._end_of_file()
                return None
            if not self._reconnect(f"read failed after frame {self._index} ({why})"):
                return None
        return None

    def _grab(self) -> tuple[bool, Any, str]:
        if self._capture is None:
            return False, None, "no capture"
        try:
            ok, image = self._capture.read()
        except Exception as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        if not ok or image is None or getattr(image, "size", 0) == 0:
            return False, None, "no frame returned"
        return True, image, ""

    def _frame(self, image: np.ndarray) -> Frame:
        now = self._clock()
        index = self._index
        self._index += 1
        if self.live:
            timestamp = now
        else:
            position = _get(self._capture, cv2.CAP_PROP_POS_MSEC) if self._capture is not None else 0.0
            if position > 0 or (index == 0 and position == 0):
                timestamp = position / 1000.0  # the backend knows where the frame sits
            elif self._fps:
                timestamp = index / self._fps
            else:
                timestamp = now - self._opened_at
        return Frame(index=index, image=image, timestamp=timestamp, captured_at=now)

    def _end_of_file(self) -> None:
        self._release()
        expected = self._frame_count
        if self._index == 0:
            self._failure = "no frame could be read (an empty, truncated or undecodable video)"
            self._transition(SourceState.FAILED, self._failure)
        elif expected is not None and self._index < expected:
            self._failure = (
                f"ended early: read {self._index} of {expected} frames the container declares "
                "(the file is truncated or corrupt)"
            )
            self._transition(SourceState.ENDED, self._failure)
        else:
            self._transition(SourceState.ENDED, f"end of file after {self._index} frames")

    def _reconnect(self, cause: str) -> bool:
        """Retry until the stream opens (RUNNING, True) or the policy gives up (FAILED, False)."""
        policy = self.reconnect
        while True:
            if policy.max_attempts is not None and self._failures >= policy.max_attempts:
                self._release()
                self._failure = f"gave up after {self._failures} reconnection attempts: {cause}"
                self._transition(SourceState.FAILED, self._failure, self._failures)
                return False
            attempt = self._failures + 1
            self._transition(SourceState.RECONNECTING, cause, attempt)
            self._release()
            self._sleep(policy.delay(self._failures))
            if self._stop.is_set():
                return False
            self._failures += 1
            capture, why = self._try_open()
            if capture is not None:
                self._attach(capture)
                self._transition(SourceState.RUNNING, f"reconnected on attempt {attempt}", attempt)
                return True
            cause = f"could not reopen the stream ({why})"


def _get(capture: Any, prop: int) -> float:
    try:
        value = float(capture.get(prop))
    except Exception:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _safe_release(capture: Any) -> None:
    try:
        capture.release()
    except Exception:  # releasing a broken capture must not mask the original problem
        logger.debug("release of %r failed", capture, exc_info=True)


class ImageFolderSource(VideoSource):
    """A folder of images (recursive, sorted, image extensions only) or a list of paths, as a video.

    An image that cannot be decoded (or a subfolder or link the scan could not look into) becomes a
    frame with ``error`` set and no image: the processor counts it as captured and reports it as a
    failed frame, ``skipped`` counts it, and an event (state unchanged) names it. ``index`` is the
    image's position in the sequence; ``timestamp`` is ``index / fps``, or ``index`` when no ``fps``
    is given.
    """

    def __init__(
        self,
        folder_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        fps: float | None = None,
        clock: Clock = time.monotonic,
        decode: Callable[[Path], np.ndarray] = decode_image,
    ) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if isinstance(folder_or_paths, (str, os.PathLike)):
            self._folder: Path | None = Path(folder_or_paths)
            self._paths: list[Path] = []
            name = str(self._folder)
        else:
            self._folder = None
            self._paths = [Path(p) for p in folder_or_paths]
            name = f"{len(self._paths)} images"
        super().__init__(name, clock=clock)
        self._fps = float(fps) if fps is not None else None
        self._decode = decode
        self._position = 0
        self.skipped = 0

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return len(self._paths) if self._opened or self._folder is None else None

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def _open(self) -> None:
        if self._folder is not None:
            if not self._folder.exists():
                raise VideoSourceError(self._name, "folder not found")
            if not self._folder.is_dir():
                raise VideoSourceError(self._name, "not a folder")
            try:
                self._paths = scan_folder(self._folder)
            except SourceError as exc:
                raise VideoSourceError(self._name, str(exc)) from None
            if not self._paths:
                raise VideoSourceError(self._name, "no images found in the folder")
        elif not self._paths:
            raise VideoSourceError(self._name, "the list of images is empty")
        self._transition(SourceState.RUNNING, f"{len(self._paths)} images")

    def _read(self) -> Frame | None:
        while self._position < len(self._paths):
            index = self._position
            path = self._paths[index]
            self._position += 1
            now = self._clock()
            timestamp = index / self._fps if self._fps else float(index)
            try:
                image = self._decode(path)
            except (VisionpipeError, OSError, ValueError) as exc:
                # read but not decodable: a frame with its error, so it is counted and reported
                self.skipped += 1
                self._emit(self._state, self._state, f"unreadable image {index} ({path}): {exc}")
                return Frame(index=index, image=None, timestamp=timestamp, captured_at=now, error=exc)
            return Frame(index=index, image=image, timestamp=timestamp, captured_at=now)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        self._transition(SourceState.ENDED, f"end of sequence after {len(self._paths)} images{skipped}")
        return None


# options only captures take; open_source drops them for an image folder
_CAPTURE_ONLY = frozenset({"live", "reconnect", "sleep", "opener", "open_timeout", "read_timeout"})


def open_source(spec: str | int | os.PathLike | Sequence[str | os.PathLike], **kwargs: Any) -> VideoSource:
    """A source for what a user names: a folder or a list of image paths → :class:`ImageFolderSource`;
    a file, a camera index (int or digit string) or a URL → :class:`CaptureSource`. ``kwargs`` go to
    the chosen class. The source is returned unopened (use it as a context manager, or ``open()``).

    Example::

        with open_source("rtsp://camera/stream") as source:   # or a file, a folder, 0 for a webcam
            for frame in source:
                frame.index, frame.image
    """
    folder_kwargs = {k: v for k, v in kwargs.items() if k not in _CAPTURE_ONLY}
    if isinstance(spec, (list, tuple)):
        return ImageFolderSource(spec, **folder_kwargs)
    if isinstance(spec, (str, os.PathLike)) and not isinstance(spec, int):
        text = os.fspath(spec)
        if _scheme(str(text)) is None and not str(text).strip().isdigit() and Path(text).is_dir():
            return ImageFolderSource(spec, **folder_kwargs)
    return CaptureSource(spec, **kwargs)  # type: ignore[arg-type]
