"""Greedy non-maximum suppression, vectorised with NumPy.

It keeps exactly the boxes the textbook greedy loop keeps: visit boxes by descending score (ties
in input order), keep a box unless it overlaps an already kept box of the same class (or any kept
box, when class-agnostic) with IoU strictly above the threshold.
"""

from __future__ import annotations

import numpy as np

from visionpipe.errors import InputShapeError

# Up to this many boxes in one class, a full IoU matrix is cheaper than re-scanning the survivors
# after each kept box; beyond it the matrix would cost O(n^2) memory.
_MATRIX_LIMIT = 2048


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    class_ids: np.ndarray | None = None,
    top_k: int | None = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Indices of the boxes to keep, in descending score order.

    ``class_ids`` makes it class-aware (boxes of different classes never suppress each other);
    ``top_k`` keeps only the best-scoring candidates before suppression and ``max_det`` caps the
    number kept after it.
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputShapeError(f"boxes must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise InputShapeError(f"scores must have shape ({len(boxes)},), got {scores.shape}")
    if class_ids is not None and np.shape(class_ids) != (len(boxes),):
        raise InputShapeError(f"class_ids must have shape ({len(boxes)},), got {np.shape(class_ids)}")

    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    if len(order) == 0 or max_det == 0:
        return np.zeros(0, dtype=np.int64)

    if class_ids is None:
        kept = _greedy(boxes[order], iou_threshold, max_det)
        return order[kept].astype(np.int64)

    # Class-aware: suppression never crosses classes, so each class is an independent greedy run on
    # a smaller block; the union, put back in global score order, is what one global run keeps.
    classes = np.asarray(class_ids)[order]
    by_class = np.argsort(classes, kind="stable")  # positions within `order`, score order inside a class
    bounds = np.flatnonzero(np.diff(classes[by_class])) + 1
    kept_positions = [
        block[_greedy(boxes[order[block]], iou_threshold, max_det)]
        for block in np.split(by_class, bounds)
    ]
    positions = np.sort(np.concatenate(kept_positions))
    if max_det is not None:
        positions = positions[:max_det]
    return order[positions].astype(np.int64)


def _greedy(sorted_boxes: np.ndarray, iou_threshold: float, max_det: int | None) -> np.ndarray:
    """Positions kept by greedy NMS over boxes already sorted by descending score."""
    n = len(sorted_boxes)
    limit = n if max_det is None else max_det
    if n <= _MATRIX_LIMIT:
        overlaps = _pairwise_iou(sorted_boxes, sorted_boxes) > iou_threshold
        suppressed = np.zeros(n, dtype=bool)
        keep: list[int] = []
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            if len(keep) == limit:
                break
            suppressed |= overlaps[i]
        return np.asarray(keep, dtype=np.int64)

    remaining = np.arange(n)
    keep = []
    while remaining.size and len(keep) < limit:
        best = remaining[0]
        keep.append(best)
        rest = remaining[1:]
        iou = _pairwise_iou(sorted_boxes[best : best + 1], sorted_boxes[rest])[0]
        remaining = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix without validation, in float64 so results do not depend on how boxes are grouped."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    w = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)
