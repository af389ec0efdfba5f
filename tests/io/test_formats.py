"""Output formats: what each writer is given comes back from its file; files appear atomically."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from visionpipe.data import COCO80_NAMES
from visionpipe.detections import Detections
from visionpipe.errors import ImageDecodeError
from visionpipe.io.formats import (
    CocoWriter,
    CsvWriter,
    JsonlWriter,
    YoloWriter,
    atomic_open,
    atomic_write_bytes,
    category_ids_for,
    read_csv,
    read_jsonl,
    read_yolo,
)
from visionpipe.pipeline import Result

NAMES = ("cat", "dog", "bird")


def dets(boxes, scores, classes, names=NAMES, **data) -> Detections:
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=np.array(scores, np.float32),
        class_id=np.array(classes, np.int64),
        class_names=names,
        data=data,
    )


def ok(index, source, size, detections) -> Result:
    return Result(index=index, image_id=Path(source).name, source=source, image_size=size, detections=detections)


def failed(index, source, error) -> Result:
    return Result(index=index, image_id=Path(source).name, source=source, error=error)


@pytest.fixture
def results():
    """Two images with boxes, one with none, two failures (one whose error has no message)."""
    return [
        ok(
            0,
            "/data/a.jpg",
            (480, 640),
            dets([[10.25, 20.5, 110.75, 220.125], [0, 0, 640, 480]], [0.91234567, 0.3], [2, 0]),
        ),
        failed(1, "/data/missing.jpg", ImageDecodeError("/data/missing.jpg", "file not found")),
        ok(2, "/data/sub/b, with comma.png", (100, 200), dets([[5.5, 6.5, 50.0, 60.0]], [0.5], [1])),
        ok(3, "/data/empty.jpg", (300, 300), dets([], [], [])),
        failed(4, "/data/weird.jpg", RuntimeError()),
    ]


def assert_same_boxes(got: Detections, want: Detections, box_tol: float, score_tol: float) -> None:
    assert len(got) == len(want)
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=box_tol, rtol=0)
    np.testing.assert_allclose(got.confidence, want.confidence, atol=score_tol, rtol=0)
    assert got.class_id.tolist() == want.class_id.tolist()


# -- JSONL --------------------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path, results):
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        for r in results:
            writer.write(r)
    back = read_jsonl(path, NAMES)
    assert set(back) == {r.source for r in results}
    for r in results:
        if r.error is None:
            assert isinstance(back[r.source], Detections)
            assert_same_boxes(back[r.source], r.detections, 0.0005 + 1e-4, 0.000005 + 1e-7)
            assert back[r.source].class_names == NAMES
        else:
            assert isinstance(back[r.source], str)
    assert "file not found" in back["/data/missing.jpg"] and "/data/missing.jpg" in back["/data/missing.jpg"]
    assert back["/data/weird.jpg"]  # an error without a message is still recorded as a failure
    assert len(back["/data/empty.jpg"]) == 0


def test_jsonl_records_sizes_names_errors_and_one_line_per_input(tmp_path, results):
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        for r in results:
            writer.write(r)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(results)
    records = [json.loads(line) for line in lines]
    assert [rec["path"] for rec in records] == [r.source for r in results]
    assert (records[0]["width"], records[0]["height"]) == (640, 480)
    assert [d["class_name"] for d in records[0]["detections"]] == ["bird", "cat"]
    assert records[0]["detections"][0]["xyxy"] == [10.25, 20.5, 110.75, 220.125]
    assert records[0]["error"] is None
    assert records[1]["detections"] == [] and "file not found" in records[1]["error"]
    assert records[1]["width"] is None


def test_jsonl_writes_polygons(tmp_path):
    polygon = np.array([[[10, 10], [50, 12.345], [48, 40], [8, 38]]], np.float32)
    r = ok(0, "t.jpg", (64, 64), dets([[8, 10, 50, 40]], [0.8], [0], names=("text",), polygon=polygon))
    path = tmp_path / "p.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(r)
    item = json.loads(path.read_text())["detections"][0]
    np.testing.assert_allclose(item["polygon"], polygon[0], atol=0.005 + 1e-6)
    assert len(item["polygon"]) == 4


# -- CSV ----------------------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path, results):
    path = tmp_path / "out.csv"
    with CsvWriter(path) as writer:
        for r in results:
            writer.write(r)
    back = read_csv(path, NAMES)
    # every input comes back, the one without boxes as empty Detections
    assert set(back) == {r.source for r in results}
    assert isinstance(back["/data/empty.jpg"], Detections) and len(back["/data/empty.jpg"]) == 0
    for r in results:
        if r.error is None and len(r.detections):
            assert_same_boxes(back[r.source], r.detections, 0.0005 + 1e-4, 0.000005 + 1e-7)
    assert "file not found" in back["/data/missing.jpg"]
    assert isinstance(back["/data/weird.jpg"], str) and back["/data/weird.jpg"]


def test_csv_rows_and_columns(tmp_path, results):
    path = tmp_path / "out.csv"
    with CsvWriter(path) as writer:
        for r in results:
            writer.write(r)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # 2 boxes + 1 failure + 1 box + 1 row for the image without boxes + 1 failure
    assert len(rows) == 6
    assert [row["path"] for row in rows] == [
        "/data/a.jpg",
        "/data/a.jpg",
        "/data/missing.jpg",
        "/data/sub/b, with comma.png",
        "/data/empty.jpg",
        "/data/weird.jpg",
    ]
    empty = rows[4]
    assert empty["x1"] == empty["confidence"] == empty["class_id"] == empty["error"] == ""
    assert rows[0]["class_name"] == "bird" and rows[0]["class_id"] == "2" and rows[0]["error"] == ""
    assert rows[0]["image_id"] == "a.jpg"
    assert rows[2]["x1"] == "" and "file not found" in rows[2]["error"]


def test_csv_with_no_results_has_only_a_header(tmp_path):
    path = tmp_path / "none.csv"
    with CsvWriter(path):
        pass
    assert read_csv(path) == {}
    assert path.read_text(encoding="utf-8").strip().split(",")[0] == "image_id"


# -- YOLO ---------------------------------------------------------------------------------------------


def test_yolo_round_trip(tmp_path, results):
    folder = tmp_path / "labels"
    writer = YoloWriter(tmp_path, NAMES, save_conf=True)
    with writer:
        for r in results:
            writer.write(r)
    a = read_yolo(folder / "a.txt", width=640, height=480, class_names=NAMES)
    # normalised to 6 decimals: at most 0.5e-6 * 640 px per coordinate value (two values per corner)
    assert_same_boxes(a, results[0].detections, 2 * 0.5e-6 * 640 + 1e-4, 0.000005 + 1e-7)
    b = read_yolo(folder / "b, with comma.txt", width=200, height=100, class_names=NAMES)
    assert_same_boxes(b, results[2].detections, 2 * 0.5e-6 * 200 + 1e-4, 0.000005 + 1e-7)
    assert not (folder / "missing.txt").exists() and not (folder / "weird.txt").exists()
    if (folder / "empty.txt").exists():
        assert len(read_yolo(folder / "empty.txt", width=300, height=300)) == 0


@pytest.mark.parametrize("save_conf", [False, True])
def test_yolo_lines_are_normalised_class_cx_cy_w_h_and_conf_only_when_asked(tmp_path, save_conf):
    folder = tmp_path / "labels"
    with YoloWriter(tmp_path, NAMES, save_conf=save_conf) as writer:
        writer.write(ok(0, "img.jpg", (200, 400), dets([[100, 50, 300, 150]], [0.75], [1])))
    values = [float(v) for v in (folder / "img.txt").read_text().split()]
    # centre (200, 100) of a 400x200 image = (0.5, 0.5); size 200x100 = (0.5, 0.5)
    assert values == ([1, 0.5, 0.5, 0.5, 0.5, 0.75] if save_conf else [1, 0.5, 0.5, 0.5, 0.5])


# -- COCO ---------------------------------------------------------------------------------------------


def coco_records(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.real
def test_coco_writer_uses_official_ids_for_the_80_coco_classes(tmp_path, asset):
    table = json.loads(asset("coco/yolo80_to_coco91.json").read_text())
    official = [int(table[str(i)]) for i in range(80)]
    assert category_ids_for(COCO80_NAMES) == official
    classes = [0, 11, 12, 24, 79, 39]
    boxes = [[i * 10, i * 5, i * 10 + 30, i * 5 + 40] for i in range(len(classes))]
    r = ok(7, "/x/pic.jpg", (480, 640), dets(boxes, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], classes, names=COCO80_NAMES))
    path = tmp_path / "coco.json"
    with CocoWriter(path, COCO80_NAMES) as writer:
        writer.write(r)
    records = coco_records(path)
    assert [rec["category_id"] for rec in records] == [official[c] for c in classes]
    assert all(rec["image_id"] == 8 for rec in records)  # no annotations: the input's position, from 1


def test_coco_writer_bbox_is_xywh(tmp_path):
    r = ok(3, "p.jpg", (100, 100), dets([[10.5, 20.25, 40.5, 80.75]], [0.123456], [2]))
    path = tmp_path / "c.json"
    with CocoWriter(path, NAMES) as writer:
        writer.write(r)
    (record,) = coco_records(path)
    assert record["bbox"] == [10.5, 20.25, 30.0, 60.5]
    assert record["score"] == pytest.approx(0.12346, abs=1e-6)
    assert record["category_id"] == 3  # neither annotations nor COCO names: index + 1
    assert record["image_id"] == 4  # the 4th input of the run


def test_category_ids_otherwise_index_plus_one():
    assert category_ids_for(["x", "y", "z", "w"]) == [1, 2, 3, 4]
    # the COCO names in another order are not the COCO classes
    assert category_ids_for(list(reversed(COCO80_NAMES)))[:3] == [1, 2, 3]


def test_coco_writer_with_annotations_maps_by_name_and_file_name(tmp_path):
    annotations = {
        "images": [
            {"id": 501, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 777, "file_name": "train/b.png", "width": 200, "height": 100},
        ],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],  # no "bird"
        "annotations": [],
    }
    assert category_ids_for(NAMES, annotations)[:2] == [17, 18]
    images = [
        ok(
            0,
            "/somewhere/a.jpg",
            (480, 640),
            dets([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], [0.9, 0.8, 0.7], [0, 1, 2]),
        ),
        ok(1, "/elsewhere/b.png", (100, 200), dets([[0, 0, 10, 10]], [0.6], [1])),
        ok(2, "/elsewhere/not_annotated.jpg", (100, 200), dets([[0, 0, 10, 10]], [0.6], [0])),
        failed(3, "/somewhere/a2.jpg", ImageDecodeError("/somewhere/a2.jpg", "empty file")),
    ]
    path = tmp_path / "coco.json"
    with CocoWriter(path, NAMES, annotations) as writer:
        for r in images:
            writer.write(r)
    records = coco_records(path)
    got = sorted((rec["image_id"], rec["category_id"], tuple(rec["bbox"])) for rec in records)
    assert got == [(501, 17, (1, 2, 2, 2)), (501, 18, (5, 6, 2, 2)), (777, 18, (0, 0, 10, 10))]


def test_annotations_sharing_no_class_name_are_an_error():
    with pytest.raises(ValueError):
        category_ids_for(NAMES, {"images": [], "categories": [{"id": 1, "name": "person"}]})


# -- atomicity ----------------------------------------------------------------------------------------


def folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("writer_class", [JsonlWriter, CsvWriter])
def test_final_file_appears_only_on_close(tmp_path, results, writer_class):
    path = tmp_path / "out" / "results.data"
    writer = writer_class(path)
    writer.write(results[0])
    writer.write(results[1])
    assert not path.exists()
    writer.close()
    assert path.is_file()
    assert folder_listing(path.parent) == ["results.data"]  # no temp file left


@pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("writer_class", [JsonlWriter, CsvWriter])
def test_exception_inside_with_leaves_no_file(tmp_path, results, writer_class, exception):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "unrelated.txt").write_text("keep me")
    path = folder / "results.data"
    with pytest.raises(type(exception)), writer_class(path) as writer:
        writer.write(results[0])
        assert not path.exists()
        raise exception
    assert not path.exists()
    assert folder_listing(folder) == ["unrelated.txt"]


@pytest.mark.parametrize("writer_class", [JsonlWriter, CsvWriter])
def test_failed_run_keeps_the_previous_file(tmp_path, results, writer_class):
    path = tmp_path / "results.data"
    path.write_text("previous run\n")
    with pytest.raises(RuntimeError), writer_class(path) as writer:
        writer.write(results[0])
        raise RuntimeError("interrupted")
    assert path.read_text() == "previous run\n"
    assert folder_listing(tmp_path) == ["results.data"]


def test_coco_writer_exception_leaves_no_file(tmp_path, results):
    path = tmp_path / "coco.json"
    with pytest.raises(RuntimeError), CocoWriter(path, NAMES) as writer:
        writer.write(results[0])
        raise RuntimeError("boom")
    assert folder_listing(tmp_path) == []


def test_atomic_open_keeps_existing_file_when_block_raises(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("old content")
    with pytest.raises(ValueError), atomic_open(path) as handle:
        handle.write("new, half-written")
        raise ValueError("stop")
    assert path.read_text() == "old content"
    assert folder_listing(tmp_path) == ["data.json"]


def test_atomic_open_replaces_on_success_and_creates_parents(tmp_path):
    path = tmp_path / "new" / "dir" / "data.txt"
    with atomic_open(path) as handle:
        handle.write("first")
        assert not path.exists()
    assert path.read_text() == "first"
    with atomic_open(path) as handle:
        handle.write("second")
        assert path.read_text() == "first"
    assert path.read_text() == "second"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert folder_listing(path.parent) == ["data.txt"]


@pytest.mark.parametrize("kind", ["atomic_open", "jsonl", "csv", "coco", "yolo"])
def test_published_files_get_ordinary_permissions(tmp_path, results, kind):
    """An output file written atomically should be as readable as one written with open(): the
    temporary file's private 0600 mode must not leak into the published file."""
    old_umask = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        if kind == "atomic_open":
            path = tmp_path / "a.json"
            with atomic_open(path) as handle:
                handle.write("x")
        elif kind == "coco":
            path = tmp_path / "c.json"
            with CocoWriter(path, NAMES) as writer:
                writer.write(results[0])
        elif kind == "yolo":
            with YoloWriter(tmp_path, NAMES) as writer:
                writer.write(results[0])
            path = tmp_path / "labels" / "a.txt"
        else:
            path = tmp_path / f"out.{kind}"
            with (JsonlWriter if kind == "jsonl" else CsvWriter)(path) as writer:
                writer.write(results[0])
    finally:
        os.umask(old_umask)
    assert oct(plain.stat().st_mode & 0o777) == oct(0o644)  # what open() gives under umask 022
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_read_jsonl_takes_the_older_box_and_score_keys(tmp_path):
    """Files written before the one vocabulary (box/score/track_id) still read back."""
    path = tmp_path / "old.jsonl"
    old = {"id": "a.jpg", "path": "a.jpg", "width": 10, "height": 10, "error": None,
           "detections": [{"box": [1, 2, 3, 4], "score": 0.5, "class_id": 1, "class_name": "dog", "track_id": 3}]}  # fmt: skip
    path.write_text(json.dumps(old) + "\n", encoding="utf-8")
    dets = read_jsonl(path, NAMES)["a.jpg"]
    assert dets.xyxy.tolist() == [[1, 2, 3, 4]] and dets.confidence.tolist() == [0.5] and dets.names == ["dog"]
