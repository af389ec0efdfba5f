"""The bootstrap behind the int8 loop's margin, checked against pycocotools run the ordinary way."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionpipe.optimize.margin import ResampledScores, map_on_sample, margin_for, resample_rows


def synthetic(seed: int, images: int = 6) -> tuple[dict, list[dict]]:
    """Ground truth with a few boxes of two classes per image, and noisy scored detections of them
    (shifted boxes, misses and false alarms), so AP is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    gt = {
        "images": [{"id": 10 + i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(images)],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [],
    }
    records = []
    for image in gt["images"]:
        for _ in range(int(rng.integers(1, 5))):
            x, y, w, h = (float(v) for v in rng.uniform([0, 0, 10, 10], [150, 150, 50, 50]))
            category = int(rng.choice([1, 3]))
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image["id"], "category_id": category,
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
            if rng.random() < 0.8:
                jitter = rng.normal(0, 4, 2)
                box = [x + float(jitter[0]), y + float(jitter[1]), w, h]
                records.append({"image_id": image["id"], "category_id": category, "bbox": box,
                                "score": float(rng.uniform(0.2, 1.0))})  # fmt: skip
        for _ in range(int(rng.integers(0, 3))):
            box = [float(v) for v in rng.uniform([0, 0, 10, 10], [150, 150, 50, 50])]
            records.append({"image_id": image["id"], "category_id": int(rng.choice([1, 3])), "bbox": box,
                            "score": float(rng.uniform(0.0, 0.6))})  # fmt: skip
    return gt, records


def pycocotools_map(gt: dict, records: list[dict]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "info": {}}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(records), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def duplicated(gt: dict, records: list[dict], sample: list[int]) -> tuple[dict, list[dict]]:
    """The resample made real: every drawn image copied under a new id with its boxes and detections."""
    images, annotations, detections = [], [], []
    for copy, position in enumerate(sample):
        source = gt["images"][position]
        new_id = 1000 + copy
        images.append({**source, "id": new_id, "file_name": f"copy{copy}.jpg"})
        for a in gt["annotations"]:
            if a["image_id"] == source["id"]:
                annotations.append({**a, "id": len(annotations) + 1, "image_id": new_id})
        detections += [{**r, "image_id": new_id} for r in records if r["image_id"] == source["id"]]
    return {**gt, "images": images, "annotations": annotations}, detections


def test_identity_and_resamples_with_repeats_equal_pycocotools():
    gt, records = synthetic(0)
    ids = [image["id"] for image in gt["images"]]
    assert map_on_sample(records, gt, ids, np.arange(len(ids))) == pytest.approx(pycocotools_map(gt, records))
    for sample in ([0, 0, 2, 5, 5, 5], [1, 3, 3, 4, 0, 2], [4, 4, 4, 4, 4, 1]):
        copied_gt, copied_records = duplicated(gt, records, sample)
        expected = pycocotools_map(copied_gt, copied_records)
        assert map_on_sample(records, gt, ids, sample) == pytest.approx(expected, abs=1e-12), sample


def test_drop_spread_is_zero_for_the_same_detections_and_grows_with_the_difference():
    gt, records = synthetic(1, images=10)
    ids = [image["id"] for image in gt["images"]]
    reference = ResampledScores(records, gt, ids, resamples=40, seed=3)
    assert reference.scores.shape == (40,) and reference.scores.std() > 0  # resampling moves the mAP
    assert reference.drop_spread(records) == 0.0
    rng = np.random.default_rng(2)
    slightly = [{**r, "score": r["score"] * float(rng.uniform(0.95, 1.05))} for r in records]
    shuffled = [{**r, "score": float(rng.uniform(0, 1))} for r in records]
    small, large = reference.drop_spread(slightly), reference.drop_spread(shuffled)
    assert 0 <= small < large
    # the spread is the standard deviation of paired drops, each an ordinary pycocotools score
    samples = resample_rows(len(ids), 40, 3)
    drops = [
        pycocotools_map(*duplicated(gt, records, list(s))) - pycocotools_map(*duplicated(gt, shuffled, list(s)))
        for s in samples[:5]
    ]
    ours = reference.scores[:5] - reference.score(shuffled)[:5]
    assert ours == pytest.approx(drops, abs=1e-12)


def test_margin_is_one_sided_95_percent_of_the_difference_between_two_sets():
    assert margin_for(0.0) == 0.0
    assert margin_for(0.005) == pytest.approx(1.645 * math.sqrt(2) * 0.005)
    rows = resample_rows(7, 3, seed=1)
    assert rows.shape == (3, 7) and rows.min() >= 0 and rows.max() < 7
    assert (resample_rows(7, 3, seed=1) == rows).all()
    with pytest.raises(ValueError, match="at least one image"):
        resample_rows(0, 3, seed=1)
