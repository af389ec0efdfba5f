"""The frame every video component passes along."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One decoded frame.

    ``index`` counts frames read from the source (0, 1, 2, ... before any stride or drop);
    ``timestamp`` is the source's own position in seconds (a file's presentation time, or the
    capture time for live sources); ``captured_at`` is when it was read, on the processor's clock.
    """

    index: int
    image: np.ndarray
    timestamp: float
    captured_at: float
