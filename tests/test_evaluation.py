"""COCO evaluation: metric names trackers accept, the full summary, precision/recall at the best
F1 threshold (hand-computed), and class names taken from the detections."""

from __future__ import annotations

import re

import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.evaluation import STAT_NAMES, evaluate_coco
from visionpipe.results import Result

# MLflow's rule for metric names (mlflow/utils/validation.py: _VALID_PARAM_AND_METRIC_NAMES)
MLFLOW_NAME = re.compile(r"^[/\w.\- :]*$")

NAMES = ("cat", "dog")


def ground_truth() -> dict:
    """Two images, four cats (100x100 boxes: area 10,000 > 96^2, 'large'), one small dog (20x20)."""
    boxes = {1: [[0, 0, 100, 100], [200, 0, 100, 100]], 2: [[0, 0, 100, 100], [200, 200, 100, 100]]}
    annotations = []
    for image_id, items in boxes.items():
        for bbox in items:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": bbox,
                 "area": bbox[2] * bbox[3], "iscrowd": 0}
            )  # fmt: skip
    annotations.append(
        {"id": 99, "image_id": 2, "category_id": 2, "bbox": [400, 400, 20, 20], "area": 400, "iscrowd": 0}
    )
    return {
        "images": [
            {"id": 1, "file_name": "one.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "two.jpg", "width": 640, "height": 480},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }


def result(index: int, name: str, boxes, scores, classes) -> Result:
    dets = Detections(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=np.array(scores, np.float32),
        class_id=np.array(classes, np.int64),
        class_names=NAMES,
    )
    return Result(index=index, image_id=name, source=f"/x/{name}", image_size=(480, 640), detections=dets)


@pytest.fixture
def results():
    """Cats: true positives at 0.9, 0.8, 0.6 and false positives at 0.7, 0.5 (one cat missed).
    Dog: found at 0.95."""
    return [
        result(0, "one.jpg", [[0, 0, 100, 100], [400, 300, 500, 400], [200, 0, 300, 100]], [0.9, 0.7, 0.6], [0, 0, 0]),
        result(
            1, "two.jpg", [[0, 0, 100, 100], [500, 300, 600, 400], [400, 400, 420, 420]], [0.8, 0.5, 0.95], [0, 0, 1]
        ),
    ]


def test_best_f1_point_is_the_hand_computed_one(results):
    """Per threshold c (cats; the dog is always P = R = 1 above 0.95 and 0 above it):
    c <= .5: cat P 3/5 R 3/4; .5 < c <= .6: P 3/4 R 3/4 (F1 .75); .6 < c <= .7: P 2/3 R 2/4;
    .7 < c <= .8: P 1 R 2/4. Mean F1 over the two classes peaks at (.75 + 1) / 2 for c just
    above 0.5, where P = (3/4 + 1) / 2 and R = (3/4 + 1) / 2."""
    evaluation = evaluate_coco(results, ground_truth(), NAMES)
    point = evaluation.operating_point
    assert point.precision == pytest.approx(0.875)
    assert point.recall == pytest.approx(0.875)
    assert point.f1 == pytest.approx(0.875)
    assert 0.5 < point.conf <= 0.6


def test_summary_has_every_coco_number_under_tracker_safe_names(results):
    evaluation = evaluate_coco(results, ground_truth(), NAMES)
    summary = evaluation.summary()
    for name, value in zip(STAT_NAMES, evaluation.stats):
        assert summary[name] == value
    assert len(STAT_NAMES) == 12 == len(evaluation.stats)
    # the dog is small and found exactly; every cat is large; nothing is medium
    assert summary["map_small"] == pytest.approx(1.0)
    assert summary["map_medium"] == -1.0  # pycocotools' "no such objects"
    assert summary["map_large"] == pytest.approx(summary["per_class_ap"]["cat"])
    assert set(summary["per_class_ap"]) == set(summary["per_class_ap50"]) == {"cat", "dog"}
    assert summary["per_class_ap50"]["dog"] == pytest.approx(1.0)
    metrics = evaluation.metrics()
    assert all(MLFLOW_NAME.match(key) for key in metrics), [k for k in metrics if not MLFLOW_NAME.match(k)]
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["ap_50/dog"] == pytest.approx(1.0) and "precision" in metrics and "map_50_95" in metrics
    assert not any("@" in key for key in summary)


def test_class_names_come_from_the_detections_when_not_given(results):
    given = evaluate_coco(results, ground_truth(), NAMES)
    inferred = evaluate_coco(results, ground_truth())
    assert inferred.stats == given.stats


def test_no_class_names_anywhere_is_a_clear_error():
    from visionpipe.errors import EvaluationError

    bare = Result(
        index=0, image_id="one.jpg", source="/x/one.jpg", image_size=(480, 640), detections=Detections.empty()
    )
    with pytest.raises(EvaluationError, match="class_names"):
        evaluate_coco([bare], ground_truth())
