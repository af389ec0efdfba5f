"""annotate: a drawn copy of the image, one colour per class, labels kept inside the image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.io.annotate import annotate, class_colour

NAMES = ("cat", "dog", "bird", "car")
BACKGROUND = 50  # grey: far from every class colour (all are saturated and bright)
H, W = 800, 1000  # min side 800: lines two pixels thick, so the middle of a line is not anti-aliased


def canvas(h: int = H, w: int = W) -> np.ndarray:
    return np.full((h, w, 3), BACKGROUND, np.uint8)


def dets(boxes, classes, scores=None, names=NAMES, **data) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=np.array(scores if scores is not None else [0.9] * n, np.float32),
        class_id=np.array(classes, np.int64),
        class_names=names,
        data=data,
    )


def is_colour(image: np.ndarray, colour) -> np.ndarray:
    return (image == np.array(colour, np.uint8)).all(axis=-1)


def test_class_colours_are_distinct_bgr_triples():
    colours = [class_colour(i) for i in range(80)]
    for c in colours:
        assert len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
    for (i, a), (j, b) in itertools.combinations(enumerate(colours), 2):
        assert a != b, (i, j, a)
    assert class_colour(5) == class_colour(5)  # deterministic


def test_returns_a_modified_copy_and_leaves_the_input_alone():
    image = canvas()
    before = image.copy()
    out = annotate(image, dets([[200, 300, 600, 500]], [0]))
    assert out is not image
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    assert not np.array_equal(out, before)


def test_box_edges_take_the_class_colour():
    box = (200, 300, 600, 500)
    out = annotate(canvas(), dets([box], [3]))
    colour = class_colour(3)
    x1, y1, x2, y2 = box
    middle_x = slice(x1 + 10, x2 - 10)
    middle_y = slice(y1 + 10, y2 - 10)
    assert is_colour(out[y1, middle_x], colour).all()  # top edge (label sits above it)
    assert is_colour(out[y2, middle_x], colour).all()  # bottom edge
    assert is_colour(out[middle_y, x1], colour).all()  # left edge
    assert is_colour(out[middle_y, x2], colour).all()  # right edge
    inside = out[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]
    assert (inside == BACKGROUND).all()  # boxes are outlines, not filled
    assert (out[700:, :] == BACKGROUND).all()  # far below the box nothing changed


def test_thin_lines_on_a_small_image_are_close_to_the_class_colour():
    image = canvas(200, 300)
    out = annotate(image, dets([[50, 80, 250, 180]], [1]))
    colour = np.array(class_colour(1), float)
    edge = out[180, 70:230].astype(float)  # bottom edge, one pixel thick and anti-aliased
    allowed = 0.2 * np.abs(colour - BACKGROUND) + 2
    assert (np.abs(edge - colour) <= allowed).all()


def test_different_classes_get_different_colours():
    boxes = [[100, 200, 400, 400], [500, 200, 900, 400]]
    out = annotate(canvas(), dets(boxes, [0, 1]))
    c0, c1 = class_colour(0), class_colour(1)
    assert c0 != c1
    assert is_colour(out[400, 150:350], c0).all() and not is_colour(out[400, 150:350], c1).any()
    assert is_colour(out[400, 550:850], c1).all() and not is_colour(out[400, 550:850], c0).any()


def test_same_class_same_colour():
    out = annotate(canvas(), dets([[100, 200, 400, 400], [500, 200, 900, 400]], [2, 2]))
    assert is_colour(out[400, 150:350], class_colour(2)).all()
    assert is_colour(out[400, 550:850], class_colour(2)).all()


def label_pixels(out: np.ndarray, box, colour, thickness: int = 2) -> np.ndarray:
    """Pixels of the class colour that are not on the box outline: the label's background."""
    mask = is_colour(out, colour)
    x1, y1, x2, y2 = (round(v) for v in box)
    band = thickness + 1
    outline = np.zeros_like(mask)
    ys, xs = slice(max(y1 - band, 0), y2 + band + 1), slice(max(x1 - band, 0), x2 + band + 1)
    outline[ys, max(x1 - band, 0) : x1 + band + 1] = True
    outline[ys, max(x2 - band, 0) : x2 + band + 1] = True
    outline[max(y1 - band, 0) : y1 + band + 1, xs] = True
    outline[max(y2 - band, 0) : y2 + band + 1, xs] = True
    return mask & ~outline


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def dot_polygon(box) -> np.ndarray:
    """A polygon collapsed onto the box centre: the outline becomes a dot, so the label stands alone."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return np.full((1, 4, 2), (cx, cy), np.float32)


def label_only(out: np.ndarray, box, colour) -> np.ndarray:
    mask = is_colour(out, colour)
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    mask[max(cy - 6, 0) : cy + 7, max(cx - 6, 0) : cx + 7] = False
    return mask


@pytest.fixture(scope="module")
def reference_label():
    """Size (w, h) of a label drawn in the open, where nothing can push or clip it."""
    box = (400, 400, 600, 600)
    out = annotate(canvas(), dets([box], [0], polygon=dot_polygon(box)))
    x1, y1, x2, y2 = extent(label_only(out, box, class_colour(0)))
    assert 40 < x2 - x1 + 1 < 300 and 10 < y2 - y1 + 1 < 60  # precondition: a plausible label was found
    assert y2 <= 400  # in the open, the label sits above its box (its last row may touch the top edge)
    return x2 - x1 + 1, y2 - y1 + 1


EDGE_BOXES = {
    "top": (300, 0, 600, 200),
    "bottom": (300, 600, 600, H),
    "left": (0, 300, 200, 500),
    "right": (800, 300, W, 500),
    "top-left": (0, 0, 200, 200),
    "top-right": (850, 0, W, 150),
    "bottom-left": (0, 700, 150, H),
    "bottom-right": (850, 700, W, H),
    "whole image": (0, 0, W, H),
    "thin at the top": (400, 0, 700, 6),
    "thin at the bottom": (400, H - 6, 700, H),
}


@pytest.mark.parametrize("where", sorted(EDGE_BOXES))
def test_labels_of_boxes_at_the_borders_are_drawn_inside_the_image(where):
    box = EDGE_BOXES[where]
    out = annotate(canvas(), dets([box], [0]))
    label = label_pixels(out, box, class_colour(0))
    assert label.sum() > 100, "no label background found off the box outline"
    lx1, ly1, lx2, ly2 = extent(label)
    x1, y1, x2, y2 = box
    assert lx2 >= x1 - 5 and lx1 <= x2 + 5  # near its box
    assert ly2 >= y1 - 60 and ly1 <= y2 + 5


@pytest.mark.parametrize("where", sorted(EDGE_BOXES))
def test_labels_at_the_borders_are_not_clipped(where, reference_label):
    box = EDGE_BOXES[where]
    out = annotate(canvas(), dets([box], [0], polygon=dot_polygon(box)))
    lx1, ly1, lx2, ly2 = extent(label_only(out, box, class_colour(0)))
    ref_w, ref_h = reference_label
    # the whole label is visible: as large as one drawn in the open (a pixel may be lost at a border)
    assert ref_w - 2 <= lx2 - lx1 + 1 <= ref_w
    assert ref_h - 2 <= ly2 - ly1 + 1 <= ref_h
    x1, y1, x2, y2 = box
    assert lx2 >= x1 - 5 and lx1 <= x2 + 5
    assert ly2 >= y1 - ref_h - 5 and ly1 <= y2 + 5


def test_label_of_a_box_at_the_left_edge_starts_at_the_edge():
    box = (0, 300, 200, 500)
    out = annotate(canvas(), dets([box], [0], polygon=dot_polygon(box)))
    lx1, _, _, ly2 = extent(label_only(out, box, class_colour(0)))
    assert lx1 <= 3 and ly2 <= 300  # above the box, from the left border


def test_label_of_a_box_at_the_right_edge_is_pulled_in(reference_label):
    box = (950, 300, W, 500)  # narrower than its label
    out = annotate(canvas(), dets([box], [0], polygon=dot_polygon(box)))
    lx1, _, lx2, _ = extent(label_only(out, box, class_colour(0)))
    assert lx2 >= W - 3  # ends at the right border
    assert lx2 - lx1 + 1 >= reference_label[0] - 2  # not cut off


def test_label_wider_than_the_image_does_not_fail():
    tiny = np.full((12, 16, 3), BACKGROUND, np.uint8)
    out = annotate(tiny, dets([[2, 2, 10, 10]], [1], names=("a very long class name",) * 2))
    assert out.shape == tiny.shape
    assert is_colour(out, class_colour(1)).any()


def test_polygons_are_drawn_instead_of_boxes():
    box = (200, 200, 600, 600)
    diamond = np.array([[[400, 200], [600, 400], [400, 600], [200, 400]]], np.float32)
    out = annotate(canvas(), dets([box], [2], polygon=diamond))
    colour = np.array(class_colour(2), float)
    # midpoints of the four diamond edges are painted (anti-aliased diagonals: close to the colour)
    for x, y in [(500, 300), (500, 500), (300, 500), (300, 300)]:
        pixel = out[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(float)
        best = np.abs(pixel - colour).max(axis=1).min()
        assert best <= 0.2 * np.abs(colour - BACKGROUND).max() + 2, (x, y, pixel)
    # the axis-aligned rectangle is not drawn: its lower corners and right/bottom edges stay background
    assert (out[550 : 600 + 3, 560 : 600 + 3] == BACKGROUND).all()
    assert (out[595:605, 250:350] == BACKGROUND).all()
    assert (out[250:350, 595:605] == BACKGROUND).all()


def test_rotated_polygon_edges_take_the_colour():
    box = (100, 100, 500, 300)
    quad = np.array([[[100, 100], [500, 100], [500, 300], [100, 300]]], np.float32)  # the box itself as a polygon
    out = annotate(canvas(), dets([box], [3], polygon=quad))
    assert is_colour(out[300, 150:450], class_colour(3)).all()
    assert is_colour(out[150:250, 500], class_colour(3)).all()


def test_empty_detections_give_an_identical_copy():
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    out = annotate(image, Detections.empty(NAMES))
    assert out is not image
    assert np.array_equal(out, image)
    out[0, 0] = (1, 2, 3) if tuple(image[0, 0]) != (1, 2, 3) else (4, 5, 6)
    assert not np.array_equal(out, image)  # a real copy, not a view


def test_strongest_box_is_drawn_on_top():
    box = [200, 300, 600, 500]
    out = annotate(canvas(), dets([box, box], [0, 1], scores=[0.9, 0.2]))
    assert is_colour(out[500, 250:550], class_colour(0)).all()  # the 0.9 box, drawn last
