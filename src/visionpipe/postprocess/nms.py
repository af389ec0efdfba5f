"""Greedy non-maximum suppression, vectorised with NumPy.

It keeps exactly the boxes the textbook greedy loop keeps: visit boxes by descending score (ties
in input order), keep a box unless it overlaps an already kept box of the same class (or any kept
box, when class-agnostic) with IoU strictly above the threshold.

How, without a Python step per box:

1. Candidate pairs by sort-and-sweep: sorted by (class, x1), a box can only overlap the boxes after
   it whose x1 lies before its x2, so IoUs are computed for those pairs only — O(N + pairs), not
   O(N^2), for every class at once.
2. The greedy result is the one fixed point of ``keep[j] = not any(keep[i] and suppresses(i, j))``
   over pairs where i comes first in score order. Iterating it from "keep all" settles one more link
   of every overlap chain per step; real chains are short, so a few vectorised steps suffice. Long
   chains fall back to one Python step per kept box.
"""

from __future__ import annotations

import numpy as np

from visionpipe.errors import InputShapeError

# Fixed-point steps tried before walking the boxes one by one.
_FIXED_POINT_STEPS = 12
# Candidate pairs examined at once; bounds memory when many boxes share a column.
_PAIRS_PER_CHUNK = 1 << 21


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float,
    class_ids: np.ndarray | None = None,
    top_k: int | None = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Indices of the boxes to keep, in descending score order; a box overlapping a kept one with
    IoU above ``iou`` is suppressed.

    ``class_ids`` makes it class-aware (boxes of different classes never suppress each other);
    ``top_k`` keeps only the best-scoring candidates before suppression and ``max_det`` caps the
    number kept after it.

    Example::

        keep = nms(boxes, scores, 0.5, class_ids=class_ids, max_det=300)   # indices, best first
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

    ranked = boxes[order].astype(np.float64, copy=False)
    classes = None if class_ids is None else np.asarray(class_ids)[order]
    first, second = _suppressing_pairs(ranked, classes, iou)
    kept = _settle(len(order), first, second)
    if max_det is not None:
        kept = kept[:max_det]
    return order[kept].astype(np.int64)


def _suppressing_pairs(boxes: np.ndarray, classes: np.ndarray | None, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j in score rank, of the same class with IoU above the threshold."""
    n = len(boxes)
    group = np.zeros(n, np.int64) if classes is None else np.unique(classes, return_inverse=True)[1].ravel()
    sweep = np.lexsort((boxes[:, 0], group))  # by class, then left edge
    ordered = boxes[sweep]
    # Classes are laid end to end on one axis, 2 * span apart, so a search never crosses into the
    # next class; within a class, adding the shared offset keeps the keys' order (rounding is
    # monotonic) and side="right" keeps ties, so no overlapping pair is left out.
    span = float(np.max(boxes[:, 2]) - np.min(boxes[:, 0])) + 1.0
    offset = group[sweep] * (2 * span)
    ends = np.searchsorted(ordered[:, 0] + offset, ordered[:, 2] + offset, side="right")
    counts = np.maximum(ends - np.arange(1, n + 1), 0)
    firsts, seconds = [], []
    for rows in _chunks(counts, _PAIRS_PER_CHUNK):
        a = np.repeat(rows, counts[rows])
        b = a + 1 + (np.arange(len(a)) - np.repeat(np.cumsum(counts[rows]) - counts[rows], counts[rows]))
        # Pairs that do not intersect have IoU 0, never above a threshold: drop them before the IoU.
        touching = (np.minimum(ordered[a, 2], ordered[b, 2]) > ordered[b, 0]) & (
            np.minimum(ordered[a, 3], ordered[b, 3]) > np.maximum(ordered[a, 1], ordered[b, 1])
        )
        a, b = sweep[a[touching]], sweep[b[touching]]  # back to score-rank positions
        over = _iou_pairs(boxes[a], boxes[b]) > iou
        firsts.append(np.minimum(a[over], b[over]))
        seconds.append(np.maximum(a[over], b[over]))
    return np.concatenate(firsts), np.concatenate(seconds)


def _chunks(counts: np.ndarray, limit: int) -> list[np.ndarray]:
    """Consecutive row ranges whose candidate pairs add up to about ``limit`` (memory stays bounded)."""
    total = np.cumsum(counts)
    cuts = np.searchsorted(total, np.arange(limit, int(total[-1]) if len(total) else 0, limit), side="right")
    bounds = np.unique(np.r_[0, cuts, len(counts)])
    return [np.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])] or [np.arange(0)]


def _settle(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Rank positions kept by greedy suppression, given which earlier box overlaps which later one."""
    keep = np.ones(n, dtype=bool)
    for _ in range(_FIXED_POINT_STEPS):
        suppressed = np.zeros(n, dtype=bool)
        suppressed[second[keep[first]]] = True
        if np.array_equal(~suppressed, keep):
            return np.flatnonzero(keep)
        keep = ~suppressed
    # A long chain of overlaps: walk the ranks, each kept box striking out its later neighbours.
    by_first = np.argsort(first, kind="stable")
    heads = np.searchsorted(first[by_first], np.arange(n + 1))
    targets = second[by_first]
    suppressed = np.zeros(n, dtype=bool)
    for i in range(n):
        if not suppressed[i]:
            suppressed[targets[heads[i] : heads[i + 1]]] = True
    return np.flatnonzero(~suppressed)


def _iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[k] with b[k], float64; pairs with no union have IoU 0."""
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    w = (np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])).clip(0)
    h = (np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])).clip(0)
    inter = w * h
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)
