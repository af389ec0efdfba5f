"""Multi-object tracking: ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating
Every Detection Box", ECCV 2022) on NumPy and ``scipy.optimize.linear_sum_assignment``.

The tracker keeps its tracks as columns (a Kalman mean and covariance per track, ids, classes, the
frame each was last matched), never as per-track Python objects, and is deterministic: frames are
counted by :meth:`ByteTracker.update` calls (or given as ``frame_index``), nothing reads a clock
and nothing is random.

Each frame:

1. every confirmed track (tracked or lost) is moved one step (or ``k`` steps when ``frame_index``
   jumps by ``k``) by a constant-velocity Kalman filter on (cx, cy, w/h, h);
2. detections scoring at least ``high_threshold`` are matched to those predicted boxes by IoU
   with the Hungarian method (pairs under ``match_iou`` never match);
3. the tracks that were tracked on the previous frame and are still unmatched are matched to the
   *low* detections (``low_threshold <= score < high_threshold``) at ``low_match_iou``: this second
   stage is ByteTrack's idea, it keeps a track alive through occlusion or blur, when the detector
   still sees the object but with a low score;
4. tentative tracks (born on an earlier frame, not yet confirmed) are matched to the high
   detections left over, at ``tentative_match_iou``; a tentative track that misses a frame is
   dropped;
5. high detections still unmatched start tentative tracks when they score at least
   ``new_track_threshold``;
6. confirmed tracks unmatched for more than ``max_lost`` frames are deleted.

Track ids are handed out when a track is *confirmed*, so the ids a caller sees are 1, 2, 3, ...
without gaps (a one-frame false positive never uses one up) and never reused until :meth:`reset`.

A track's class is voted over its history (each matched detection votes with its score), so a
detector that calls one vehicle "car" on most frames and "truck" on some gives one track, labelled
"car". A multi-label detector may report the *same* box under two classes on one frame; a
detection that overlaps a detection of another class matched on this frame (IoU at least
``duplicate_iou``) is taken as that object under another label: it votes for the track's class and
starts no track of its own.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from visionpipe.detections import Detections
from visionpipe.errors import TrackingError
from visionpipe.geometry import box_iou

__all__ = [
    "ByteTracker",
    "KalmanBoxFilter",
    "TrackingError",
    "xyah_to_xyxy",
    "xyxy_to_xyah",
]


# ------------------------------------------------------------------------------------------------
# Box layouts used by the motion model
# ------------------------------------------------------------------------------------------------

_MIN_HEIGHT = 1e-6


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (centre x, centre y, aspect w/h, height), float64.

    A box of zero height gets the aspect of a 1e-6 pixel tall box, so the conversion stays finite
    and :func:`xyah_to_xyxy` gives the width back.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / np.maximum(h, _MIN_HEIGHT), h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(centre x, centre y, aspect w/h, height) -> (x1, y1, x2, y2), float64. Negative sizes (a
    shrinking box extrapolated too far) are clipped to zero."""
    xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    h = np.maximum(xyah[:, 3], 0.0)
    w = np.maximum(xyah[:, 2] * h, 0.0)
    return np.stack([xyah[:, 0] - w / 2, xyah[:, 1] - h / 2, xyah[:, 0] + w / 2, xyah[:, 1] + h / 2], axis=1)


# ------------------------------------------------------------------------------------------------
# Kalman filter
# ------------------------------------------------------------------------------------------------


class KalmanBoxFilter:
    """Constant-velocity Kalman filter on (cx, cy, a, h, vcx, vcy, va, vh), as in SORT/DeepSORT
    and ByteTrack, for many tracks at once.

    Stateless: every method takes arrays (``mean`` (N, 8), ``covariance`` (N, 8, 8)) and returns
    new ones. Position and velocity noise are proportional to the box height (weights 1/20 and
    1/160, DeepSORT's), so a large near object may move more pixels per frame than a small far
    one; the height used for noise is at least 1 pixel, so degenerate boxes keep a covariance that
    can be inverted.
    """

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160) -> None:
        self.std_weight_position = float(std_weight_position)
        self.std_weight_velocity = float(std_weight_velocity)
        self._motion = np.eye(8)
        self._motion[np.arange(4), np.arange(4) + 4] = 1.0

    def _scale(self, mean: np.ndarray) -> np.ndarray:
        return np.maximum(mean[:, 3], 1.0)

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from (N, 4) xyah measurements: zero velocity, wide velocity uncertainty."""
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
        n = len(measurements)
        mean = np.concatenate([measurements, np.zeros((n, 4))], axis=1)
        h = self._scale(mean)
        wp, wv = self.std_weight_position, self.std_weight_velocity
        std = np.stack(
            [
                2 * wp * h,
                2 * wp * h,
                np.full(n, 1e-2),
                2 * wp * h,
                10 * wv * h,
                10 * wv * h,
                np.full(n, 1e-5),
                10 * wv * h,
            ],
            axis=1,
        )
        covariance = np.zeros((n, 8, 8))
        covariance[:, np.arange(8), np.arange(8)] = std**2
        return mean, covariance

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step ahead: x' = F x, P' = F P F^T + Q."""
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        n = len(mean)
        h = self._scale(mean)
        wp, wv = self.std_weight_position, self.std_weight_velocity
        std = np.stack(
            [wp * h, wp * h, np.full(n, 1e-2), wp * h, wv * h, wv * h, np.full(n, 1e-5), wv * h],
            axis=1,
        )
        noise = np.zeros((n, 8, 8))
        noise[:, np.arange(8), np.arange(8)] = std**2
        f = self._motion
        return mean @ f.T, f @ covariance @ f.T + noise

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The state in measurement space: (N, 4) mean and (N, 4, 4) innovation covariance."""
        mean = np.asarray(mean, dtype=np.float64)
        n = len(mean)
        h = self._scale(mean)
        wp = self.std_weight_position
        std = np.stack([wp * h, wp * h, np.full(n, 1e-1), wp * h], axis=1)
        projected = np.asarray(covariance, dtype=np.float64)[:, :4, :4].copy()
        projected[:, np.arange(4), np.arange(4)] += std**2
        return mean[:, :4].copy(), projected

    def update(
        self, mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct each state with its (N, 4) xyah measurement."""
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
        if len(mean) == 0:
            return mean.copy(), covariance.copy()
        projected_mean, innovation_cov = self.project(mean, covariance)
        cross = covariance[:, :, :4]  # P H^T, (N, 8, 4)
        # K = P H^T S^-1  <=>  S K^T = (P H^T)^T, S symmetric
        gain = np.linalg.solve(innovation_cov, cross.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = measurements - projected_mean
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = covariance - gain @ innovation_cov @ gain.transpose(0, 2, 1)
        new_cov = (new_cov + new_cov.transpose(0, 2, 1)) / 2
        return new_mean, new_cov


# ------------------------------------------------------------------------------------------------
# Assignment
# ------------------------------------------------------------------------------------------------


def _assign(similarity: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns matched by the Hungarian method, pairs under ``min_similarity`` excluded.

    It maximises the sum of ``similarity - min_similarity`` over matched pairs, which is the
    objective of ByteTrack's ``lap.lapjv(cost, cost_limit=1 - min_similarity)``: a pair is worth
    matching only by how much it clears the limit, so one good pair is never broken up to make two
    barely acceptable ones (plain Hungarian on IoU followed by a threshold can do that).
    """
    if similarity.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    allowed = similarity >= min_similarity
    if not allowed.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # the tiny bonus breaks ties towards matching a pair that sits exactly on the limit
    weight = np.where(allowed, similarity - min_similarity + 1e-9, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    keep = allowed[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


# ------------------------------------------------------------------------------------------------
# Tracker
# ------------------------------------------------------------------------------------------------


class ByteTracker:
    """ByteTrack multi-object tracker over :class:`~visionpipe.detections.Detections`.

    Defaults are ByteTrack's published ones (``yolox/tracker/byte_tracker.py``, MOT17 settings):

    - ``high_threshold=0.5`` (``track_thresh``): detections scoring at least this take part in the
      first association and may start tracks;
    - ``low_threshold=0.1``: detections under it are ignored; those in
      ``[low_threshold, high_threshold)`` only feed the second association;
    - ``new_track_threshold=0.6`` (ByteTrack's ``det_thresh = track_thresh + 0.1``): an unmatched
      high detection starts a track only when it scores at least this;
    - ``match_iou=0.2``: first association, ByteTrack's ``match_thresh=0.8`` as an IoU distance
      (``1 - IoU <= 0.8``);
    - ``low_match_iou=0.5``: second association (ByteTrack's fixed distance limit 0.5);
    - ``tentative_match_iou=0.3``: tentative tracks (ByteTrack's "unconfirmed", distance 0.7);
    - ``max_lost=30`` (``track_buffer`` at 30 fps): a track may go unmatched for this many
      frames and still be found again; scale it by ``fps / 30`` for other frame rates;
    - ``min_hits=2``: a track is confirmed, given an id and returned once it has been matched on
      this many consecutive frames, which is ByteTrack's rule (a new track must be matched again
      on the next frame). As in ByteTrack, tracks started on the tracker's first frame are
      confirmed at once. ``min_hits=1`` confirms every new track immediately;
    - ``class_aware=False``: as ByteTrack, a detection may match a track of any class; the
      track's class is the one voted over its history (score-weighted). ``class_aware=True`` only
      matches a detection to a track whose voted class is its own;
    - ``fuse_score=True``: as ByteTrack (non-MOT20 settings), IoU is multiplied by the detection
      score in the first and tentative associations (``False``: the IoU limits mean what they say);
    - ``duplicate_iou=0.7``: a detection overlapping a detection of *another class* that matched a
      track on this frame at least this much is the same object under another label (a
      multi-label detector's "car" and "truck" on one vehicle): it votes and starts no track.
      Per-class NMS never leaves two boxes of one class this close, so with a single-class
      detector this never applies; ``None`` turns it off (ByteTrack itself has no such rule);
    - ``box="detection"``: the box returned for a tracked object is the detection's own box;
      ``"kalman"`` returns the Kalman filter's corrected estimate, as ByteTrack's ``tlbr`` does
      (smoother, but it lags behind sudden moves and is not what the detector saw).

    Departures from ByteTrack that remain (with ``duplicate_iou=None`` and ``box="kalman"`` the
    decisions are ByteTrack's): score bands are half-open (``score >= high_threshold`` is high,
    ``low_threshold <= score < high_threshold`` is low), whereas ByteTrack's strict comparisons drop
    a score exactly equal to ``track_thresh``; IoU is computed on continuous coordinates, without
    ByteTrack's (cython_bbox's) +1 pixel on widths and heights; ids are numbered at confirmation
    (ByteTrack numbers tentative tracks too, so its ids have gaps); ByteTrack's final pruning of
    lost tracks that overlap a tracked one is not done: such a lost track simply ages out after
    ``max_lost`` frames.

    Example::

        tracker = ByteTracker()
        for frame_detections in per_frame:
            tracked = tracker.update(frame_detections)   # tracked.tracker_id holds the ids
    """

    def __init__(
        self,
        high_threshold: float = 0.5,
        low_threshold: float = 0.1,
        new_track_threshold: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        tentative_match_iou: float = 0.3,
        max_lost: int = 30,
        min_hits: int = 2,
        class_aware: bool = False,
        fuse_score: bool = True,
        duplicate_iou: float | None = 0.7,
        box: str = "detection",
    ) -> None:
        for name, value in (
            ("high_threshold", high_threshold),
            ("low_threshold", low_threshold),
            ("new_track_threshold", new_track_threshold),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise TrackingError(f"{name} must lie in [0, 1], got {value}")
        if low_threshold > high_threshold:
            raise TrackingError(f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})")
        for name, value in (
            ("match_iou", match_iou),
            ("low_match_iou", low_match_iou),
            ("tentative_match_iou", tentative_match_iou),
        ):
            if not 0.0 < float(value) <= 1.0:
                raise TrackingError(f"{name} must lie in (0, 1], got {value}")
        if duplicate_iou is not None and not 0.0 < float(duplicate_iou) <= 1.0:
            raise TrackingError(f"duplicate_iou must lie in (0, 1] or be None, got {duplicate_iou}")
        if box not in ("detection", "kalman"):
            raise TrackingError(f"box must be 'detection' or 'kalman', got {box!r}")
        if int(max_lost) != max_lost or max_lost < 0:
            raise TrackingError(f"max_lost must be a whole number >= 0, got {max_lost}")
        if int(min_hits) != min_hits or min_hits < 1:
            raise TrackingError(f"min_hits must be a whole number >= 1, got {min_hits}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.new_track_threshold = float(new_track_threshold)
        self.match_iou = float(match_iou)
        self.low_match_iou = float(low_match_iou)
        self.tentative_match_iou = float(tentative_match_iou)
        self.max_lost = int(max_lost)
        self.min_hits = int(min_hits)
        self.class_aware = bool(class_aware)
        self.fuse_score = bool(fuse_score)
        self.duplicate_iou = None if duplicate_iou is None else float(duplicate_iou)
        self.box = box
        self.kalman = KalmanBoxFilter()
        self.reset()

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new video)."""
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._track_id = np.zeros(0, np.int64)  # 0 while tentative
        self._class_id = np.zeros(0, np.int64)  # the voted class
        self._votes = np.zeros((0, 1))  # (tracks, classes): summed scores of the matched detections
        self._hits = np.zeros(0, np.int64)  # consecutive matched frames
        self._last_seen = np.zeros(0, np.int64)  # frame of the last match
        self._score = np.zeros(0, np.float32)
        self._frame: int | None = None
        self._next_id = 1
        self._class_names: tuple[str, ...] = ()

    @property
    def frame_index(self) -> int | None:
        """The frame index of the last :meth:`update` (None before the first)."""
        return self._frame

    @property
    def next_id(self) -> int:
        """The id the next confirmed track will get."""
        return self._next_id

    def _keep(self, mask: np.ndarray) -> None:
        self._mean = self._mean[mask]
        self._cov = self._cov[mask]
        self._track_id = self._track_id[mask]
        self._class_id = self._class_id[mask]
        self._votes = self._votes[mask]
        self._hits = self._hits[mask]
        self._last_seen = self._last_seen[mask]
        self._score = self._score[mask]

    def _predicted(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Every track's state moved from the last processed frame to ``frame`` (not stored).

        As in ByteTrack, the height velocity of a track that was not matched on the frame before
        the one predicted is zeroed, so a lost box keeps its size while it drifts.
        """
        mean, cov = self._mean.copy(), self._cov.copy()
        if self._frame is None or len(mean) == 0:
            return mean, cov
        for step in range(frame - self._frame):
            lost = self._last_seen < self._frame + step
            mean[lost, 7] = 0.0
            mean, cov = self.kalman.predict(mean, cov)
        return mean, cov

    def _vote(self, rows: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> None:
        """Add each detection's score to its track's tally for its class; re-elect the classes
        (ties go to the class seen first, i.e. the lowest column that reached the top)."""
        if len(rows) == 0:
            return
        needed = int(class_ids.max()) + 1
        if needed > self._votes.shape[1]:
            self._votes = np.pad(self._votes, ((0, 0), (0, needed - self._votes.shape[1])))
        np.add.at(self._votes, (rows, class_ids), scores.astype(np.float64))
        self._class_id[rows] = np.argmax(self._votes[rows], axis=1)

    def _absorb_duplicates(
        self,
        detections: Detections,
        det_rows: np.ndarray,
        track_rows: np.ndarray,
        high_left: np.ndarray,
        low: np.ndarray,
    ) -> np.ndarray:
        """The unmatched high detections that are not another label of a matched detection's box;
        the duplicates (high or low) vote for the matched detection's track."""
        if self.duplicate_iou is None or len(det_rows) == 0:
            return high_left
        matched = np.zeros(len(detections), bool)
        matched[det_rows] = True
        candidates = np.union1d(high_left, low[~matched[low]])
        if len(candidates) == 0:
            return high_left
        iou = box_iou(detections.xyxy[candidates].astype(np.float64), detections.xyxy[det_rows].astype(np.float64))
        other_class = detections.class_id[candidates][:, None] != detections.class_id[det_rows][None, :]
        iou = np.where(other_class, iou, 0.0)
        best = np.argmax(iou, axis=1)
        duplicate = iou[np.arange(len(candidates)), best] >= self.duplicate_iou
        dup = candidates[duplicate]
        self._vote(track_rows[best[duplicate]], detections.class_id[dup], detections.confidence[dup])
        return np.setdiff1d(high_left, dup)

    def _births_without_duplicates(self, detections: Detections, born: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detections that start tracks, less those that repeat a more confident newborn's
        box under another class; and the (duplicate, newborn) pairs, for the vote."""
        pairs = np.zeros((0, 2), np.int64)
        if self.duplicate_iou is None or len(born) < 2:
            return born, pairs
        order = born[np.argsort(-detections.confidence[born], kind="stable")]
        iou = box_iou(detections.xyxy[order].astype(np.float64), detections.xyxy[order].astype(np.float64))
        classes = detections.class_id[order]
        parent = np.full(len(order), -1)
        for i in range(1, len(order)):  # greedy in score order, as NMS; only a handful are born per frame
            leaders = np.flatnonzero(
                (parent[:i] < 0) & (classes[:i] != classes[i]) & (iou[i, :i] >= self.duplicate_iou)
            )
            if len(leaders):
                parent[i] = leaders[np.argmax(iou[i, leaders])]
        dup = parent >= 0
        if not dup.any():
            return born, pairs
        pairs = np.stack([order[dup], order[parent[dup]]], axis=1)
        return np.sort(order[~dup]), pairs

    # -- public API ---------------------------------------------------------------------------

    def predictions(self, frame_index: int | None = None) -> Detections:
        """Where every confirmed track (tracked or lost) is expected on ``frame_index`` (the next
        frame by default), as Detections with ``tracker_id``; ``confidence`` is each track's last
        matched score. Does not change the tracker."""
        frame = self._next_frame(frame_index)
        confirmed = self._track_id > 0
        mean, _ = self._predicted(frame)
        return Detections(
            xyxy=xyah_to_xyxy(mean[confirmed, :4]).astype(np.float32),
            confidence=self._score[confirmed],
            class_id=self._class_id[confirmed],
            tracker_id=self._track_id[confirmed],
            class_names=self._class_names,
        )

    def _next_frame(self, frame_index: int | None) -> int:
        if frame_index is None:
            return 0 if self._frame is None else self._frame + 1
        if int(frame_index) != frame_index:
            raise TrackingError(f"frame_index must be a whole number, got {frame_index}")
        frame = int(frame_index)
        if self._frame is not None and frame <= self._frame:
            raise TrackingError(f"frame_index must increase: got {frame} after {self._frame}")
        return frame

    def _similarity(
        self, boxes: np.ndarray, rows: np.ndarray, detections: Detections, cols: np.ndarray, fuse: bool
    ) -> np.ndarray:
        if len(rows) == 0 or len(cols) == 0:  # nothing to compare: skip the IoU work altogether
            return np.zeros((len(rows), len(cols)))
        sim = box_iou(boxes[rows], detections.xyxy[cols].astype(np.float64)).astype(np.float64)
        if fuse:
            sim = sim * detections.confidence[cols].astype(np.float64)[None, :]
        if self.class_aware:
            same = self._class_id[rows][:, None] == detections.class_id[cols][None, :]
            sim = np.where(same, sim, -1.0)
        return sim

    def update(self, detections: Detections, frame_index: int | None = None) -> Detections:
        """Advance the tracker by one frame of detections.

        Returns the detections matched to confirmed tracks, in input order, with their own boxes
        and ``tracker_id`` set; detections not tracked (low scores that matched nothing, tentative
        tracks, scores under ``new_track_threshold``) are left out. ``frame_index`` (optional)
        must increase; when it jumps by ``k`` the tracks are predicted ``k`` steps and each
        skipped frame counts as a missed frame.
        """
        if not isinstance(detections, Detections):
            raise TrackingError(f"update() takes Detections, got {type(detections).__name__}")
        frame = self._next_frame(frame_index)
        first_frame = self._frame is None
        if detections.class_names:
            self._class_names = detections.class_names
        if len(detections) == 0 and len(self._mean) == 0:  # an empty scene: nothing to predict or match
            self._frame = frame
            return self._tracked(detections, np.zeros(0, np.int64), np.zeros(0, np.int64))

        # tracks that would have been deleted on skipped frames
        if not first_frame:
            gap = frame - self._last_seen
            confirmed = self._track_id > 0
            self._keep(np.where(confirmed, gap <= self.max_lost + 1, gap <= 1))

        self._mean, self._cov = self._predicted(frame)
        self._frame = frame
        boxes = xyah_to_xyxy(self._mean[:, :4])

        scores = detections.confidence
        high = np.flatnonzero(scores >= self.high_threshold)
        low = np.flatnonzero((scores >= self.low_threshold) & (scores < self.high_threshold))
        confirmed = self._track_id > 0
        tracked = confirmed & (self._last_seen == frame - 1)

        matched_tracks: list[np.ndarray] = []
        matched_dets: list[np.ndarray] = []

        # 1. high detections vs every confirmed track (tracked and lost)
        pool = np.flatnonzero(confirmed)
        rows, cols = _assign(self._similarity(boxes, pool, detections, high, self.fuse_score), self.match_iou)
        matched_tracks.append(pool[rows])
        matched_dets.append(high[cols])
        high_left = np.delete(high, cols)
        pool_left = np.delete(pool, rows)

        # 2. low detections vs the tracks tracked on the previous frame and still unmatched
        second = pool_left[tracked[pool_left]]
        rows, cols = _assign(self._similarity(boxes, second, detections, low, False), self.low_match_iou)
        matched_tracks.append(second[rows])
        matched_dets.append(low[cols])

        # 3. tentative tracks vs the high detections left
        tentative = np.flatnonzero(~confirmed)
        rows, cols = _assign(
            self._similarity(boxes, tentative, detections, high_left, self.fuse_score),
            self.tentative_match_iou,
        )
        matched_tracks.append(tentative[rows])
        matched_dets.append(high_left[cols])
        high_left = np.delete(high_left, cols)

        track_rows = np.concatenate(matched_tracks)
        det_rows = np.concatenate(matched_dets)
        measurements = xyxy_to_xyah(detections.xyxy[det_rows])
        self._mean[track_rows], self._cov[track_rows] = self.kalman.update(
            self._mean[track_rows], self._cov[track_rows], measurements
        )
        self._hits[track_rows] = np.where(self._last_seen[track_rows] == frame - 1, self._hits[track_rows] + 1, 1)
        self._last_seen[track_rows] = frame
        self._score[track_rows] = detections.confidence[det_rows]
        self._vote(track_rows, detections.class_id[det_rows], detections.confidence[det_rows])

        # a detection left over that is a matched detection's box under another class label (a
        # multi-label detector) votes for that track instead of starting one
        high_left = self._absorb_duplicates(detections, det_rows, track_rows, high_left, low)

        # 6. delete tentative tracks that missed this frame and tracks lost for too long
        alive = np.where(
            self._track_id > 0,
            frame - self._last_seen <= self.max_lost,
            self._last_seen == frame,
        )
        row_of_det = np.full(len(detections), -1, np.int64)
        new_row = np.cumsum(alive) - 1
        row_of_det[det_rows] = new_row[track_rows]  # matched tracks are always alive
        self._keep(alive)

        # 5. new tracks from the high detections left, confident enough
        born = high_left[detections.confidence[high_left] >= self.new_track_threshold]
        born, duplicate_of = self._births_without_duplicates(detections, born)
        if len(born):
            mean, cov = self.kalman.initiate(xyxy_to_xyah(detections.xyxy[born]))
            start = len(self._mean)
            self._mean = np.concatenate([self._mean, mean])
            self._cov = np.concatenate([self._cov, cov])
            self._track_id = np.concatenate([self._track_id, np.zeros(len(born), np.int64)])
            self._class_id = np.concatenate([self._class_id, detections.class_id[born]])
            self._votes = np.concatenate([self._votes, np.zeros((len(born), self._votes.shape[1]))])
            self._vote(start + np.arange(len(born)), detections.class_id[born], detections.confidence[born])
            if len(duplicate_of):  # other labels of a newborn's box vote for it
                dup, parent = duplicate_of[:, 0], start + np.searchsorted(born, duplicate_of[:, 1])
                self._vote(parent, detections.class_id[dup], detections.confidence[dup])
            self._hits = np.concatenate([self._hits, np.ones(len(born), np.int64)])
            self._last_seen = np.concatenate([self._last_seen, np.full(len(born), frame, np.int64)])
            self._score = np.concatenate([self._score, detections.confidence[born]])
            row_of_det[born] = start + np.arange(len(born))

        # confirm tentative tracks with enough hits (all tracks on the first frame), ids handed
        # out in detection order
        promote = (self._track_id == 0) & ((self._hits >= self.min_hits) | first_frame)
        if promote.any():
            det_order = np.flatnonzero(row_of_det >= 0)
            rows_in_order = row_of_det[det_order]
            rows_in_order = rows_in_order[promote[rows_in_order]]
            self._track_id[rows_in_order] = self._next_id + np.arange(len(rows_in_order))
            self._next_id += len(rows_in_order)

        out = np.flatnonzero(row_of_det >= 0)
        out = out[self._track_id[row_of_det[out]] > 0]
        return self._tracked(detections, out, row_of_det[out])

    def _tracked(self, detections: Detections, out: np.ndarray, rows: np.ndarray) -> Detections:
        """Detections ``out`` as tracks ``rows`` report them: id, voted class, chosen box."""
        kept = detections[out]
        xyxy = kept.xyxy
        if self.box == "kalman":
            xyxy = xyah_to_xyxy(self._mean[rows, :4]).astype(kept.xyxy.dtype)
        return Detections(
            xyxy=xyxy,
            confidence=kept.confidence,
            class_id=self._class_id[rows],
            tracker_id=self._track_id[rows],
            data=kept.data,
            class_names=kept.class_names,
        )
