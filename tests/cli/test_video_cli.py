"""``visionpipe video`` end to end on the real clip: summary, JSONL log, annotated MP4, tracking
and line counting, a bad source, and the help text.

Clip: video/one-by-one-person-detection.mp4 (MANIFEST: 1394 frames, 10 fps, 768x432).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from .helpers import describe

pytestmark = pytest.mark.real

CLIP = "video/one-by-one-person-detection.mp4"
CLIP_FRAMES = 1394
STRIDE = 5
PROCESSED = 279  # ceil(1394 / 5): frames 0, 5, ..., 1390
LINE = "0,216,768,216"  # across the whole width, halfway down the 432-pixel-high frame


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def summary_of(proc) -> dict:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - reported as a failure
        pytest.fail(f"stdout is not a JSON summary ({exc})\n{describe(proc)}")


@pytest.fixture(scope="module")
def strided(cli, asset, yolox_spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_cli")
    out, jsonl = folder / "a.mp4", folder / "f.jsonl"
    proc = cli("video", asset(CLIP), "-m", yolox_spec, "--out", out, "--jsonl", jsonl, "--stride", STRIDE)
    return SimpleNamespace(proc=proc, out=out, jsonl=jsonl)


ZONE = "40,250,300,250,300,420,40,420"  # the lower-left part of the room


@pytest.fixture(scope="module")
def tracked(cli, asset, yolox_spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_track")
    jsonl, out = folder / "t.jsonl", folder / "t.mp4"
    proc = cli(
        "video", asset(CLIP), "-m", yolox_spec, "--jsonl", jsonl, "--out", out, "--stride", STRIDE,
        "--track", "--line", LINE, "--zone", ZONE,
    )  # fmt: skip
    return SimpleNamespace(proc=proc, jsonl=jsonl, out=out)


# --- --stride 5 with --out and --jsonl -----------------------------------------------------------
def test_stride_run_exits_0_with_a_json_summary(strided):
    proc = strided.proc
    assert proc.returncode == 0, describe(proc)
    summary = summary_of(proc)
    assert summary["captured"] == CLIP_FRAMES
    assert summary["processed"] == PROCESSED
    assert summary["dropped"] == {"stride": CLIP_FRAMES - PROCESSED, "rate": 0, "buffer": 0, "stopped": 0}
    assert summary["dropped"]["stride"] == 1115
    assert summary["dropped_total"] == 1115
    assert summary["errors"] == 0
    assert summary["source_state"] == "ended"
    assert summary["latency_p50"] is not None and summary["latency_p50"] >= 0
    assert "line" not in summary


def test_stride_run_logs_one_json_line_per_processed_frame(strided):
    assert strided.proc.returncode == 0, describe(strided.proc)
    records = read_jsonl(strided.jsonl)
    assert len(records) == PROCESSED
    assert [r["frame"] for r in records] == list(range(0, CLIP_FRAMES, STRIDE))
    assert [r["frame"] for r in records][-1] == 1390
    assert all(r["error"] is None for r in records)
    assert [r["timestamp"] for r in records][:3] == pytest.approx([0.0, 0.5, 1.0], abs=1e-3)  # 10 fps
    boxes = [d for r in records for d in r["detections"]]
    assert any(d["class_name"] == "person" for d in boxes)
    for d in boxes:
        x1, y1, x2, y2 = d["xyxy"]
        assert 0 <= x1 <= x2 <= 768 and 0 <= y1 <= y2 <= 432
        assert "tracker_id" not in d  # no --track


def test_stride_run_writes_an_mp4_with_one_frame_per_processed_frame(strided):
    assert strided.proc.returncode == 0, describe(strided.proc)
    capture = cv2.VideoCapture(str(strided.out))
    assert capture.isOpened(), f"OpenCV cannot open {strided.out}"
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == PROCESSED
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (768, 432)
    read = 0
    while capture.read()[0]:
        read += 1
    capture.release()
    assert read == PROCESSED


# --- --track --line ------------------------------------------------------------------------------
def test_track_and_line_give_track_ids_and_a_line_count(tracked):
    proc = tracked.proc
    assert proc.returncode == 0, describe(proc)
    summary = summary_of(proc)
    assert summary["processed"] == PROCESSED and summary["errors"] == 0
    assert set(summary["line"]) == {"in", "out"}
    assert all(isinstance(v, int) and v >= 0 for v in summary["line"].values())

    records = read_jsonl(tracked.jsonl)
    assert [r["frame"] for r in records] == list(range(0, CLIP_FRAMES, STRIDE))
    assert all(r["error"] is None for r in records)
    dets = [d for r in records for d in r["detections"]]
    assert dets, "the tracker returned no tracked detection on the whole clip"
    assert all(isinstance(d.get("tracker_id"), int) and d["tracker_id"] >= 1 for d in dets)
    # a track id lives across frames: people are followed, not re-numbered on every frame
    ids = [d["tracker_id"] for d in dets]
    assert len(set(ids)) < len(ids)

    # the per-frame crossings add up to the summary, and name tracks present on that frame
    crossed_in = crossed_out = 0
    for record in records:
        assert isinstance(record["crossed_in"], list) and isinstance(record["crossed_out"], list)
        present = {d["tracker_id"] for d in record["detections"]}
        assert set(record["crossed_in"]) | set(record["crossed_out"]) <= present
        crossed_in += len(record["crossed_in"])
        crossed_out += len(record["crossed_out"])
    assert (crossed_in, crossed_out) == (summary["line"]["in"], summary["line"]["out"])
    assert crossed_in + crossed_out > 0  # people walk through the room, across the middle line


def last_frame(path):
    capture = cv2.VideoCapture(str(path))
    frame = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frame = image
    capture.release()
    assert frame is not None, f"no frame decoded from {path}"
    return frame


def test_annotated_mp4_shows_the_line_and_its_counts(tracked, asset):
    """Acceptance: on a decoded frame of the annotated MP4, the counting line is drawn across the
    frame and the text on it (read back by an OCR model, RapidOCR) gives the run's in/out totals."""
    from rapidocr import RapidOCR

    assert tracked.proc.returncode == 0, describe(tracked.proc)
    summary = summary_of(tracked.proc)
    frame = last_frame(tracked.out)
    assert frame.shape == (432, 768, 3)

    # the line: magenta along y = 216 (x1,y1,x2,y2 = 0,216,768,216), where the original frame is not
    capture = cv2.VideoCapture(str(asset(CLIP)))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 1390)
    ok, original = capture.read()
    capture.release()
    assert ok

    def magenta(row):
        return (np.abs(row.astype(int) - np.array([255, 0, 255])).max(axis=-1) < 70).mean()

    assert magenta(frame[216, :]) > 0.6, "the counting line is not drawn"
    assert magenta(original[216, :]) < 0.05

    texts = " ".join(RapidOCR()(frame).txts or ())
    line = summary["line"]
    assert f"in {line['in']}" in texts and f"out {line['out']}" in texts, (texts, line)
    assert line["in"] + line["out"] > 0
    # the zone: its label, and its cyan outline along the right edge (x = 300, y 270..410)
    zones = summary["zones"]
    assert len(zones) == 1 and zones[0]["max_count"] >= zones[0]["count"] >= 0
    assert "zone" in texts, texts  # (OCR reads the slashed zero of OpenCV's font unreliably)
    cyan = (np.abs(frame[270:410, 300].astype(int) - np.array([255, 255, 0])).max(axis=-1) < 70).mean()
    assert cyan > 0.8, "the zone is not drawn"


def test_jsonl_counts_add_up_with_zone_counts(tracked):
    records = read_jsonl(tracked.jsonl)
    counts = [r["zone_counts"] for r in records]
    assert all(len(c) == 1 and c[0] >= 0 for c in counts)
    assert max(c[0] for c in counts) == summary_of(tracked.proc)["zones"][0]["max_count"]


# --- errors and help -----------------------------------------------------------------------------
def test_a_missing_source_exits_1_with_a_one_line_error(cli, yolox_spec, tmp_path):
    missing = tmp_path / "no-such-clip.mp4"
    proc = cli("video", missing, "-m", yolox_spec)
    assert proc.returncode == 1, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    assert "no-such-clip.mp4" in lines[0] and "not found" in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip() == ""  # no summary for a run that never started


def test_video_help_shows_an_example(cli):
    proc = cli("video", "--help")
    assert proc.returncode == 0, describe(proc)
    text = " ".join(proc.stdout.split())  # Rich wraps the help; compare with whitespace collapsed
    assert "Example" in text
    assert "visionpipe video clip.mp4" in text
    for option in ("--stride", "--policy", "--realtime", "--track", "--line", "--jsonl", "--out"):
        assert option in text
