"""What a pipeline made of one input: its detections (or error), image size and stage times.

Its own module so that writers (``io.formats``), evaluation and later layers read results without
importing the pipeline that makes them. It sits beside ``io`` (``plot`` draws with
``io.annotate`` and reads with ``io.images``, neither of which imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionpipe.detections import Detections


@dataclass
class StageTimes:
    """Seconds spent on one image per stage; ``infer`` is its share of its batch's run.

    Example::

        result.times.decode, result.times.infer, result.times.total   # seconds
    """

    decode: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.infer + self.postprocess


@dataclass
class Result:
    """What the pipeline made of one input: detections, or the error that stopped it.

    For an ensemble, ``members`` holds each member's own detections (before fusion) and
    ``member_errors`` the members that failed on this input.

    Example::

        for result in pipe.stream(paths):
            print(result.image_id, result.detections if result.ok else result.error)
    """

    index: int
    image_id: str
    source: str
    image_size: tuple[int, int] | None = None  # (height, width) of the original image
    detections: Detections | None = None
    times: StageTimes = field(default_factory=StageTimes)
    error: Exception | None = None
    members: dict[str, Detections] = field(default_factory=dict)
    member_errors: dict[str, Exception] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)  # the decoded frame, with keep_images
    # statistics of the decoded image, filled where it was decoded when the pipeline has a monitor
    image_features: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def plot(self, image: Any = None, show_score: bool = True) -> np.ndarray:
        """The image with its detections drawn (a BGR array). Without ``image``, the source is read
        again from its path; for arrays or bytes, pass the image (a PIL image works too)."""
        from visionpipe.io.annotate import annotate
        from visionpipe.io.images import as_image_input, decode_image

        if self.error is not None or self.detections is None:
            raise ValueError(f"{self.source} has no detections to draw: {self.error}")
        if image is None:
            if self.source.startswith("<"):
                raise ValueError("this result came from an array or bytes: pass the image to plot()")
            image = self.source
        return annotate(decode_image(as_image_input(image)), self.detections, show_score=show_score)  # type: ignore[arg-type]
