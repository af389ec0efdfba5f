"""The frame every video component passes along."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One decoded frame.

        ``index`` counts frames read from the source (0, 1, 2, ... before any stride or drop);
        ``timestamp`` is the source's own position in seconds (a file's presentation time, or the
        capture time for live sources); ``captured_at`` is when it was read, on the processor's clock. A frame that was read but could not
    be decoded (an unreadable image of an image folder) carries ``error`` instead of an image, so it is
    counted and reported like any failed frame.
    """

    index: int
    image: np.ndarray | None  # None when the frame could not be decoded: ``error`` says why
    timestamp: float
    captured_at: float
    error: Exception | None = None
