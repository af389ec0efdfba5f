"""Speed of visionpipe's class-aware NMS vs OpenCV's ``cv2.dnn.NMSBoxesBatched``, same inputs.

Inputs look like a detector's candidates before NMS: objects spread over a 640x640 image across 80
classes, each seen as a cluster of jittered boxes with decreasing scores (distinct, so there are no
ties). For each box count, both are first checked to keep the same boxes; then the two run in
interleaved rounds and the table gives median milliseconds per call and the ratio. OpenCV gets its
boxes as (x, y, w, h), converted before timing; visionpipe takes (x1, y1, x2, y2).

The machine is a small shared VM: absolute times move between runs, the ratios measured in the
same run much less.

    python benchmarks/nms_speed.py [--rounds 7] [--counts 140,1000,3000,10000,20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from _common import header
from visionpipe.postprocess.nms import nms

IOU = 0.65
CLASSES = 80


def candidates(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` boxes in clusters of about 10 around n/10 objects, like raw detector output."""
    rng = np.random.default_rng(seed)
    objects = max(1, n // 10)
    centres = rng.uniform(0, 640, size=(objects, 2))
    sizes = rng.uniform(12, 220, size=(objects, 2))
    owner = rng.integers(0, objects, size=n)
    jitter = rng.normal(0, 0.08, size=(n, 4)) * np.repeat(sizes[owner], 2, axis=1)
    centre = centres[owner] + jitter[:, :2]
    size = np.abs(sizes[owner] * (1 + jitter[:, 2:] / np.maximum(sizes[owner], 1))) + 2
    # boxes stay inside the image without clipping: clipping would make zero-area boxes, on which
    # OpenCV and the textbook loop disagree (0/0 IoU), and this benchmark compares speed
    size = np.minimum(size, 600)
    centre = np.clip(centre, size / 2, 640 - size / 2)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    scores = rng.permutation(np.linspace(0.01, 0.99, n))  # distinct: no ties to order differently
    classes = rng.integers(0, CLASSES, size=objects)[owner]
    return boxes.astype(np.float32), scores.astype(np.float32), classes.astype(np.int64)


def opencv_nms(xywh: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores, classes, 0.0, IOU)
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--counts", default="140,1000,3000,10000,20000")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(
        header(
            "NMS: visionpipe.postprocess.nms vs cv2.dnn.NMSBoxesBatched",
            {"iou": IOU, "classes": CLASSES, "rounds": args.rounds, "opencv": cv2.__version__},
        )
    )
    rows = []
    for n in counts:
        boxes, scores, classes = candidates(n, seed=n)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
        ours = nms(boxes, scores, IOU, class_ids=classes)
        theirs = opencv_nms(xywh, scores, classes)
        same = set(ours.tolist()) == set(theirs.tolist())
        times: dict[str, list[float]] = {"opencv": [], "visionpipe": []}
        repeat = max(1, 20_000 // n)  # enough calls per round to be measurable
        for _ in range(args.rounds):
            for name in ("opencv", "visionpipe"):
                start = time.perf_counter()
                for _ in range(repeat):
                    if name == "opencv":
                        opencv_nms(xywh, scores, classes)
                    else:
                        nms(boxes, scores, IOU, class_ids=classes)
                times[name].append((time.perf_counter() - start) / repeat * 1000)
        cv_ms, vp_ms = statistics.median(times["opencv"]), statistics.median(times["visionpipe"])
        rows.append((n, len(ours), same, cv_ms, vp_ms))
    print()
    print("| boxes | kept | same boxes kept | OpenCV ms | visionpipe ms | OpenCV / visionpipe |")
    print("|---|---|---|---|---|---|")
    for n, kept, same, cv_ms, vp_ms in rows:
        print(f"| {n:,} | {kept:,} | {'yes' if same else 'NO'} | {cv_ms:.3f} | {vp_ms:.3f} | {cv_ms / vp_ms:.2f}x |")


if __name__ == "__main__":
    main()
