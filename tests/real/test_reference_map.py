"""The decoders reproduce each asset model's reference COCO accuracy (shared assets' MANIFEST).

Reference settings: score threshold 0.01, multi-label for YOLOX and NanoDet and one class per cell
for FastestDet, boxes clipped to the image, top 1000 candidates, per-class NMS at the model's IoU,
at most 300 detections, scored by pycocotools on the 64 val2017 photos. Tolerance: +-0.005.
"""

from __future__ import annotations

import json

import pytest

from visionpipe import Pipeline
from visionpipe.evaluation import evaluate_coco

# model file, family, (mAP@.5:.95, mAP@.5) from the MANIFEST
REFERENCE = [
    ("yolox_nano_416_coco.onnx", "yolox", 0.362, 0.523),
    ("nanodet_m_320_coco.onnx", "nanodet", 0.317, 0.473),
    ("fastestdet_352_coco.onnx", "fastestdet", 0.240, 0.391),
]
GT = "coco/annotations/instances_val2017_dev64.json"


@pytest.fixture(scope="module")
def val_images(asset):
    images = sorted(asset("coco/images/val2017").glob("*.jpg"))
    assert len(images) == 64
    return images


@pytest.mark.real
@pytest.mark.parametrize(("model_file", "family", "ref_map", "ref_map50"), REFERENCE)
def test_decoder_reproduces_reference_map(asset, val_images, tmp_path, model_file, family, ref_map, ref_map50):
    spec = tmp_path / "model.yaml"
    spec.write_text(f"model: {asset('models/' + model_file)}\nfamily: {family}\n")
    with Pipeline(spec, conf=0.01, top_k=1000, max_det=300) as pipeline:
        results = pipeline.run(val_images, batch_size=4)

    assert all(r.ok for r in results)
    evaluation = evaluate_coco(results, asset(GT), pipeline.model.class_names)
    assert evaluation.images == 64
    assert evaluation.map_50_95 == pytest.approx(ref_map, abs=0.005)
    assert evaluation.map_50 == pytest.approx(ref_map50, abs=0.005)
    assert max(len(r.detections) for r in results) <= 300


@pytest.mark.real
def test_category_mapping_agrees_with_official_table(asset, val_images):
    """Mapping classes to COCO ids by name must agree with the published 80 -> 91 table, and the
    records we score must give the same numbers when pycocotools loads them from a file."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    table = {int(k): v for k, v in json.loads(asset("coco/yolo80_to_coco91.json").read_text()).items()}
    with Pipeline({"model": asset("models/fastestdet_352_coco.onnx"), "family": "fastestdet"}, conf=0.01) as pipeline:
        results = pipeline.run(val_images[:16])
    evaluation = evaluate_coco(results, asset(GT), pipeline.model.class_names)

    by_image = {}
    gt = json.loads(asset(GT).read_text())
    ids = {img["file_name"]: img["id"] for img in gt["images"]}
    expected = []
    for result in results:
        dets = result.detections
        image_id = ids[result.source.rsplit("/", 1)[-1]]
        by_image[image_id] = len(dets)
        for score, cls in zip(dets.confidence, dets.class_id):
            expected.append((image_id, table[int(cls)], round(float(score), 5)))
    got = [(r["image_id"], r["category_id"], r["score"]) for r in evaluation.detections]
    assert sorted(got) == sorted(expected)

    coco = COCO(str(asset(GT)))
    dt = coco.loadRes(evaluation.detections)
    evaluator = COCOeval(coco, dt, "bbox")
    evaluator.params.imgIds = sorted(by_image)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(evaluation.map_50_95, abs=1e-12)
    assert evaluation.per_class_ap  # per-class AP is reported for the classes present
