"""How much a mAP drop measured on a few dozen photos can move on others: a bootstrap over images.

The int8 loop chooses on one part of the validation photos. A drop of 0.005 there says little by
itself: on 32 photos the same int8 file measured 0.024 on one half and 0.016 on the other. How
far the estimate moves depends on how much the two models differ (a near-identical model changes
few detections, so its drop hardly varies between photo sets), so the margin is measured, not a
constant: the images are resampled with replacement and the *paired* drop (fp32 and int8 scored
on the same resample) is recomputed each time; its standard deviation is the standard error of
the measured drop::

    fp32_scores = ResampledScores(fp32_evaluation.detections, ground_truth, image_ids, resamples)
    spread = fp32_scores.drop_spread(int8_evaluation.detections)
    margin = margin_for(spread)

Scoring is pycocotools' own: ``evaluate()`` matches detections once per image and category, and
``accumulate()`` is rerun on each resample (duplicates included) by re-laying out its per-image
records, so an identity resample reproduces ``stats[0]`` exactly.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from visionpipe.errors import MissingExtraError

# One-sided 95 %: the drop on photos the choice never saw is the chosen drop plus the difference
# between two independent estimates, whose standard deviation is sqrt(2) standard errors.
CONFIDENCE_Z = 1.645
DEFAULT_RESAMPLES = 200


def margin_for(spread: float, z: float = CONFIDENCE_Z) -> float:
    """The margin that keeps the drop on an equally large unseen photo set within tolerance with
    about 95 % confidence, given the standard error ``spread`` of the drop measured on one set."""
    return z * math.sqrt(2.0) * spread


def resample_rows(count: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` bootstrap draws (rows of ``count`` positions, with replacement), seeded."""
    if count < 1:
        raise ValueError("resampling needs at least one image")
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


class ResampledScores:
    """mAP@.5:.95 of one model's detections on bootstrap resamples of ``image_ids``.

    Build it once for the reference (fp32) model; :meth:`drop_spread` then scores a candidate on
    the same resamples and returns the standard deviation of the paired drops.
    """

    def __init__(
        self,
        records: list[dict],
        ground_truth: Mapping[str, Any],
        image_ids: Sequence[int],
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
    ) -> None:
        self.ground_truth = ground_truth
        self.image_ids = sorted(set(image_ids))
        self.samples = resample_rows(len(self.image_ids), resamples, seed)
        self.scores = self.score(records)

    def score(self, records: list[dict]) -> np.ndarray:
        """mAP@.5:.95 of ``records`` on every resample (the identity sample is not among them)."""
        evaluator = _matched(records, self.ground_truth, self.image_ids)
        if evaluator is None:  # nothing detected: 0 on every resample
            return np.zeros(len(self.samples))
        return np.array([_accumulated_map(evaluator, sample) for sample in self.samples])

    def drop_spread(self, records: list[dict]) -> float:
        """Standard deviation over the resamples of (reference mAP - ``records``' mAP)."""
        drops = self.scores - self.score(records)
        return float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0


def map_on_sample(records: list[dict], ground_truth: Mapping[str, Any], image_ids: Sequence[int], sample) -> float:
    """mAP@.5:.95 of ``records`` on ``sample`` (positions into the sorted unique ``image_ids``,
    repeats counting as many times as they appear)."""
    evaluator = _matched(records, ground_truth, sorted(set(image_ids)))
    return 0.0 if evaluator is None else _accumulated_map(evaluator, np.asarray(sample))


def _matched(records: list[dict], ground_truth: Mapping[str, Any], image_ids: list[int]):
    """A COCOeval that has matched ``records`` per image and category (area 'all', 100 detections,
    the settings of mAP@.5:.95), or None when there are no records."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError("pycocotools", "eval", "COCO evaluation") from None
    if not records:
        return None
    data = dict(ground_truth)
    data.setdefault("annotations", [])
    data.setdefault("info", {})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(records), iouType="bbox")
        params = evaluator.params
        params.imgIds = list(image_ids)
        params.areaRng, params.areaRngLbl, params.maxDets = params.areaRng[:1], params.areaRngLbl[:1], [100]
        evaluator.evaluate()
    evaluator.matched_per_image = list(evaluator.evalImgs)  # [category][image], one area, one cap
    evaluator.all_image_ids = list(evaluator._paramsEval.imgIds)
    return evaluator


def _accumulated_map(evaluator, sample: np.ndarray) -> float:
    """pycocotools' accumulate() on the images at positions ``sample``: its per-image records are
    laid out again in the sample's order, repeats included, and the image list made to match."""
    images = evaluator.all_image_ids
    count = len(images)
    matched = evaluator.matched_per_image
    categories = len(matched) // count
    evaluator.evalImgs = [matched[k * count + int(i)] for k in range(categories) for i in sample]
    ids = [images[int(i)] for i in sample]
    evaluator.params.imgIds = ids
    evaluator._paramsEval.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0
