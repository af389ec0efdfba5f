"""Keep native libraries' chatter (libjpeg, libpng, OpenCV, FFmpeg, ONNX Runtime) off the user's
terminal, so the first line a user reads about a bad input is visionpipe's own.

Those libraries write straight to file descriptor 2, from any thread, around their own errors
("Corrupt JPEG data: ...", "libpng error: IHDR: CRC error"), which visionpipe then reports in one
line of its own. :func:`native_stderr_silenced` points descriptor 2 at the null device and gives
Python's ``sys.stderr`` a private duplicate of the real stderr, so everything visionpipe (and Rich,
and Python's tracebacks) writes still arrives, and nothing written natively does. The command
line uses it unless ``--debug`` is given; the log levels are lowered too, for library users.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def lower_native_log_levels() -> None:
    """Ask the libraries themselves to be quiet (effective for OpenCV only before it is imported)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "cv2" in sys.modules:
        try:
            sys.modules["cv2"].setLogLevel(0)  # 0 = silent
        except Exception:  # an OpenCV build without it: the descriptor redirection still applies
            pass


@contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Descriptor 2 goes to the null device while ``sys.stderr`` keeps writing to the real stderr.

    Does nothing when ``sys.stderr`` is not descriptor 2 (a test capturing output, an embedding
    application), so it never takes output away from whoever replaced ``sys.stderr``.
    """
    try:
        real = enabled and sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    previous = sys.stderr
    sys.stderr = open(  # noqa: SIM115 - closed below, after descriptor 2 is restored
        saved, "w", buffering=1, encoding=previous.encoding, errors="backslashreplace", closefd=False
    )
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr = previous
        os.close(saved)
