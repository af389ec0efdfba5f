"""``visionpipe detect`` and ``visionpipe eval`` with YOLOX-Nano on the 64 annotated val2017 photos.

The COCO results file the command writes is scored here, independently, with pycocotools; the score
must match both the MANIFEST reference and what ``visionpipe eval`` reports. The YOLO, JSONL and CSV
files of the same run are parsed back (with the standard library, and again with the package's own
readers) and must hold the same detections as the COCO file; the YOLO labels pass the rules of
Ultralytics' dataset loader, the COCO dataset loads in pycocotools and supervision, the VOC files
in supervision, and the Label Studio tasks hold the same boxes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest

from .helpers import describe

GT = "coco/annotations/instances_val2017_dev64.json"
IMAGES = "coco/images/val2017"
# MANIFEST: yolox_nano_416_coco.onnx on these 64 photos, score threshold 0.01, pycocotools bbox
REFERENCE_MAP = 0.362
REFERENCE_MAP50 = 0.523
REFERENCE_TOLERANCE = 0.005

# What each format keeps: COCO bbox 3 decimals (x2 = x + w adds the two roundings), CSV 3 decimals,
# JSONL 3 decimals, YOLO 6 decimals of the image size; scores 5 decimals everywhere.
BOX_TOLERANCE_PX = 1e-2
SCORE_TOLERANCE = 1e-4

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def ground_truth(asset) -> dict:
    return json.loads(asset(GT).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def class_to_coco_id(asset) -> dict[int, int]:
    """Contiguous class 0..79 -> official COCO category id, from the assets' published table."""
    table = json.loads(asset("coco/yolo80_to_coco91.json").read_text(encoding="utf-8"))
    return {int(k): int(v) for k, v in table.items()}


@pytest.fixture(scope="module")
def detect_run(cli, asset, yolox_spec, tmp_path_factory):
    """One detect run over the 64 photos writing all four formats; every test below reads it."""
    out = tmp_path_factory.mktemp("detect64") / "out"
    proc = cli(
        "detect", asset(IMAGES),
        "--model", yolox_spec,
        "--conf", "0.01",
        "--annotations", asset(GT),
        "--format", "coco-results", "--format", "coco", "--format", "voc", "--format", "label-studio",
        "--save-txt", "--format", "jsonl", "--format", "csv",
        "--out", out,
    )  # fmt: skip
    return proc, out


@pytest.fixture(scope="module")
def detect_out(detect_run) -> Path:
    proc, out = detect_run
    assert proc.returncode == 0, describe(proc)
    return out


@pytest.fixture(scope="module")
def eval_run(cli, asset, yolox_spec):
    return cli("eval", "--model", yolox_spec, "--images", asset(IMAGES), "--annotations", asset(GT), "--conf", "0.01")


@pytest.fixture(scope="module")
def eval_summary(eval_run) -> dict:
    assert eval_run.returncode == 0, describe(eval_run)
    try:
        return json.loads(eval_run.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"`visionpipe eval` stdout is not one JSON document ({exc}):\n{describe(eval_run)}")


@pytest.fixture(scope="module")
def pycocotools_stats(asset, detect_out) -> list[float]:
    """pycocotools' own bbox evaluation of OUT/detections.json: stats[0] = mAP@.5:.95, [1] = mAP@.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(asset(GT)))
        dt = gt.loadRes(str(detect_out / "detections.json"))
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats]


# -- parsing each format into {file name: [(coco category id, x1, y1, x2, y2, score)]} -------------


def coco_detections(out: Path, ground_truth: dict) -> dict[str, list[tuple]]:
    file_of = {img["id"]: Path(img["file_name"]).name for img in ground_truth["images"]}
    found: dict[str, list[tuple]] = defaultdict(list)
    for record in json.loads((out / "detections.json").read_text(encoding="utf-8")):
        x, y, w, h = record["bbox"]
        found[file_of[record["image_id"]]].append((record["category_id"], x, y, x + w, y + h, record["score"]))
    return found


def yolo_detections(out: Path, ground_truth: dict, to_coco: dict[int, int]) -> dict[str, list[tuple]]:
    """OUT/labels/<stem>.txt rows ``class cx cy w h`` normalised by the image's size (taken from the
    ground-truth file, not from the tool); the training format has no score (None here)."""
    found: dict[str, list[tuple]] = {}
    for img in ground_truth["images"]:
        name = Path(img["file_name"]).name
        label = out / "labels" / f"{Path(name).stem}.txt"
        assert label.is_file(), f"no YOLO label file for {name}"
        rows = []
        for line in label.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            cls, cx, cy, w, h = line.split()
            cx, w = float(cx) * img["width"], float(w) * img["width"]
            cy, h = float(cy) * img["height"], float(h) * img["height"]
            rows.append((to_coco[int(cls)], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, None))
        found[name] = rows
    return found


def jsonl_detections(out: Path, to_coco: dict[int, int]) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert record["error"] is None, record
        name = Path(record["path"]).name
        assert name not in found, f"{name} appears twice in detections.jsonl"
        found[name] = [(to_coco[d["class_id"]], *d["xyxy"], d["confidence"]) for d in record["detections"]]
    return found


def csv_detections(out: Path, to_coco: dict[int, int]) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = defaultdict(list)
    with open(out / "detections.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            assert not row["error"], row
            box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            found[Path(row["path"]).name].append((to_coco[int(row["class_id"])], *box, float(row["confidence"])))
    return found


def assert_same_detections(reference: dict[str, list[tuple]], other: dict[str, list[tuple]], what: str) -> None:
    """Same number of boxes per image, and a one-to-one pairing with equal category, box within
    BOX_TOLERANCE_PX and score within SCORE_TOLERANCE (order is not part of the contract; a score of
    None, from a format without scores, matches any)."""
    for name in sorted(set(reference) | set(other)):
        ref, got = reference.get(name, []), list(other.get(name, []))
        assert len(got) == len(ref), f"{what}: {name} has {len(got)} detections, the COCO file {len(ref)}"
        for cat, *box, score in sorted(ref, key=lambda d: -d[-1]):
            best, best_diff = None, None
            for j, (cat2, *box2, score2) in enumerate(got):
                if cat2 != cat or (score2 is not None and abs(score2 - score) > SCORE_TOLERANCE):
                    continue
                diff = max(abs(a - b) for a, b in zip(box, box2))
                if best_diff is None or diff < best_diff:
                    best, best_diff = j, diff
            assert best is not None and best_diff <= BOX_TOLERANCE_PX, (
                f"{what}: {name}: no detection matching COCO's category {cat}, box {box}, score {score}"
                + (f" (closest box differs by {best_diff:.4f} px)" if best_diff is not None else "")
            )
            got.pop(best)


# -- tests -------------------------------------------------------------------------------------------


def test_detect_exits_zero_and_writes_every_format(detect_run, ground_truth):
    proc, out = detect_run
    assert proc.returncode == 0, describe(proc)
    for name in (
        "detections.json",
        "coco.json",
        "label_studio.json",
        "data.yaml",
        "detections.jsonl",
        "detections.csv",
        "summary.json",
    ):
        assert (out / name).is_file(), f"missing {name}\n{describe(proc)}"
    assert len(list((out / "labels").glob("*.txt"))) == len(ground_truth["images"]) == 64
    assert len(list((out / "voc").glob("*.xml"))) == 64
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["images"] == summary["processed"] == 64
    assert summary["failed"] == []
    assert summary["family"] == "yolox"
    records = json.loads((out / "detections.json").read_text(encoding="utf-8"))
    assert summary["detections"] == len(records) > 0


def test_coco_output_scored_by_pycocotools_matches_manifest_reference(pycocotools_stats):
    map_50_95, map_50 = pycocotools_stats[0], pycocotools_stats[1]
    assert map_50_95 == pytest.approx(REFERENCE_MAP, abs=REFERENCE_TOLERANCE)
    assert map_50 == pytest.approx(REFERENCE_MAP50, abs=REFERENCE_TOLERANCE)


def test_eval_summary_matches_manifest_reference(eval_summary):
    assert eval_summary["images"] == 64
    assert eval_summary["failed_images"] == []
    assert eval_summary["map_50_95"] == pytest.approx(REFERENCE_MAP, abs=REFERENCE_TOLERANCE)
    assert eval_summary["map_50"] == pytest.approx(REFERENCE_MAP50, abs=REFERENCE_TOLERANCE)


def test_eval_map_equals_pycocotools_score_of_detect_output(eval_summary, pycocotools_stats):
    """Same model, images, annotations and threshold: `eval` must report exactly the number that
    pycocotools gives for the COCO file `detect` wrote (the acceptance asks for 1e-9)."""
    assert abs(eval_summary["map_50_95"] - pycocotools_stats[0]) <= 1e-9, (
        f"eval printed {eval_summary['map_50_95']!r}, pycocotools on detect's detections.json gives "
        f"{pycocotools_stats[0]!r}"
    )


def test_coco_output_uses_annotation_image_and_category_ids(detect_out, ground_truth):
    records = json.loads((detect_out / "detections.json").read_text(encoding="utf-8"))
    image_ids = {img["id"] for img in ground_truth["images"]}
    category_ids = {c["id"] for c in ground_truth["categories"]}
    assert {r["image_id"] for r in records} <= image_ids
    assert {r["category_id"] for r in records} <= category_ids
    assert all(r["score"] >= 0.01 for r in records)
    sizes = {img["id"]: (img["width"], img["height"]) for img in ground_truth["images"]}
    for r in records:
        x, y, w, h = r["bbox"]
        width, height = sizes[r["image_id"]]
        assert w > 0 and h > 0 and x >= -1e-3 and y >= -1e-3
        assert x + w <= width + 1e-2 and y + h <= height + 1e-2, r


def test_yolo_labels_hold_the_coco_detections(detect_out, ground_truth, class_to_coco_id):
    reference = coco_detections(detect_out, ground_truth)
    assert_same_detections(reference, yolo_detections(detect_out, ground_truth, class_to_coco_id), "YOLO labels")


def test_jsonl_holds_the_coco_detections(detect_out, ground_truth, class_to_coco_id):
    found = jsonl_detections(detect_out, class_to_coco_id)
    assert set(found) == {Path(img["file_name"]).name for img in ground_truth["images"]}
    assert_same_detections(coco_detections(detect_out, ground_truth), found, "JSONL")


def test_jsonl_records_carry_the_true_image_size(detect_out, ground_truth):
    sizes = {Path(img["file_name"]).name: (img["width"], img["height"]) for img in ground_truth["images"]}
    for line in (detect_out / "detections.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert (record["width"], record["height"]) == sizes[Path(record["path"]).name], record["path"]


def test_csv_holds_the_coco_detections(detect_out, ground_truth, class_to_coco_id):
    assert_same_detections(
        coco_detections(detect_out, ground_truth), csv_detections(detect_out, class_to_coco_id), "CSV"
    )


def test_package_readers_read_the_cli_outputs_back(detect_out, ground_truth, class_to_coco_id):
    """The same comparison through visionpipe.io.formats' own readers."""
    from visionpipe.io.formats import read_csv, read_jsonl, read_yolo

    def convert(table, scored: bool = True) -> dict[str, list[tuple]]:
        converted = {}
        for source, dets in table.items():
            assert not isinstance(dets, str), f"{source}: {dets}"
            converted[Path(source).name] = [
                (class_to_coco_id[int(c)], *map(float, box), float(s) if scored else None)
                for box, s, c in zip(dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist())
            ]
        return converted

    reference = coco_detections(detect_out, ground_truth)
    assert_same_detections(reference, convert(read_jsonl(detect_out / "detections.jsonl")), "read_jsonl")
    assert_same_detections(reference, convert(read_csv(detect_out / "detections.csv")), "read_csv")
    yolo = {
        img["file_name"]: read_yolo(
            detect_out / "labels" / f"{Path(img['file_name']).stem}.txt", width=img["width"], height=img["height"]
        )
        for img in ground_truth["images"]
    }
    assert_same_detections(reference, convert(yolo, scored=False), "read_yolo")


# -- the formats other tools import -------------------------------------------------------------------


def test_yolo_output_passes_ultralytics_label_rules(detect_out, ground_truth):
    """Acceptance: every label file and data.yaml pass the checks of Ultralytics' dataset loader
    (restated independently in tests/io/yolo_rules.py); none is rejected."""
    from tests.io.yolo_rules import check_data_yaml, check_label_file

    names = check_data_yaml(detect_out / "data.yaml")
    assert len(names) == 80 and names[0] == "person"
    rows = 0
    for img in ground_truth["images"]:
        rows += len(check_label_file(detect_out / "labels" / f"{Path(img['file_name']).stem}.txt", len(names)))
    assert rows == len(json.loads((detect_out / "detections.json").read_text(encoding="utf-8")))


def test_coco_dataset_output_loads_in_pycocotools_and_supervision(detect_out, ground_truth, asset):
    import supervision as sv
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        dataset = COCO(str(detect_out / "coco.json"))
    assert sorted(dataset.getImgIds()) == sorted(img["id"] for img in ground_truth["images"])  # --annotations ids
    results = json.loads((detect_out / "detections.json").read_text(encoding="utf-8"))
    assert len(dataset.getAnnIds()) == len(results)
    by_file = {img["file_name"]: img for img in ground_truth["images"]}
    for image in dataset.loadImgs(dataset.getImgIds()):
        assert (image["width"], image["height"]) == (
            by_file[image["file_name"]]["width"],
            by_file[image["file_name"]]["height"],
        )
    loaded = sv.DetectionDataset.from_coco(
        images_directory_path=str(asset(IMAGES)), annotations_path=str(detect_out / "coco.json")
    )
    assert len(loaded) == 64
    assert sum(len(annotation) for _, _, annotation in loaded) == len(results)


def test_voc_output_loads_in_supervision(detect_out, ground_truth, asset):
    import supervision as sv

    loaded = sv.DetectionDataset.from_pascal_voc(str(asset(IMAGES)), str(detect_out / "voc"))
    reference = coco_detections(detect_out, ground_truth)
    name_of = {c["id"]: c["name"] for c in ground_truth["categories"]}
    for path, _, annotation in loaded:
        want = reference.get(Path(path).name, [])
        assert len(annotation) == len(want), path
        assert sorted(loaded.classes[c] for c in annotation.class_id) == sorted(name_of[w[0]] for w in want)


def test_label_studio_output_holds_the_coco_detections(detect_out, ground_truth):
    by_name = {c["name"]: c["id"] for c in ground_truth["categories"]}
    found: dict[str, list[tuple]] = {}
    for task in json.loads((detect_out / "label_studio.json").read_text(encoding="utf-8")):
        rows = []
        for region in task["predictions"][0]["result"]:
            v, w, h = region["value"], region["original_width"], region["original_height"]
            x1, y1 = v["x"] * w / 100, v["y"] * h / 100
            box = (x1, y1, x1 + v["width"] * w / 100, y1 + v["height"] * h / 100)
            rows.append((by_name[v["rectanglelabels"][0]], *box, region["score"]))
        found[Path(task["data"]["image"]).name] = rows
    assert len(found) == 64
    assert_same_detections(coco_detections(detect_out, ground_truth), found, "Label Studio")


def test_eval_json_has_the_whole_coco_summary_under_tracker_safe_keys(eval_summary, pycocotools_stats):
    """All 12 numbers of pycocotools' summary, in its order, under names without '@' (MLflow
    rejects it), plus precision/recall and per-class AP."""
    names = ["map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large",
             "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]  # fmt: skip
    for name, value in zip(names, pycocotools_stats):
        assert abs(eval_summary[name] - value) <= 1e-9, (name, eval_summary[name], value)
    assert not [key for key in eval_summary if "@" in key]
    assert 0 < eval_summary["precision"] <= 1 and 0 < eval_summary["recall"] <= 1
    assert 0 < eval_summary["best_f1_conf"] < 1
    assert eval_summary["per_class_ap"]["person"] > 0 and eval_summary["per_class_ap50"]["person"] > 0
