"""Dataset outputs read back by independent readers: the YOLO rules of Ultralytics' loader
(tests/io/yolo_rules.py) and supervision's YOLO reader, pycocotools and supervision for the COCO
dataset, xml.etree and supervision for Pascal VOC, and Label Studio's documented task format."""

from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from visionpipe.detections import Detections
from visionpipe.errors import ImageDecodeError
from visionpipe.io.dataset_formats import OutputFormat, open_writers
from visionpipe.results import Result

from .yolo_rules import RejectedLabel, check_data_yaml, check_label_file

NAMES = ("cat", "dog", "bird")


def dets(boxes, scores, classes) -> Detections:
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=np.array(scores, np.float32),
        class_id=np.array(classes, np.int64),
        class_names=NAMES,
    )


@pytest.fixture
def run(tmp_path):
    """Four real image files (so readers that open images can), one failing input, and the
    Results a pipeline would have given for them."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    specs = [
        ("a.jpg", (480, 640), dets([[10.25, 20.5, 110.75, 220.125], [0, 0, 640, 480]], [0.9, 0.3], [2, 0])),
        ("sub/b.png", (100, 200), dets([[5.5, 6.5, 50.0, 60.0]], [0.5], [1])),
        ("empty.jpg", (300, 300), dets([], [], [])),
        ("c.jpg", (64, 96), dets([[0.4, 0.4, 95.6, 63.6], [30, 10, 31, 11]], [0.8, 0.7], [1, 1])),
    ]
    results = []
    for index, (name, (h, w), found) in enumerate(specs):
        path = images / name
        assert cv2.imwrite(str(path), np.full((h, w, 3), 100, np.uint8))
        results.append(Result(index=index, image_id=path.name, source=str(path), image_size=(h, w), detections=found))
    missing = images / "missing.jpg"
    results.insert(
        2, Result(index=4, image_id="missing.jpg", source=str(missing), error=ImageDecodeError(str(missing), "gone"))
    )
    return images, results


def write(out: Path, results, formats, **options) -> None:
    writers = open_writers(formats, out, NAMES, **options)
    for writer in writers:
        with writer:
            for r in results:
                writer.write(r)


def good(results):
    return [r for r in results if r.error is None]


# -- YOLO ---------------------------------------------------------------------------------------------


def test_yolo_default_is_the_five_column_training_format_with_data_yaml(tmp_path, run):
    _, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.YOLO])
    names = check_data_yaml(out / "data.yaml")
    assert names == dict(enumerate(NAMES))
    assert (out / "classes.txt").read_text(encoding="utf-8").splitlines() == list(NAMES)
    for r in good(results):
        rows = check_label_file(out / "labels" / f"{Path(r.source).stem}.txt", len(names))
        h, w = r.image_size
        assert len(rows) == len(r.detections)
        if len(rows):  # back to pixels by hand: cx, cy, w, h normalised by the image size
            cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
            back = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
            np.testing.assert_allclose(back, r.detections.xyxy, atol=1e-3 * max(w, h))
            assert rows[:, 0].astype(int).tolist() == r.detections.class_id.tolist()
    assert not (out / "labels" / "missing.txt").exists()


def test_save_conf_labels_are_rejected_by_the_training_rules_as_ultralytics_does(tmp_path, run):
    _, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.YOLO], save_conf=True)
    with pytest.raises(RejectedLabel, match="5 columns"):
        check_label_file(out / "labels" / "a.txt", 3)
    scores = [float(line.split()[5]) for line in (out / "labels" / "a.txt").read_text().splitlines()]
    assert scores == pytest.approx([0.9, 0.3], abs=1e-5)


def test_supervision_reads_the_yolo_dataset(tmp_path, run):
    images, results = run
    out = tmp_path / "out"
    write(out, [r for r in results if "sub" not in r.source], [OutputFormat.YOLO])
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(images), annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
    )  # fmt: skip
    assert dataset.classes == list(NAMES)
    by_name = {Path(path).name: annotation for path, _, annotation in dataset}
    for r in good(results):
        if "sub" in r.source:
            continue
        got = by_name[Path(r.source).name]
        np.testing.assert_allclose(got.xyxy, r.detections.xyxy, atol=0.01)
        assert got.class_id.tolist() == r.detections.class_id.tolist()


# -- COCO dataset -------------------------------------------------------------------------------------


def test_coco_dataset_loads_in_pycocotools_and_the_run_results_score_perfectly_against_it(tmp_path, run):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.COCO, OutputFormat.COCO_RESULTS])
    dataset = json.loads((out / "coco.json").read_text(encoding="utf-8"))
    # every image that was read, with or without detections; the failed one is absent
    assert sorted(img["file_name"] for img in dataset["images"]) == ["a.jpg", "c.jpg", "empty.jpg", "sub/b.png"]
    sizes = {img["file_name"]: (img["height"], img["width"]) for img in dataset["images"]}
    assert sizes["sub/b.png"] == (100, 200) and sizes["empty.jpg"] == (300, 300)
    assert [c["name"] for c in dataset["categories"]] == list(NAMES)
    assert len(dataset["annotations"]) == 5 and all("score" in a for a in dataset["annotations"])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "coco.json"))
        assert len(gt.getImgIds()) == 4 and len(gt.getAnnIds()) == 5
        # the results list of the same run refers to the same image ids: it loads against the
        # dataset, and scoring the boxes against themselves gives AP 1 (a wrong id would not)
        dt = gt.loadRes(str(out / "detections.json"))
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)


def test_supervision_loads_the_coco_dataset(tmp_path, run):
    images, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.COCO])
    root = json.loads((out / "coco.json").read_text())["info"]["images_root"]
    assert Path(root) == images.resolve()
    dataset = sv.DetectionDataset.from_coco(images_directory_path=root, annotations_path=str(out / "coco.json"))
    assert dataset.classes == list(NAMES)
    by_name = {Path(path).name: annotation for path, _, annotation in dataset}
    assert len(by_name) == 4
    for r in good(results):
        got = by_name[Path(r.source).name]
        order = np.lexsort(got.xyxy.T[::-1])
        want = r.detections[np.lexsort(r.detections.xyxy.T[::-1])]
        np.testing.assert_allclose(got.xyxy[order], want.xyxy, atol=2e-3)
        assert got.class_id[order].tolist() == want.class_id.tolist()


def test_coco_dataset_with_annotations_takes_their_ids_and_file_names(tmp_path, run):
    _, results = run
    annotations = {
        "images": [{"id": 501, "file_name": "val/a.jpg", "width": 640, "height": 480}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}, {"id": 19, "name": "bird"}],
    }
    out = tmp_path / "out"
    write(out, results, [OutputFormat.COCO], annotations=annotations)
    dataset = json.loads((out / "coco.json").read_text())
    ids = {img["file_name"]: img["id"] for img in dataset["images"]}
    assert ids["val/a.jpg"] == 501
    assert sorted(v for k, v in ids.items() if k != "val/a.jpg") == [502, 503, 504]  # after the file's ids
    assert {a["category_id"] for a in dataset["annotations"]} == {17, 18, 19}


# -- Pascal VOC ---------------------------------------------------------------------------------------


def test_voc_files_parse_with_xml_etree_by_the_devkit_conventions(tmp_path, run):
    _, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.VOC])
    for r in good(results):
        root = ET.parse(out / "voc" / f"{Path(r.source).stem}.xml").getroot()
        assert root.tag == "annotation" and root.findtext("filename") == Path(r.source).name
        h, w = r.image_size
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (w, h)
        objects = root.findall("object")
        assert [o.findtext("name") for o in objects] == r.detections.names
        for obj, box in zip(objects, r.detections.xyxy.tolist()):
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            # 1-based inclusive pixel indices: xmin - 1 and xmax are the 0-based box edges
            assert 1 <= xmin <= xmax <= w and 1 <= ymin <= ymax <= h
            assert abs((xmin - 1) - box[0]) <= 0.5 + 1e-6 and abs(ymin - 1 - box[1]) <= 0.5 + 1e-6
            assert abs(xmax - box[2]) <= 0.5 + 1e-6 or xmax == xmin  # a box narrower than a pixel
            assert obj.findtext("difficult") == "0"
    assert not (out / "voc" / "missing.xml").exists()


def test_supervision_reads_the_voc_files(tmp_path, run):
    images, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.VOC])
    dataset = sv.DetectionDataset.from_pascal_voc(str(images), str(out / "voc"))
    by_name = {Path(path).name: annotation for path, _, annotation in dataset}
    for r in good(results):
        if "sub" in r.source:  # supervision reads one folder, not sub-folders
            continue
        got = by_name[Path(r.source).name]
        names = [dataset.classes[c] for c in got.class_id]
        assert names == r.detections.names
        wide = (r.detections.xyxy[:, 2] - r.detections.xyxy[:, 0]) >= 1
        np.testing.assert_allclose(got.xyxy[wide], r.detections.xyxy[wide], atol=0.5 + 1e-6)


# -- Label Studio -------------------------------------------------------------------------------------


def test_label_studio_tasks_follow_the_import_format(tmp_path, run):
    """Label Studio's documented pre-annotation format (tasks with ``data`` and ``predictions``,
    rectanglelabels with x, y, width, height in percent of the original size), read back here."""
    _, results = run
    out = tmp_path / "out"
    write(out, results, [OutputFormat.LABEL_STUDIO], model_name="yolox")
    tasks = json.loads((out / "label_studio.json").read_text(encoding="utf-8"))
    assert isinstance(tasks, list) and len(tasks) == 4  # one task per image read, none for the failure
    for task, r in zip(tasks, good(results)):
        assert task["data"]["image"] == r.source
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "yolox"
        regions = prediction["result"]
        assert len(regions) == len(r.detections)
        assert len({reg["id"] for reg in regions}) == len(regions)
        h, w = r.image_size
        for reg, box, name, score in zip(
            regions, r.detections.xyxy.tolist(), r.detections.names, r.detections.confidence.tolist()
        ):
            assert reg["type"] == "rectanglelabels" and reg["from_name"] == "label" and reg["to_name"] == "image"
            assert (reg["original_width"], reg["original_height"]) == (w, h)
            v = reg["value"]
            assert v["rectanglelabels"] == [name]
            pixels = [
                v["x"] * w / 100,
                v["y"] * h / 100,
                (v["x"] + v["width"]) * w / 100,
                (v["y"] + v["height"]) * h / 100,
            ]
            np.testing.assert_allclose(pixels, box, atol=1e-3)
            assert v["x"] >= 0 and v["x"] + v["width"] <= 100 + 1e-9
            assert reg["score"] == pytest.approx(score, abs=1e-5)


def test_open_writers_ignores_repeats_and_names_every_format(tmp_path):
    writers = open_writers(["csv", "csv", "jsonl"], tmp_path / "out", NAMES)
    assert len(writers) == 2
    for writer in writers:
        writer.abort()
    assert {f.value for f in OutputFormat} == {
        "coco", "coco-results", "yolo", "voc", "label-studio", "jsonl", "csv"
    }  # fmt: skip


def test_every_file_written_is_claimed_before_it_is_written(tmp_path, run):
    """open_writers(claim=...) tells the output folder about every path before its file exists,
    so a run killed half-way still lists what it wrote (how OutputFolder owns its outputs)."""
    _, results = run
    out = tmp_path / "out"
    claimed: list[Path] = []

    def claim(path: Path) -> None:
        assert not path.exists(), f"{path} was written before it was claimed"
        claimed.append(path)

    writers = open_writers(list(OutputFormat), out, NAMES, claim=claim, save_conf=False)
    for writer in writers:
        with writer:
            for r in results:
                writer.write(r)
    written = {p for p in out.rglob("*") if p.is_file()}
    assert written and written <= set(claimed), sorted(map(str, written - set(claimed)))
