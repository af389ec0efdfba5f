"""COCO-style detection accuracy through pycocotools, the reference implementation.

Detections are matched to ground-truth images by file name and to categories by class name, so a
model with contiguous class ids (0..79) scores correctly against COCO's sparse ids (1..90).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import EvaluationError, MissingExtraError
from visionpipe.results import Result


@dataclass
class CocoEvaluation:
    map_50_95: float
    map_50: float
    map_75: float
    per_class_ap: dict[str, float]
    stats: list[float]  # pycocotools' 12 summary numbers, in its order
    detections: list[dict] = field(repr=False)  # the COCO results records that were scored
    images: int = 0
    failed_images: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "mAP@.5:.95": self.map_50_95,
            "mAP@.5": self.map_50,
            "mAP@.75": self.map_75,
            "images": self.images,
            "failed_images": self.failed_images,
            "detections": len(self.detections),
            "per_class_ap": dict(self.per_class_ap),
        }


def load_annotations(annotations: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(annotations, Mapping):
        return dict(annotations)
    try:
        with open(annotations, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read COCO annotations {annotations}: {exc}") from None
    if not isinstance(data, dict) or not {"images", "categories"} <= data.keys():
        raise EvaluationError(f"{annotations} is not a COCO annotation file (needs 'images' and 'categories')")
    return data


def coco_records(
    results: Iterable[Result], ground_truth: Mapping[str, Any], class_names: tuple[str, ...]
) -> tuple[list[dict], list[int], list[str]]:
    """COCO results records for pipeline results, the image ids they cover, and failed inputs."""
    ids_by_file = {Path(img["file_name"]).name: img["id"] for img in ground_truth["images"]}
    category_by_name = {c["name"]: c["id"] for c in ground_truth["categories"]}
    category_ids = [category_by_name.get(name) for name in class_names]
    if class_names and not any(c is not None for c in category_ids):
        raise EvaluationError("none of the model's class names appear among the annotation categories")

    records: list[dict] = []
    image_ids: list[int] = []
    failed: list[str] = []
    unknown: list[str] = []
    for result in results:
        image_id = ids_by_file.get(Path(result.source).name)
        if image_id is None:
            unknown.append(result.source)
            continue
        image_ids.append(image_id)
        if result.detections is None:
            failed.append(result.source)  # scored as an image with no detections
            continue
        dets = result.detections
        scorable = np.array([category_ids[c] is not None for c in dets.class_id], dtype=bool)
        records.extend(dets[scorable].to_coco(image_id, category_ids))  # type: ignore[arg-type]
    if unknown:
        listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise EvaluationError(f"{len(unknown)} images are not in the annotations: {listed}")
    return records, image_ids, failed


def evaluate_coco(
    results: Iterable[Result],
    annotations: str | Path | Mapping[str, Any],
    class_names: tuple[str, ...],
) -> CocoEvaluation:
    """Score pipeline results against a COCO json with pycocotools' bbox evaluation.

    Only the images present in ``results`` are scored; inputs that failed count as images where
    nothing was detected.
    """
    ground_truth = load_annotations(annotations)
    records, image_ids, failed = coco_records(results, ground_truth, class_names)
    evaluation = score_records(records, ground_truth, image_ids)
    evaluation.failed_images = failed
    return evaluation


def score_records(records: list[dict], ground_truth: Mapping[str, Any], image_ids: list[int]) -> CocoEvaluation:
    """pycocotools bbox evaluation of COCO results records on the given images."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError("pycocotools", "eval", "COCO evaluation") from None

    ground_truth = dict(ground_truth)
    ground_truth.setdefault("annotations", [])
    ground_truth.setdefault("info", {})
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    if not records:
        return CocoEvaluation(0.0, 0.0, 0.0, {}, [0.0] * 12, [], images=len(set(image_ids)))

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(records)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    # precision: [iou thresholds, recall points, categories, area ranges, max dets]; -1 = no data
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        if values.size:
            per_class[names[cat_id]] = float(values.mean())
    stats = [float(s) for s in evaluator.stats]
    return CocoEvaluation(
        map_50_95=stats[0],
        map_50=stats[1],
        map_75=stats[2],
        per_class_ap=per_class,
        stats=stats,
        detections=records,
        images=len(set(image_ids)),
    )
