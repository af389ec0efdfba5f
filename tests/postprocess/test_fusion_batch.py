"""fuse_batch: many images in one call give what one call per image gives."""

from __future__ import annotations

import numpy as np
import pytest

from visionpipe.postprocess.fusion import (
    FusionError,
    consensus_vote,
    fuse_batch,
    nms_fusion,
    non_maximum_weighted,
    weighted_boxes_fusion,
)


def random_image(rng, models=3):
    boxes, scores, labels = [], [], []
    for _ in range(models):
        n = int(rng.integers(0, 40))
        corner = rng.random((n, 2)) * 0.8
        boxes.append(np.concatenate([corner, corner + rng.random((n, 2)) * 0.2 + 0.01], axis=1))
        scores.append(rng.random(n))
        labels.append(rng.integers(0, 4, n))
    return boxes, scores, labels


def canonical(fused):
    order = np.lexsort((fused.boxes[:, 1], fused.boxes[:, 0], fused.scores, fused.labels))
    return fused.boxes[order], fused.scores[order], fused.labels[order], fused.models[order], fused.members[order]


@pytest.mark.parametrize(
    ("function", "options"),
    [
        (weighted_boxes_fusion, {"iou": 0.5, "weights": [2, 1, 1], "conf_type": "box_and_model_avg"}),
        (nms_fusion, {"iou": 0.5, "weights": [1, 2, 3]}),
        (non_maximum_weighted, {"iou": 0.4}),
        (consensus_vote, {"iou": 0.5, "min_votes": 2}),
    ],
)
def test_batch_equals_one_call_per_image(function, options):
    rng = np.random.default_rng(7)
    images = [random_image(rng) for _ in range(25)]
    batched = fuse_batch(function, images, **options)
    assert len(batched) == len(images)
    for got, image in zip(batched, images):
        expected = function(*image, **options)
        for a, b in zip(canonical(got), canonical(expected)):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_batch_needs_the_same_models_for_every_image():
    rng = np.random.default_rng(0)
    with pytest.raises(FusionError):
        fuse_batch(weighted_boxes_fusion, [random_image(rng, 2), random_image(rng, 3)])
    assert fuse_batch(weighted_boxes_fusion, []) == []
