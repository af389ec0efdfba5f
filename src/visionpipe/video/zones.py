"""Counting tracked objects: a line they cross (:class:`LineCounter`) and a polygon they stand in
(:class:`PolygonZone`).

Both reduce each box to one anchor point (its centre, or the middle of its bottom edge, where a
person or a car touches the ground) and are pure NumPy. Frames are counted by ``update`` calls;
nothing reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionpipe.detections import Detections
from visionpipe.errors import ZoneError

__all__ = ["ANCHORS", "LineCounter", "PolygonZone", "ZoneError", "anchor_points", "points_in_polygon"]

ANCHORS = ("center", "bottom_center")


def anchor_points(xyxy: np.ndarray, anchor: str = "center") -> np.ndarray:
    """The (N, 2) float64 anchor point of each box: ``"center"`` or ``"bottom_center"``."""
    if anchor not in ANCHORS:
        raise ZoneError(f"unknown anchor {anchor!r}; expected one of {', '.join(ANCHORS)}")
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2 if anchor == "center" else boxes[:, 3]
    return np.stack([x, y], axis=1)


def _point(value: Sequence[float], name: str) -> np.ndarray:
    point = np.asarray(value, dtype=np.float64)
    if point.shape != (2,) or not np.isfinite(point).all():
        raise ZoneError(f"{name} must be a finite (x, y) pair, got {value!r}")
    return point


class LineCounter:
    """Counts tracks whose anchor crosses the segment ``start``–``end``.

    The side of a point is the sign of the cross product ``(end - start) x (point - start)``. In
    image coordinates (y down) a positive side is on the *right* of the directed segment as seen
    on screen: for a line drawn left to right, below it. A move from the right side to the left
    side is counted **in**, the reverse **out** — the convention of supervision's ``LineZone``
    with the same ``start`` and ``end``: with ``start=(0, y0), end=(W, y0)`` an object walking
    *up* the image crosses in, one walking down crosses out; for a line drawn top to bottom,
    walking from left to right is in. (To count the other way, swap ``start`` and ``end``.)
    Where the two still differ: ``LineZone`` by default needs all four corners of a box past the
    line (and checks the segment with the corners' limits), while this counter follows one anchor
    point, so a box straddling the line is counted here when its anchor crosses (tested against
    ``LineZone`` on a path where both count the same).

    Rules:

    - a track's side is remembered per ``tracker_id``; a point exactly on the line keeps the side
      the track had before, and a track's first side is the first one off the line (a track that
      appears on one side is not counted);
    - a crossing is counted when the side changes between a track's previous position and its
      current one, and only when the point where that move meets the line lies within the segment
      (end points included); a move that crosses the infinite line beyond the segment updates the
      side without counting;
    - each real crossing counts: a track that jitters back and forth across the line is counted
      in, out, in, ... once per move that changes side; a move is only counted once (repeating
      the same frame changes nothing, and a ``tracker_id`` present twice in one frame is taken at
      its first box);
    - a track missing for some frames is compared with where it was last seen;
    - the state of a track not seen for more than ``forget_after`` updates is dropped (None keeps
      it forever); the default (300) is ten times the tracker's ``max_lost`` default, after which
      a ByteTracker never shows that id again.

    ``in_count``/``out_count`` are totals, ``counts_by_class`` maps a class id to ``{"in": n,
    "out": m}`` using each crossing detection's class.

    Example::

        line = LineCounter((0, 300), (640, 300))
        crossed_in, crossed_out = line.update(tracked)   # tracked: Detections with tracker_id
        line.in_count, line.out_count
    """

    def __init__(
        self,
        start: Sequence[float],
        end: Sequence[float],
        anchor: str = "center",
        forget_after: int | None = 300,
    ) -> None:
        self.start = _point(start, "start")
        self.end = _point(end, "end")
        self._direction = self.end - self.start
        self._length2 = float(self._direction @ self._direction)
        if self._length2 == 0.0:
            raise ZoneError("a line needs two distinct end points")
        if anchor not in ANCHORS:
            raise ZoneError(f"unknown anchor {anchor!r}; expected one of {', '.join(ANCHORS)}")
        if forget_after is not None and (int(forget_after) != forget_after or forget_after < 1):
            raise ZoneError(f"forget_after must be a whole number >= 1 or None, got {forget_after}")
        self.anchor = anchor
        self.forget_after = None if forget_after is None else int(forget_after)
        self.reset()

    def reset(self) -> None:
        self.in_count = 0
        self.out_count = 0
        self.counts_by_class: dict[int, dict[str, int]] = {}
        self._side: dict[int, int] = {}  # last side off the line: +1 / -1
        self._position: dict[int, np.ndarray] = {}  # last anchor point
        self._seen: dict[int, int] = {}  # update count when last seen
        self._updates = 0

    def side(self, points: np.ndarray) -> np.ndarray:
        """-1, 0 or +1 for each (N, 2) point: left of, on, or right of the directed line."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.sign(self._cross(np.asarray(points, dtype=np.float64).reshape(-1, 2))).astype(np.int64)

    def _cross(self, points: np.ndarray) -> np.ndarray:
        rel = points - self.start
        return self._direction[0] * rel[:, 1] - self._direction[1] * rel[:, 0]

    def update(self, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        """Feed one frame of tracked detections; returns the tracker ids that crossed in and out
        on this frame (int64 arrays, in detection order)."""
        if not isinstance(detections, Detections):
            raise ZoneError(f"update() takes Detections, got {type(detections).__name__}")
        self._updates += 1
        empty = np.zeros(0, np.int64)
        if len(detections) and detections.tracker_id is None:
            raise ZoneError("LineCounter needs tracked detections (tracker_id is None); run a tracker first")
        if not len(detections):
            self._forget()
            return empty, empty.copy()
        _, first = np.unique(detections.tracker_id, return_index=True)
        order = np.sort(first)  # one box per id: its first, in detection order
        ids = detections.tracker_id[order]
        classes = detections.class_id[order]
        points = anchor_points(detections.xyxy[order], self.anchor)
        cross_now = self._cross(points)
        side = np.sign(cross_now).astype(np.int64)
        id_list = ids.tolist()
        before = np.array([self._side.get(t, 0) for t in id_list], dtype=np.int64)
        candidate = (side != 0) & (before != 0) & (side != before)
        crossed = np.zeros(len(ids), dtype=bool)
        if candidate.any():
            previous = np.array([self._position[t] for t in ids[candidate].tolist()])
            cross_before = self._cross(previous)
            # where the move previous -> now meets the line (t = 0 when previous lay on it);
            # the sides differ, so cross_before - cross_now is never 0
            t = cross_before / (cross_before - cross_now[candidate])
            hit = previous + t[:, None] * (points[candidate] - previous)
            s = (hit - self.start) @ self._direction / self._length2
            crossed[candidate] = (s >= 0.0) & (s <= 1.0)
        # right -> left is "in", as in supervision's LineZone for the same start and end
        went_in = crossed & (side < 0)
        went_out = crossed & (side > 0)
        directions = np.where(side[crossed] < 0, "in", "out").tolist()
        for cls, direction in zip(classes[crossed].tolist(), directions):
            self.counts_by_class.setdefault(int(cls), {"in": 0, "out": 0})[direction] += 1
        self.in_count += int(went_in.sum())
        self.out_count += int(went_out.sum())
        for tid, point, new_side in zip(id_list, points, side.tolist()):
            if new_side != 0:
                self._side[tid] = new_side
            self._position[tid] = point
            self._seen[tid] = self._updates
        result = (ids[went_in], ids[went_out])
        self._forget()
        return result

    def _forget(self) -> None:
        if self.forget_after is None:
            return
        stale = [tid for tid, seen in self._seen.items() if self._updates - seen > self.forget_after]
        for tid in stale:
            self._seen.pop(tid)
            self._position.pop(tid, None)
            self._side.pop(tid, None)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Bool (N,) mask of points inside a simple polygon (K, 2), by the even-odd rule; points on an
    edge or a vertex count as inside."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    a = polygon[None, :, :]
    b = np.roll(polygon, -1, axis=0)[None, :, :]
    p = points[:, None, :]
    px, py = p[..., 0], p[..., 1]
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    straddles = (ay > py) != (by > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
    crossings = (straddles & (px < x_cross)).sum(axis=1)
    inside = crossings % 2 == 1
    # on an edge: collinear with it and between its end points
    edge = b - a
    rel = p - a
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]
    dot = (edge * rel).sum(axis=-1)
    length2 = (edge * edge).sum(axis=-1)
    scale = np.maximum(np.sqrt(length2), 1.0) * np.maximum(np.abs(rel).max(axis=-1), 1.0)
    on_edge = (np.abs(cross) <= 1e-12 * scale) & (dot >= 0) & (dot <= length2)
    return inside | on_edge.any(axis=1)


class PolygonZone:
    """Which detections stand inside a polygon, how many, and for how long.

    ``update`` returns a bool mask over the detections whose anchor (``"bottom_center"`` by
    default: the point where an object meets the ground, which is what a zone drawn on the floor
    of the image is about) lies inside or on the border of the polygon, and sets
    ``current_count``. For tracked detections, ``dwell_frames[tracker_id]`` counts the consecutive
    updates the track has been inside, this one included; a track that is outside or missing on an
    update leaves the dict (and starts from 1 if it comes back). Untracked detections are counted
    but have no dwell.

    Example::

        zone = PolygonZone([(100, 100), (400, 100), (400, 300), (100, 300)])
        inside = zone.update(tracked)   # a boolean mask over the boxes; zone.count, dwell times
    """

    def __init__(self, points: Sequence[Sequence[float]] | np.ndarray, anchor: str = "bottom_center") -> None:
        polygon = np.asarray(points, dtype=np.float64)
        if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
            raise ZoneError(f"a polygon needs at least 3 (x, y) points, got shape {polygon.shape}")
        if not np.isfinite(polygon).all():
            raise ZoneError("polygon points must be finite")
        if anchor not in ANCHORS:
            raise ZoneError(f"unknown anchor {anchor!r}; expected one of {', '.join(ANCHORS)}")
        self.polygon = polygon
        self.anchor = anchor
        self.reset()

    def reset(self) -> None:
        self.current_count = 0
        self.dwell_frames: dict[int, int] = {}

    def update(self, detections: Detections) -> np.ndarray:
        if not isinstance(detections, Detections):
            raise ZoneError(f"update() takes Detections, got {type(detections).__name__}")
        inside = points_in_polygon(anchor_points(detections.xyxy, self.anchor), self.polygon)
        self.current_count = int(inside.sum())
        dwell: dict[int, int] = {}
        if detections.tracker_id is not None:
            for tid in detections.tracker_id[inside].tolist():
                if tid not in dwell:
                    dwell[tid] = self.dwell_frames.get(tid, 0) + 1
        self.dwell_frames = dwell
        return inside
