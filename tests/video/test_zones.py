"""Tests for visionpipe.video.zones: line crossing counts and polygon zones.

Trajectories are written as anchor points; boxes are built around them, so the expected side of
each point (and hence each count) is read off the coordinates by hand. Polygon membership is
checked against OpenCV's ``pointPolygonTest`` as an independent reference.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionpipe.detections import Detections
from visionpipe.errors import VisionpipeError
from visionpipe.video.zones import (
    LineCounter,
    PolygonZone,
    ZoneError,
    anchor_points,
    points_in_polygon,
)


def tracked(points, ids, classes=None, half=5.0) -> Detections:
    """Boxes of half-size ``half`` centred on each (x, y) point."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(points)
    return Detections(
        xyxy=np.concatenate([points - half, points + half], axis=1),
        confidence=np.full(n, 0.9),
        class_id=np.zeros(n, np.int64) if classes is None else np.asarray(classes),
        tracker_id=np.asarray(ids, dtype=np.int64).reshape(-1),
    )


def run(counter: LineCounter, path, tid=1, cls=0):
    """Feed one track along ``path``; returns the per-frame (in ids, out ids) as lists."""
    return [tuple(a.tolist() for a in counter.update(tracked([p], [tid], [cls]))) for p in path]


# A horizontal segment from (200, 100) to (0, 100), drawn right to left: moving down the image is
# "in" (as for supervision's LineZone with the same end points: right side -> left side).
def horizontal() -> LineCounter:
    return LineCounter((200, 100), (0, 100))


# --------------------------------------------------------------------------------------------
# LineCounter
# --------------------------------------------------------------------------------------------


def test_anchor_points_by_hand():
    boxes = np.array([[10, 20, 30, 60]], dtype=np.float32)
    np.testing.assert_array_equal(anchor_points(boxes, "center"), [[20, 40]])
    np.testing.assert_array_equal(anchor_points(boxes, "bottom_center"), [[20, 60]])
    with pytest.raises(ZoneError):
        anchor_points(boxes, "top_left")


def test_side_convention():
    # right of the directed segment on screen (y down) is positive
    line = LineCounter((0, 100), (200, 100))  # pointing right: below is its right
    np.testing.assert_array_equal(line.side([[50, 150], [50, 50], [50, 100]]), [1, -1, 0])
    down = LineCounter((100, 0), (100, 200))  # pointing down: screen-left is its right
    np.testing.assert_array_equal(down.side([[50, 50], [150, 50]]), [1, -1])


def test_crossing_down_once_counts_in_once():
    line = horizontal()
    steps = run(line, [(50, 80), (50, 90), (50, 110), (50, 120), (50, 130)])
    assert steps[2] == ([1], [])  # the move 90 -> 110 crosses
    assert all(s == ([], []) for i, s in enumerate(steps) if i != 2)
    assert (line.in_count, line.out_count) == (1, 0)


def test_crossing_up_once_counts_out_once():
    line = horizontal()
    run(line, [(120, 130), (120, 105), (120, 95), (120, 60)])
    assert (line.in_count, line.out_count) == (0, 1)


def test_vertical_line_direction():
    # (100, 0) -> (100, 200) points down; walking right goes from its right side to its left: in
    line = LineCounter((100, 0), (100, 200))
    run(line, [(80, 50), (120, 50)])
    assert (line.in_count, line.out_count) == (1, 0)
    run(line, [(130, 150), (70, 150)], tid=2)
    assert (line.in_count, line.out_count) == (1, 1)


def test_crossing_the_infinite_line_outside_the_segment_is_not_counted():
    line = horizontal()  # x from 0 to 200
    run(line, [(300, 80), (300, 120)])
    run(line, [(-20, 120), (-20, 80)], tid=2)
    assert (line.in_count, line.out_count) == (0, 0)
    # a diagonal move whose crossing point is at x = 250 (from (200, 90) to (300, 110))
    run(line, [(200, 90), (300, 110)], tid=3)
    assert (line.in_count, line.out_count) == (0, 0)
    # ... and one that crosses at x = 150, though it starts and ends beyond the segment's end
    run(line, [(100, 50), (250, 200)], tid=4)
    assert (line.in_count, line.out_count) == (1, 0)
    # the crossing point is where the move meets the line, not the middle of the move:
    # (150, 90) -> (450, 190) meets y = 100 a tenth of the way, at x = 180 (inside)...
    run(line, [(150, 90), (450, 190)], tid=5)
    assert (line.in_count, line.out_count) == (2, 0)
    # ... and (250, 99) -> (50, 199) meets it a hundredth of the way, at x = 248 (outside)
    run(line, [(250, 99), (50, 199)], tid=6)
    assert (line.in_count, line.out_count) == (2, 0)


def test_segment_end_points_count():
    line = horizontal()
    run(line, [(200, 90), (200, 110)])  # crosses exactly at the end point (200, 100)
    assert line.in_count == 1


def test_side_still_updates_when_crossing_outside_the_segment():
    # The track crosses down beyond the segment (not counted), then comes back up through it:
    # that is an out (its side was already "below"), not nothing.
    line = horizontal()
    run(line, [(300, 80), (300, 120), (100, 120), (100, 80)])
    assert (line.in_count, line.out_count) == (0, 1)


def test_back_and_forth_counts_every_crossing():
    line = horizontal()
    steps = run(line, [(50, 90), (50, 110), (50, 90), (50, 110), (50, 120)])
    assert [s for s in steps] == [([], []), ([1], []), ([], [1]), ([1], []), ([], [])]
    assert (line.in_count, line.out_count) == (2, 1)


def test_staying_on_the_line_counts_nothing():
    line = horizontal()
    run(line, [(50, 90), (50, 100), (60, 100), (70, 100), (70, 90)])
    assert (line.in_count, line.out_count) == (0, 0)
    # a track that starts on the line has no side until it leaves it
    run(line, [(50, 100), (50, 100), (50, 120)], tid=2)
    assert (line.in_count, line.out_count) == (0, 0)


def test_resting_on_the_line_then_crossing_counts_once():
    line = horizontal()
    steps = run(line, [(50, 90), (50, 100), (50, 100), (50, 110), (50, 100), (50, 120)])
    assert (line.in_count, line.out_count) == (1, 0)
    assert steps[3] == ([1], [])


def test_on_the_line_beyond_the_segment_then_across_is_not_counted():
    # above -> on the infinite line at x = 300 (outside) -> below: the crossing is at x = 300
    line = horizontal()
    run(line, [(300, 90), (300, 100), (300, 110)])
    assert (line.in_count, line.out_count) == (0, 0)


def test_same_move_is_counted_once():
    line = horizontal()
    line.update(tracked([(50, 90)], [1]))
    below = tracked([(50, 110)], [1])
    assert line.update(below)[0].tolist() == [1]
    assert line.update(below)[0].tolist() == []  # the same frame again: no new move
    # the same id twice in one frame, on both sides: taken once, at its first box (below)
    line.update(tracked([(60, 90)], [2]))
    crossed_in, crossed_out = line.update(tracked([(60, 110), (60, 85)], [2, 2]))
    assert crossed_in.tolist() == [2] and crossed_out.tolist() == []
    assert (line.in_count, line.out_count) == (2, 0)
    # ... and its remembered side is that box's: staying below is no new crossing
    assert line.update(tracked([(60, 120)], [2]))[0].tolist() == []
    assert (line.in_count, line.out_count) == (2, 0)


def test_track_missing_for_frames_is_compared_with_where_it_was_last_seen():
    line = horizontal()
    line.update(tracked([(50, 90)], [1]))
    for _ in range(5):
        line.update(tracked(np.zeros((0, 2)), []))
    assert line.update(tracked([(50, 110)], [1]))[0].tolist() == [1]


def test_forget_after_drops_stale_tracks():
    line = LineCounter((0, 100), (200, 100), forget_after=3)
    line.update(tracked([(50, 90)], [1]))
    for _ in range(4):
        line.update(tracked(np.zeros((0, 2)), []))
    # forgotten: its reappearance below the line is a first sighting, not a crossing
    assert line.update(tracked([(50, 110)], [1]))[0].tolist() == []
    assert line.in_count == 0


def test_several_tracks_and_counts_by_class():
    line = horizontal()
    frames = [
        [(50, 90), (150, 110), (100, 80)],
        [(50, 110), (150, 90), (100, 120)],
    ]
    ids, classes = [1, 2, 3], [0, 0, 2]
    results = [line.update(tracked(f, ids, classes)) for f in frames]
    assert results[1][0].tolist() == [1, 3] and results[1][1].tolist() == [2]
    assert (line.in_count, line.out_count) == (2, 1)
    assert line.counts_by_class == {0: {"in": 1, "out": 1}, 2: {"in": 1, "out": 0}}


def test_bottom_center_anchor():
    # a 40 px tall box centred at y = 80 has its bottom at y = 100 on the line, at 120 below it
    line = LineCounter((200, 100), (0, 100), anchor="bottom_center")
    centre = LineCounter((200, 100), (0, 100), anchor="center")
    for y in (50, 70, 90):  # bottoms 70, 90, 110: cross; centres 50, 70, 90: do not
        dets = tracked([(50, y)], [1], half=20.0)
        line.update(dets)
        centre.update(dets)
    assert line.in_count == 1 and centre.in_count == 0


def test_untracked_detections_raise_typed_error():
    line = horizontal()
    dets = Detections(xyxy=[[0, 0, 10, 10]], confidence=[0.9], class_id=[0])
    with pytest.raises(ZoneError) as info:
        line.update(dets)
    assert isinstance(info.value, ValueError) and isinstance(info.value, VisionpipeError)
    # an empty frame has nothing untracked in it
    assert [a.tolist() for a in line.update(Detections.empty())] == [[], []]


@pytest.mark.parametrize("args", [((0, 0), (0, 0)), ((0, 0), (1, float("nan"))), ((0, 0, 0), (1, 1))])
def test_bad_lines_raise(args):
    with pytest.raises(ZoneError):
        LineCounter(*args)


def test_reset():
    line = horizontal()
    run(line, [(50, 90), (50, 110)])
    line.reset()
    assert (line.in_count, line.out_count, line.counts_by_class) == (0, 0, {})
    assert line.update(tracked([(50, 90)], [1]))[1].tolist() == []  # no memory of the side


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=30))
def test_net_count_equals_side_change_on_a_long_line(ys):
    # Along a segment wider than every point, every side change is a crossing, so in - out is
    # (last side - first side) / 2 over the points off the line, and in + out is the number of
    # side changes.
    line = LineCounter((1000, 0), (-1000, 0))  # drawn right to left: moving down (y up) is in
    for i, y in enumerate(ys):
        line.update(tracked([(i * 3.0, float(y))], [7]))
    sides = [int(np.sign(y)) for y in ys if y != 0]
    changes = sum(a != b for a, b in itertools.pairwise(sides))
    net = (sides[-1] - sides[0]) // 2 if sides else 0
    assert line.in_count - line.out_count == net
    assert line.in_count + line.out_count == changes


# --------------------------------------------------------------------------------------------
# PolygonZone
# --------------------------------------------------------------------------------------------

SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100)]
# an L: the square minus its top-right quarter (50..100 x 0..50)
ELL = [(0, 0), (50, 0), (50, 50), (100, 50), (100, 100), (0, 100)]


def test_points_in_polygon_by_hand():
    pts = [(50, 50), (150, 50), (-1, 50), (0, 50), (100, 100), (50, 100.5)]
    assert points_in_polygon(pts, SQUARE).tolist() == [True, False, False, True, True, False]
    # the notch of the L is outside though inside its bounding box
    notch = [(75, 25), (25, 25), (75, 75), (50, 25)]
    assert points_in_polygon(notch, ELL).tolist() == [False, True, True, True]


def test_points_in_polygon_matches_opencv():
    rng = np.random.default_rng(3)
    polygons = [
        np.array(ELL, np.float32),
        np.array([(10, 10), (90, 20), (40, 40), (95, 90), (5, 80)], np.float32),  # concave
        (rng.uniform(0, 100, (3, 2))).astype(np.float32),
    ]
    points = rng.uniform(-10, 110, (2000, 2))
    for polygon in polygons:
        expected = np.array(
            [cv2.pointPolygonTest(polygon.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0 for x, y in points]
        )
        np.testing.assert_array_equal(points_in_polygon(points, polygon.astype(np.float64)), expected)


def test_zone_mask_count_and_dwell():
    zone = PolygonZone(SQUARE)  # bottom_center anchor

    # boxes 20x20: anchor = (x, bottom). Track 1 inside, track 2 outside, track 3 inside then out
    def dets(anchors, ids):
        a = np.asarray(anchors, np.float64)
        return Detections(
            xyxy=np.stack([a[:, 0] - 10, a[:, 1] - 20, a[:, 0] + 10, a[:, 1]], axis=1),
            confidence=np.full(len(a), 0.9),
            class_id=np.zeros(len(a), np.int64),
            tracker_id=ids,
        )

    mask = zone.update(dets([(50, 50), (150, 50), (10, 90)], [1, 2, 3]))
    assert mask.tolist() == [True, False, True] and zone.current_count == 2
    assert zone.dwell_frames == {1: 1, 3: 1}
    zone.update(dets([(55, 50), (140, 50), (10, 95)], [1, 2, 3]))
    assert zone.dwell_frames == {1: 2, 3: 2}
    mask = zone.update(dets([(60, 50), (120, 50), (10, 130)], [1, 2, 3]))  # 3 leaves
    assert mask.tolist() == [True, False, False] and zone.current_count == 1
    assert zone.dwell_frames == {1: 3}
    zone.update(dets([(60, 50), (10, 90)], [1, 3]))  # 3 comes back: its count starts again
    assert zone.dwell_frames == {1: 4, 3: 1}
    zone.update(dets([(10, 90)], [3]))  # 1 missing this frame: not consecutive any more
    assert zone.dwell_frames == {3: 2}


def test_zone_anchor_choice():
    # box 40..60 x 80..120: its centre (50, 100) is on the square's border, its bottom (50, 120)
    # is outside
    dets = Detections(xyxy=[[40, 80, 60, 120]], confidence=[0.9], class_id=[0])
    assert PolygonZone(SQUARE).update(dets).tolist() == [False]
    assert PolygonZone(SQUARE, anchor="center").update(dets).tolist() == [True]


def test_zone_untracked_and_empty():
    zone = PolygonZone(SQUARE)
    dets = Detections(xyxy=[[40, 40, 60, 60], [200, 200, 210, 210]], confidence=[0.9, 0.9], class_id=[0, 0])
    assert zone.update(dets).tolist() == [True, False]
    assert zone.current_count == 1 and zone.dwell_frames == {}
    assert zone.update(Detections.empty()).shape == (0,) and zone.current_count == 0


@pytest.mark.parametrize(
    "points", [[(0, 0), (1, 1)], [(0, 0, 0), (1, 1, 1), (2, 2, 2)], [(0, 0), (1, 0), (float("inf"), 1)]]
)
def test_bad_polygons_raise(points):
    with pytest.raises(ZoneError):
        PolygonZone(points)
