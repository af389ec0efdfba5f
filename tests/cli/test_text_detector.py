"""The built-in ppocr-text model finds the lettering on the four real street-sign photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from .helpers import describe

pytestmark = pytest.mark.real

# Labelled BY EYE on the photos in assets/images/text/ (viewed whole with a 50 px grid, then each box
# drawn on a crop and checked): axis-aligned (x1, y1, x2, y2) around clearly visible sign lettering,
# in original-image pixels. Image sizes (width x height) as checked with cv2.
TEXT_PHOTOS = {
    "chinese.jpg": {
        "size": (640, 339),
        "lettering": {
            "愚园路 (large characters)": (188, 82, 462, 156),
            "Yuyuan Rd.": (230, 174, 416, 210),
        },
    },
    "french.jpg": {
        "size": (692, 1024),
        "lettering": {
            "LES ARTS DÉCORATIFS": (243, 424, 510, 474),
            "Palais du LOUVRE": (260, 326, 470, 380),
        },
    },
    "japanese.jpg": {
        "size": (555, 418),
        "lettering": {
            "ポイ捨て禁止!": (78, 62, 480, 146),
            "NO LITTER": (100, 156, 452, 228),
        },
    },
    "korean.png": {
        "size": (629, 420),
        "lettering": {
            "서울": (138, 92, 282, 170),
            "Pyeongyang": (352, 198, 530, 254),
        },
    },
}

# Criterion: some detected box has IoU > 0.1 with the hand-labelled box. IoU rather than "the
# detection covers > 30% of the label" because coverage is satisfied by one box over the whole
# image, so a detector that returns garbage-sized boxes would pass; IoU also penalises a box far
# bigger than the lettering. The threshold is low because a line detector may legitimately split a
# sign line into words or merge two lines, and hand labels are loose (a word of a three-word line
# still has IoU of about 0.2 or more).
MIN_IOU = 0.1


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_iou_helper():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


@pytest.fixture(scope="module")
def text_run(cli, asset, tmp_path_factory):
    folder = asset("images/text")
    for name, photo in TEXT_PHOTOS.items():  # the labels above are only valid at these sizes
        height, width = cv2.imread(str(folder / name)).shape[:2]
        assert (width, height) == photo["size"], name
    out = tmp_path_factory.mktemp("text") / "out"
    proc = cli("detect", folder, "--model", "ppocr-text", "--out", out, "--format", "jsonl")
    assert proc.returncode == 0, describe(proc)
    records = {}
    for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        records[Path(record["path"]).name] = record
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return records, summary


def test_the_builtin_text_detector_runs(text_run):
    _, summary = text_run
    assert summary["model"] == "ppocr-text"
    assert summary["images"] == summary["processed"] == len(TEXT_PHOTOS)


@pytest.mark.parametrize(
    ("photo", "what"),
    [(photo, what) for photo, spec in TEXT_PHOTOS.items() for what in spec["lettering"]],
)
def test_hand_labelled_lettering_is_detected(text_run, photo, what):
    records, _ = text_run
    record = records[photo]
    assert record["error"] is None, record["error"]
    assert (record["width"], record["height"]) == TEXT_PHOTOS[photo]["size"]
    label = TEXT_PHOTOS[photo]["lettering"][what]
    boxes = [d["xyxy"] for d in record["detections"]]
    best = max((iou(label, box) for box in boxes), default=0.0)
    assert best > MIN_IOU, f"{photo}: no detection overlaps {what!r} {label} (best IoU {best:.3f}; boxes {boxes})"
