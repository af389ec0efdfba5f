"""Tests for visionpipe.video.tracking: the ByteTrack tracker and its Kalman filter.

Every scenario is a synthetic trajectory whose ground truth is known by construction: each box
carries its true object index in ``data["gt"]`` (which the tracker passes through untouched), so a
test checks ids against the truth, not against the tracker's own output. Expected ids come from the
rules stated in the tracker's documentation (ids handed out at confirmation, from 1, in detection
order; a track survives ``max_lost`` missed frames), worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionpipe.detections import Detections
from visionpipe.errors import VisionpipeError
from visionpipe.video.tracking import (
    ByteTracker,
    KalmanBoxFilter,
    TrackingError,
    xyah_to_xyxy,
    xyxy_to_xyah,
)


def frame(objects, rng=None, shuffle=False) -> Detections:
    """Detections from ``[(xyxy, score, class_id, gt), ...]``; optional seeded order shuffle."""
    objects = list(objects)
    if shuffle and rng is not None:
        objects = [objects[i] for i in rng.permutation(len(objects))]
    if not objects:
        return Detections(
            xyxy=np.zeros((0, 4)),
            confidence=np.zeros(0),
            class_id=np.zeros(0, np.int64),
            data={"gt": np.zeros(0, np.int64)},
        )
    return Detections(
        xyxy=np.array([o[0] for o in objects], dtype=np.float64),
        confidence=np.array([o[1] for o in objects]),
        class_id=np.array([o[2] for o in objects], dtype=np.int64),
        data={"gt": np.array([o[3] for o in objects], dtype=np.int64)},
    )


def box(x, y, w=40.0, h=80.0):
    return [x, y, x + w, y + h]


def ids_by_gt(out: Detections) -> dict[int, int]:
    return dict(zip(out.data["gt"].tolist(), out.tracker_id.tolist()))


# --------------------------------------------------------------------------------------------
# Crossing trajectories
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ids_persist_through_crossing_with_noise(seed):
    # A moves right at 6 px/frame, B left at 6 px/frame, 30 px lower; they meet near frame 25,
    # where their boxes overlap with IoU up to 0.45 (40x80 boxes, 50 px of shared height:
    # 2000 / (6400 - 2000)). Noise sigma 1.5 px on every coordinate, order shuffled every frame.
    rng = np.random.default_rng(seed)
    tracker = ByteTracker()
    first: dict[int, int] | None = None
    overlapping_frames = 0
    for f in range(50):
        a = np.array(box(0 + 6 * f, 100)) + rng.normal(0, 1.5, 4)
        b = np.array(box(300 - 6 * f, 130)) + rng.normal(0, 1.5, 4)
        if abs((0 + 6 * f) - (300 - 6 * f)) < 40:
            overlapping_frames += 1
        out = tracker.update(frame([(a, 0.9, 0, 0), (b, 0.85, 0, 1)], rng, shuffle=True))
        assert len(out) == 2  # both confirmed from the first frame on
        mapping = ids_by_gt(out)
        if first is None:
            first = mapping
            assert sorted(first.values()) == [1, 2]
        assert mapping == first, f"ids swapped at frame {f}"
    assert overlapping_frames >= 5  # the scenario really does make the boxes overlap


def test_ids_persist_when_identical_boxes_pass_on_the_same_row():
    # Same row, same size: the boxes are 3 px apart at frame 25 and swap sides after it; only
    # the motion model can tell which is which.
    tracker = ByteTracker()
    first = None
    for f in range(50):
        out = tracker.update(frame([(box(6 * f, 100), 0.9, 0, 0), (box(303 - 6 * f, 100), 0.9, 0, 1)]))
        mapping = ids_by_gt(out)
        first = first or mapping
        assert mapping == first, f"ids swapped at frame {f}"


def test_returned_boxes_are_the_detections_own_boxes_in_input_order():
    tracker = ByteTracker()
    dets = frame([(box(300, 10), 0.9, 0, 0), (box(10, 10), 0.8, 0, 1), (box(600, 10), 0.05, 0, 2)])
    out = tracker.update(dets)
    # the 0.05 box is under low_threshold: not tracked, not returned
    np.testing.assert_array_equal(out.xyxy, dets.xyxy[:2])
    np.testing.assert_array_equal(out.data["gt"], [0, 1])
    np.testing.assert_array_equal(out.tracker_id, [1, 2])  # ids in detection order
    assert out.tracker_id.dtype == np.int64


def test_assignment_uses_bytetracks_thresholded_objective():
    # Two still tracks, T1 = x 0..100 and T2 = x 70..300 (all boxes 100 px tall, same rows). Then
    # D1 = x 0..170 and D2 = x 0..30 arrive. IoUs by hand: T1-D1 100/170 = 0.588, T2-D1
    # 100/300 = 0.333, T1-D2 30/100 = 0.3, T2-D2 0. ByteTrack's lapjv with cost limit 0.8 scores
    # a matching by what each pair clears the 0.2 limit by: {T1-D1} 0.388 beats {T1-D2, T2-D1}
    # 0.1 + 0.133. (Maximising raw IoU would pick the swap, 0.633 > 0.588.)
    tracker = ByteTracker()
    for _ in range(5):
        out = tracker.update(frame([([0, 0, 100, 100], 0.9, 0, 0), ([70, 0, 300, 100], 0.9, 0, 1)]))
    assert out.tracker_id.tolist() == [1, 2]
    out = tracker.update(frame([([0, 0, 170, 100], 0.9, 0, 0), ([0, 0, 30, 100], 0.9, 0, 1)]))
    # D1 keeps T1's id; D2 matches nothing and only starts a tentative track
    assert ids_by_gt(out) == {0: 1}


@pytest.mark.parametrize("fuse_score, expected", [(False, [1]), (True, [])])
def test_fuse_score_weighs_iou_by_score(fuse_score, expected):
    # A still 100x100 track; then a box shifted 50 px: IoU 50/150 = 0.333 >= 0.2, but fused with
    # its score 0.55 it is 0.183 < 0.2. Unmatched, 0.55 is too low to start a track: nothing.
    tracker = ByteTracker(fuse_score=fuse_score)
    for _ in range(5):
        tracker.update(frame([([0, 0, 100, 100], 0.9, 0, 0)]))
    assert tracker.update(frame([([50, 0, 150, 100], 0.55, 0, 0)])).tracker_id.tolist() == expected


# --------------------------------------------------------------------------------------------
# Occlusion and track lifetime
# --------------------------------------------------------------------------------------------


def test_short_occlusion_keeps_id():
    tracker = ByteTracker()  # max_lost 30
    for f in range(30):
        dets = frame([] if 10 <= f < 15 else [(box(5 * f, 50), 0.9, 0, 0)])
        out = tracker.update(dets)
        if 10 <= f < 15:
            assert len(out) == 0
        else:
            # back at once on frame 15 (a re-found track is already confirmed), same id
            np.testing.assert_array_equal(out.tracker_id, [1])


def test_occlusion_longer_than_max_lost_gets_new_id():
    tracker = ByteTracker(max_lost=3)
    outputs = [tracker.update(frame([] if 10 <= f < 15 else [(box(5 * f, 50), 0.9, 0, 0)])) for f in range(20)]
    # last seen on frame 9; 5 missed frames > 3: deleted at the end of frame 13. Frame 15 starts
    # a tentative track (not returned), confirmed on frame 16 with the next id, 2.
    assert len(outputs[15]) == 0
    for f in range(16, 20):
        np.testing.assert_array_equal(outputs[f].tracker_id, [2])


@pytest.mark.parametrize("missed, expected_id", [(10, 1), (11, 2)])
def test_max_lost_boundary(missed, expected_id):
    # A still object seen on frames 0..4, missing `missed` frames. A track survives max_lost=10
    # missed frames: after 10 it is found again, after 11 it is gone and the object gets id 2
    # (returned from its second frame).
    tracker = ByteTracker(max_lost=10)
    for _ in range(5):
        tracker.update(frame([(box(100, 100), 0.9, 0, 0)]))
    for _ in range(missed):
        tracker.update(frame([]))
    back = tracker.update(frame([(box(100, 100), 0.9, 0, 0)]))
    again = tracker.update(frame([(box(100, 100), 0.9, 0, 0)]))
    if expected_id == 1:
        np.testing.assert_array_equal(back.tracker_id, [1])
    else:
        assert len(back) == 0
    np.testing.assert_array_equal(again.tracker_id, [expected_id])


# --------------------------------------------------------------------------------------------
# The ByteTrack point: low-score detections
# --------------------------------------------------------------------------------------------


def _score_dip(f: int) -> float:
    return 0.3 if 10 <= f < 20 else 0.9


def test_low_score_detections_keep_the_track_through_the_second_stage():
    tracker = ByteTracker()  # high 0.5, low 0.1: 0.3 is a low detection
    for f in range(30):
        out = tracker.update(frame([(box(4 * f, 60), _score_dip(f), 0, 0)]))
        np.testing.assert_array_equal(out.tracker_id, [1])
        assert out.confidence[0] == pytest.approx(_score_dip(f))


def test_score_under_low_threshold_loses_the_track():
    tracker = ByteTracker(low_threshold=0.4)  # 0.3 is now ignored
    outputs = [tracker.update(frame([(box(4 * f, 60), _score_dip(f), 0, 0)])) for f in range(30)]
    for f in range(10, 20):
        assert len(outputs[f]) == 0  # lost
    # lost for 10 frames < max_lost 30: the high detection on frame 20 finds it again
    for f in range(20, 30):
        np.testing.assert_array_equal(outputs[f].tracker_id, [1])


def test_score_under_low_threshold_and_short_max_lost_gives_new_id():
    tracker = ByteTracker(low_threshold=0.4, max_lost=5)
    outputs = [tracker.update(frame([(box(4 * f, 60), _score_dip(f), 0, 0)])) for f in range(30)]
    assert len(outputs[20]) == 0  # old track deleted; a tentative one starts
    for f in range(21, 30):
        np.testing.assert_array_equal(outputs[f].tracker_id, [2])


def test_low_detections_do_not_revive_lost_tracks_nor_start_tracks():
    # ByteTrack's second stage only uses tracks tracked on the previous frame.
    tracker = ByteTracker()
    for _ in range(10):
        tracker.update(frame([(box(100, 100), 0.9, 0, 0)]))
    for _ in range(3):
        tracker.update(frame([]))  # lost now
    for _ in range(8):
        assert len(tracker.update(frame([(box(100, 100), 0.3, 0, 0)]))) == 0
    assert tracker.next_id == 2  # no new track was started by the low boxes
    np.testing.assert_array_equal(tracker.update(frame([(box(100, 100), 0.9, 0, 0)])).tracker_id, [1])


# --------------------------------------------------------------------------------------------
# Classes, thresholds, ids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("class_aware, expected", [(True, 2), (False, 1)])
def test_other_class_at_same_place_does_not_take_the_id(class_aware, expected):
    tracker = ByteTracker(class_aware=class_aware)
    for _ in range(5):
        np.testing.assert_array_equal(tracker.update(frame([(box(100, 100), 0.9, 0, 0)])).tracker_id, [1])
    switched = [tracker.update(frame([(box(100, 100), 0.9, 1, 1)])) for _ in range(6)]
    if class_aware:
        assert len(switched[0]) == 0  # a new tentative track of class 1
        np.testing.assert_array_equal(switched[2].class_id, [1])
    else:
        # class-agnostic (ByteTrack): the same track; its class is voted by score over its
        # history: class 0 has 5 x 0.9 = 4.5, class 1 reaches 2.7 after 3 frames (still 0) and
        # 5.4 after 6 (now 1)
        np.testing.assert_array_equal(switched[0].tracker_id, [1])
        np.testing.assert_array_equal(switched[2].class_id, [0])
        np.testing.assert_array_equal(switched[5].class_id, [1])
    np.testing.assert_array_equal(switched[2].tracker_id, [expected])


def test_one_object_detected_as_two_classes_keeps_one_id():
    # A multi-label detector reports one moving vehicle as "car" (0.9) and "truck" (0.7, a
    # slightly different box: IoU about 0.9) on every frame, in shuffled order. Both are high
    # detections that could start tracks. One object: one id, labelled by the vote (car).
    tracker = ByteTracker()
    rng = np.random.default_rng(7)
    ids = set()
    for f in range(20):
        car = box(3 * f, 0)
        truck = [car[0] + 1, car[1] + 2, car[2] + 1, car[3]]
        out = tracker.update(frame([(car, 0.9, 2, 0), (truck, 0.7, 7, 0)], rng, shuffle=True))
        assert len(out) == 1, f"frame {f}: {out.tracker_id} {out.class_id}"
        assert out.class_id.tolist() == [2]
        ids.update(out.tracker_id.tolist())
    assert ids == {1}
    assert tracker.next_id == 2  # no second id was ever handed out


def test_one_object_as_two_classes_gave_two_ids_with_the_old_class_aware_settings():
    # the previous defaults (class-aware, no score fusion, no duplicate rule): two ids at once
    tracker = ByteTracker(class_aware=True, fuse_score=False, duplicate_iou=None)
    for f in range(5):
        car = box(3 * f, 0)
        out = tracker.update(frame([(car, 0.9, 2, 0), ([car[0] + 1, car[1] + 2, car[2] + 1, car[3]], 0.7, 7, 1)]))
    assert sorted(out.tracker_id.tolist()) == [1, 2]


def test_duplicate_rule_leaves_same_class_neighbours_alone():
    # two people standing close (IoU 0.82, same class): two objects, two ids
    tracker = ByteTracker()
    for _ in range(5):
        out = tracker.update(frame([(box(100, 0), 0.9, 0, 0), (box(104, 0), 0.8, 0, 1)]))
    assert sorted(out.tracker_id.tolist()) == [1, 2]


def test_kalman_box_option_returns_the_filter_estimate():
    # a still object with a jittering detection: the Kalman box moves less than the detection
    rng = np.random.default_rng(3)
    detection, kalman = ByteTracker(), ByteTracker(box="kalman")
    spread = {"detection": [], "kalman": []}
    for f in range(40):
        noisy = np.array(box(100, 100)) + rng.normal(0, 3, 4)
        dets = frame([(noisy, 0.9, 0, 0)])
        a, b = detection.update(dets), kalman.update(dets)
        assert a.tracker_id.tolist() == b.tracker_id.tolist() == [1]
        np.testing.assert_array_equal(a.xyxy, dets.xyxy)
        if f >= 10:
            spread["detection"].append(a.xyxy[0, 0])
            spread["kalman"].append(b.xyxy[0, 0])
    assert np.std(spread["kalman"]) < 0.6 * np.std(spread["detection"])


def test_new_tracks_need_new_track_threshold():
    # 0.55 is a high detection (>= 0.5) but under new_track_threshold 0.6: it never starts a track
    tracker = ByteTracker()
    for _ in range(10):
        assert len(tracker.update(frame([(box(10, 10), 0.55, 0, 0)]))) == 0
    assert tracker.next_id == 1
    # the threshold itself is enough (0.75 is exact in float32)
    tracker = ByteTracker(new_track_threshold=0.75)
    np.testing.assert_array_equal(tracker.update(frame([(box(10, 10), 0.75, 0, 0)])).tracker_id, [1])
    tracker = ByteTracker(new_track_threshold=0.75)
    assert len(tracker.update(frame([(box(10, 10), 0.74, 0, 0)]))) == 0


def test_ids_start_at_one_and_are_never_reused():
    tracker = ByteTracker(max_lost=2)
    seen = []
    for f in range(40):
        if f < 5:
            objects = [(box(0, 0), 0.9, 0, 0)]
        elif f == 12:
            objects = [(box(500, 500), 0.9, 0, 9)]  # a one-frame false positive: no id used up
        elif 20 <= f < 25:
            objects = [(box(200, 0), 0.9, 0, 1)]
        elif f >= 30:
            objects = [(box(0, 0), 0.9, 0, 0)]  # object 0 back after its track was deleted
        else:
            objects = []
        out = tracker.update(frame(objects))
        seen.append(out.tracker_id.tolist())
    # frame 0 is the tracker's first frame: confirmed at once, id 1. Object 1 starts on frame 20,
    # is confirmed on 21 with id 2. Object 0 returns on frame 30, long after deletion: id 3 on 31.
    assert seen[0:5] == [[1]] * 5
    assert seen[12] == [] and seen[20] == [] and seen[21:25] == [[2]] * 4
    assert seen[30] == [] and seen[31:] == [[3]] * 9


@pytest.mark.parametrize("min_hits", [1, 2, 3])
def test_min_hits_confirmation(min_hits):
    tracker = ByteTracker(min_hits=min_hits)
    tracker.update(frame([]))  # the first frame is empty, so the first-frame rule does not apply
    outputs = [tracker.update(frame([(box(50, 50), 0.9, 0, 0)])) for _ in range(5)]
    lengths = [len(o) for o in outputs]
    assert lengths == [0] * (min_hits - 1) + [1] * (5 - min_hits + 1)
    assert outputs[-1].tracker_id.tolist() == [1]


def test_first_frame_tracks_are_confirmed_at_once_and_reset_restarts():
    tracker = ByteTracker(min_hits=3)
    out = tracker.update(frame([(box(0, 0), 0.9, 0, 0), (box(100, 0), 0.9, 0, 1)]))
    assert out.tracker_id.tolist() == [1, 2]
    tracker.update(frame([]))
    tracker.reset()
    assert tracker.frame_index is None and tracker.next_id == 1
    assert tracker.update(frame([(box(300, 0), 0.9, 0, 0)])).tracker_id.tolist() == [1]


def test_empty_detections_and_no_data():
    tracker = ByteTracker()
    out = tracker.update(Detections.empty(("person",)))
    assert len(out) == 0 and out.tracker_id is not None and out.tracker_id.dtype == np.int64
    assert out.class_names == ("person",)
    dets = Detections(xyxy=[[0, 0, 10, 10]], confidence=[0.9], class_id=[0], class_names=("person",))
    # the first frame was empty, so this track needs its second hit (min_hits=2)
    assert len(tracker.update(dets)) == 0
    out = tracker.update(dets)
    assert out.tracker_id.tolist() == [1] and out.class_names == ("person",)


# --------------------------------------------------------------------------------------------
# Frame indices
# --------------------------------------------------------------------------------------------


def test_frame_index_jump_predicts_several_steps():
    # 8 px/frame, 40 px wide boxes: after a jump of 6 frames the object is 48 px from where a
    # one-step prediction would put it, so the boxes would not even touch. Predicting 6 steps finds it.
    tracker = ByteTracker()
    for f in range(10):
        tracker.update(frame([(box(8 * f, 0), 0.9, 0, 0)]), frame_index=f)
    out = tracker.update(frame([(box(8 * 15, 0), 0.9, 0, 0)]), frame_index=15)
    assert out.tracker_id.tolist() == [1]
    assert tracker.frame_index == 15


def test_one_step_prediction_would_miss_the_jump():
    # The same detections fed without frame indices: the jump looks like one frame, the box is
    # 48 px away, no IoU: a new track (not returned on its first frame).
    tracker = ByteTracker()
    for f in range(10):
        tracker.update(frame([(box(8 * f, 0), 0.9, 0, 0)]))
    assert len(tracker.update(frame([(box(8 * 15, 0), 0.9, 0, 0)]))) == 0


def test_frame_index_jump_past_max_lost_deletes_tracks():
    tracker = ByteTracker(max_lost=5)
    tracker.update(frame([(box(0, 0), 0.9, 0, 0)]), frame_index=0)
    tracker.update(frame([(box(0, 0), 0.9, 0, 0)]), frame_index=1)
    # last seen on 1; on frame 7 it has missed 2..6 (5 frames): still findable
    assert tracker.update(frame([(box(0, 0), 0.9, 0, 0)]), frame_index=7).tracker_id.tolist() == [1]
    # missed 8..13 (6 frames > 5): gone
    assert len(tracker.update(frame([(box(0, 0), 0.9, 0, 0)]), frame_index=14)) == 0
    assert tracker.update(frame([(box(0, 0), 0.9, 0, 0)]), frame_index=15).tracker_id.tolist() == [2]


def test_frame_index_must_increase():
    tracker = ByteTracker()
    tracker.update(frame([]), frame_index=5)
    with pytest.raises(TrackingError):
        tracker.update(frame([]), frame_index=5)
    with pytest.raises(TrackingError):
        tracker.update(frame([]), frame_index=3)
    assert tracker.update(frame([])) is not None and tracker.frame_index == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"high_threshold": 1.5},
        {"low_threshold": 0.6, "high_threshold": 0.5},
        {"match_iou": 0.0},
        {"max_lost": -1},
        {"min_hits": 0},
    ],
)
def test_bad_settings_raise_typed_error(kwargs):
    with pytest.raises(TrackingError) as info:
        ByteTracker(**kwargs)
    assert isinstance(info.value, VisionpipeError) and isinstance(info.value, ValueError)


def test_update_rejects_non_detections():
    with pytest.raises(TrackingError):
        ByteTracker().update(np.zeros((1, 5)))


# --------------------------------------------------------------------------------------------
# Kalman filter
# --------------------------------------------------------------------------------------------


def _moving_box(f: int) -> np.ndarray:
    # centre (100 + 3f, 200 - 2f), width 40 + f/2, height 80 + f: aspect stays 0.5
    w, h = 40 + 0.5 * f, 80 + 1.0 * f
    cx, cy = 100 + 3.0 * f, 200 - 2.0 * f
    return np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])


def test_layout_round_trip():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 5, 9], [-3, 2, 7, 4]], dtype=np.float64)
    xyah = xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah[0], [5, 10, 0.5, 20])  # by hand
    np.testing.assert_allclose(xyah_to_xyxy(xyah), boxes, atol=1e-9)


def test_kalman_constant_velocity_prediction_within_a_pixel():
    kf = KalmanBoxFilter()
    mean, cov = kf.initiate(xyxy_to_xyah(_moving_box(0)))
    # with no motion seen yet, the prediction stays where the box was: off by the motion (3 px)
    early = xyah_to_xyxy(kf.predict(mean, cov)[0][:, :4])
    assert np.abs(early - _moving_box(1)).max() > 2.5
    for f in range(1, 30):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, xyxy_to_xyah(_moving_box(f)))
    predicted = xyah_to_xyxy(kf.predict(mean, cov)[0][:, :4])
    assert np.abs(predicted - _moving_box(30)).max() < 1.0
    # the covariance stays symmetric positive definite
    np.testing.assert_allclose(cov, cov.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(cov) > 0).all()


def test_kalman_is_vectorised_over_tracks():
    kf = KalmanBoxFilter()
    boxes = np.concatenate([_moving_box(0), _moving_box(0) + 500])
    mean, cov = kf.initiate(xyxy_to_xyah(boxes))
    single_mean, single_cov = kf.initiate(xyxy_to_xyah(boxes[1:]))
    for f in range(1, 10):
        mean, cov = kf.predict(mean, cov)
        single_mean, single_cov = kf.predict(single_mean, single_cov)
        m = xyxy_to_xyah(np.concatenate([_moving_box(f), _moving_box(f) + 500]))
        mean, cov = kf.update(mean, cov, m)
        single_mean, single_cov = kf.update(single_mean, single_cov, m[1:])
    np.testing.assert_allclose(mean[1:], single_mean)
    np.testing.assert_allclose(cov[1:], single_cov)


def test_tracker_predictions_within_a_pixel():
    tracker = ByteTracker()
    for f in range(30):
        tracker.update(frame([(_moving_box(f)[0], 0.9, 3, 0)]))
    pred = tracker.predictions()
    assert pred.tracker_id.tolist() == [1] and pred.class_id.tolist() == [3]
    assert np.abs(pred.xyxy - _moving_box(30)).max() < 1.0
    # predictions() changes nothing: the next real update still returns the same id, and
    # asking twice gives the same answer
    np.testing.assert_array_equal(tracker.predictions().xyxy, pred.xyxy)
    assert tracker.update(frame([(_moving_box(30)[0], 0.9, 3, 0)])).tracker_id.tolist() == [1]


# --------------------------------------------------------------------------------------------
# Properties on random input
# --------------------------------------------------------------------------------------------


@st.composite
def random_video(draw):
    n_frames = draw(st.integers(1, 12))
    frames = []
    for _ in range(n_frames):
        n = draw(st.integers(0, 5))
        rows = []
        for _ in range(n):
            x = draw(st.integers(0, 4)) * 30.0
            y = draw(st.integers(0, 2)) * 30.0
            rows.append(
                (
                    [x, y, x + 40, y + 40],
                    draw(st.sampled_from([0.05, 0.3, 0.55, 0.7, 0.95])),
                    draw(st.integers(0, 1)),
                    0,
                )
            )
        frames.append(rows)
    return frames


@settings(max_examples=80, deadline=None)
@given(random_video())
def test_tracker_invariants(video):
    max_lost = 2
    tracker = ByteTracker(max_lost=max_lost)
    last_output: dict[int, int] = {}
    for f, rows in enumerate(video):
        dets = frame(rows)
        out = tracker.update(dets)
        # a subset of the input rows, in input order, with the input's own boxes
        if len(out):
            matches = [
                np.flatnonzero((dets.xyxy == b).all(axis=1) & (dets.confidence == c))
                for b, c in zip(out.xyxy, out.confidence)
            ]
            assert all(len(m) for m in matches)
        assert (out.confidence >= tracker.low_threshold).all()
        ids = out.tracker_id.tolist()
        assert len(set(ids)) == len(ids)  # one box per id per frame
        for tid in ids:
            if tid in last_output:
                # an id can only come back while its track survives
                assert f - last_output[tid] <= max_lost + 1
            else:
                # new ids are handed out in order, from 1, without gaps
                assert tid == len(last_output) + 1
                last_output[tid] = f
            last_output[tid] = f
    assert tracker.next_id == len(last_output) + 1
