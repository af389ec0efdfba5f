"""``visionpipe detect`` on a folder mixing good photos, convertible images and broken files.

Contract (cli/app.py): exit status 2 when some inputs failed, their results still written; each
failure reported on stderr with its cause; nothing else lost.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from .helpers import describe

pytestmark = pytest.mark.real

MAX_PIXELS = 1_000_000
GOOD = 3  # real COCO photos copied as they are

# bad file -> what its error (stderr line, JSONL error) must say about the cause
BAD_CAUSES = {
    "truncated.jpg": r"truncat",
    "empty.jpg": r"empty|0 bytes|zero",
    "notes.jpg": r"not (a|an) (decodable )?image|unsupported|corrupt|unrecognised|unknown format",
    "too_big.jpg": r"1200\s*x\s*1000|1\.2 ?MP|pixel|exceeds|limit",
}
# convertible images must be decoded, not rejected; derived from the first good photo
CONVERTED = ("deep16.png", "gray.jpg", "rgba.png")
# lossless conversions of the first photo: decoded back to 8-bit BGR they are the same pixels, so
# the same model must find the same boxes as on the photo itself
LOSSLESS = ("deep16.png", "rgba.png")


@pytest.fixture(scope="module")
def mixed_folder(asset, tmp_path_factory) -> tuple[Path, list[Path]]:
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:5]
    folder = tmp_path_factory.mktemp("mixed") / "inputs"
    folder.mkdir()
    good = []
    for photo in photos[:GOOD]:
        shutil.copy(photo, folder / photo.name)
        good.append(folder / photo.name)

    data = photos[3].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("Shopping list: milk, eggs.\nThis is not a picture.\n", encoding="utf-8")

    base = cv2.imread(str(good[0]), cv2.IMREAD_COLOR)
    assert base is not None and base.dtype == np.uint8
    assert cv2.imwrite(str(folder / "deep16.png"), base.astype(np.uint16) * 257)  # 0..255 -> 0..65535
    assert cv2.imwrite(str(folder / "gray.jpg"), cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(base, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 180  # a real (non-opaque) alpha plane
    assert cv2.imwrite(str(folder / "rgba.png"), rgba)
    assert cv2.imwrite(str(folder / "too_big.jpg"), cv2.resize(cv2.imread(str(photos[4])), (1200, 1000)))

    # the files really are what their names say
    assert cv2.imread(str(folder / "deep16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(folder / "gray.jpg"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(str(folder / "rgba.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4
    assert 1200 * 1000 > MAX_PIXELS >= max(cv2.imread(str(p)).size // 3 for p in good)
    return folder, good


@pytest.fixture(scope="module")
def mixed_run(cli, yolox_spec, mixed_folder, tmp_path_factory):
    folder, _ = mixed_folder
    out = tmp_path_factory.mktemp("mixed_out") / "out"
    proc = cli(
        "detect", folder, "--model", yolox_spec, "--max-pixels", MAX_PIXELS,
        "--format", "jsonl", "--format", "coco-results", "--format", "csv", "--out", out,
    )  # fmt: skip
    return proc, out


@pytest.fixture(scope="module")
def records(mixed_run) -> dict[str, dict]:
    proc, out = mixed_run
    path = out / "detections.jsonl"
    assert path.is_file(), describe(proc)
    found: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        name = Path(record["path"]).name
        assert name not in found, f"{name} has two records"
        found[name] = record
    return found


def good_names(mixed_folder) -> list[str]:
    return [p.name for p in mixed_folder[1]] + list(CONVERTED)


def test_exit_status_is_2_when_some_inputs_fail(mixed_run):
    proc, _ = mixed_run
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr


def test_stderr_names_each_bad_file_with_its_cause(mixed_run):
    proc, _ = mixed_run
    lines = proc.stderr.splitlines()
    for name, cause in BAD_CAUSES.items():
        mentioning = [line for line in lines if name in line]
        assert mentioning, f"stderr does not mention {name}\n{describe(proc)}"
        assert any(re.search(cause, line, re.IGNORECASE) for line in mentioning), (
            f"stderr mentions {name} without its cause /{cause}/: {mentioning}"
        )


def test_stderr_reports_no_failure_for_good_or_convertible_files(mixed_run, mixed_folder):
    proc, _ = mixed_run
    for name in good_names(mixed_folder):
        assert not [line for line in proc.stderr.splitlines() if name in line], f"{name} reported on stderr"


def test_jsonl_has_one_record_per_input_and_nothing_else(records, mixed_folder):
    folder, _ = mixed_folder
    assert set(records) == {p.name for p in folder.iterdir()}


def test_good_and_convertible_images_have_results_without_error(records, mixed_folder):
    folder, _ = mixed_folder
    for name in good_names(mixed_folder):
        record = records[name]
        assert record["error"] is None, f"{name}: {record['error']}"
        height, width = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED).shape[:2]
        assert (record["width"], record["height"]) == (width, height), name
    for name in [p.name for p in mixed_folder[1]]:
        assert records[name]["detections"], f"no detection at all on the COCO photo {name}"


def test_lossless_conversions_give_the_photos_detections(records, mixed_folder):
    """16-bit (x257) and RGBA copies of a photo decode to the photo's own pixels, so the same
    boxes, classes and scores must come out."""
    photo = records[mixed_folder[1][0].name]["detections"]
    assert photo
    for name in LOSSLESS:
        converted = records[name]["detections"]
        assert len(converted) == len(photo), f"{name}: {len(converted)} boxes, the photo {len(photo)}"
        for a, b in zip(
            sorted(photo, key=lambda d: -d["confidence"]), sorted(converted, key=lambda d: -d["confidence"])
        ):
            assert a["class_id"] == b["class_id"], name
            assert b["confidence"] == pytest.approx(a["confidence"], abs=1e-4), name
            assert b["xyxy"] == pytest.approx(a["xyxy"], abs=1e-2), name


def test_bad_files_have_an_error_record_and_no_detections(records):
    for name, cause in BAD_CAUSES.items():
        record = records[name]
        assert record["error"], f"{name} has no error in detections.jsonl"
        assert re.search(cause, record["error"], re.IGNORECASE), f"{name}: {record['error']}"
        assert record["detections"] == []


def test_summary_counts_match(mixed_run, records, mixed_folder):
    _, out = mixed_run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    total = len(list(mixed_folder[0].iterdir()))
    assert summary["images"] == total == GOOD + len(CONVERTED) + len(BAD_CAUSES)
    assert summary["processed"] == GOOD + len(CONVERTED)
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == sorted(BAD_CAUSES)
    assert all(f["error"] for f in summary["failed"])
    assert summary["detections"] == sum(len(r["detections"]) for r in records.values())


def test_other_formats_keep_the_good_results_and_the_failures(mixed_run, records):
    _, out = mixed_run
    boxes = sum(len(r["detections"]) for r in records.values())
    assert len(json.loads((out / "detections.json").read_text(encoding="utf-8"))) == boxes
    with open(out / "detections.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for r in rows if not r["error"]) == boxes
    assert sorted(Path(r["path"]).name for r in rows if r["error"]) == sorted(BAD_CAUSES)
