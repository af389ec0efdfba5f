"""Test helper run as a subprocess: stream records into a monitoring store and acknowledge them.

Prints ``ack N`` once the first N records are committed (after ``Monitor.flush`` returns), forever,
until it is killed. Usage: python stream_records.py STORE [WRITER_TAG] [LIMIT]
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np

from visionpipe.detections import Detections
from visionpipe.monitor import Monitor


def main() -> None:
    store = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else "stream"
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    with Monitor(store, tag=tag, batch_size=16, flush_seconds=0.05) as monitor:
        i = 0
        while limit is None or i < limit:
            n = int(rng.integers(0, 4))
            detections = Detections(
                xyxy=np.tile([5.0, 5.0, 40.0, 50.0], (n, 1)),
                confidence=rng.uniform(0.3, 1.0, n),
                class_id=rng.integers(0, 3, n),
                class_names=("person", "car", "dog"),
            )
            monitor.observe(
                SimpleNamespace(image_id=f"{tag}-{i}", detections=detections, image_size=(480, 640)),
                image_features={"brightness": float(rng.normal(100, 10))},
            )
            i += 1
            if i % 7 == 0:
                monitor.flush()
                print(f"ack {i}", flush=True)
        monitor.flush()
        print(f"ack {i}", flush=True)


if __name__ == "__main__":
    main()
