"""Fusing the detections of several models on the same image: NMS, soft-NMS, weighted boxes fusion
(WBF), non-maximum weighted (NMW) and consensus voting.

Semantics follow the reference implementation, ``ensemble-boxes`` (Solovyev et al., "Weighted boxes
fusion", 2021), which the tests compare against to 1e-5, with four deliberate differences:

* a model weight of 0 removes that model (the package divides by a zero score sum and returns NaN
  boxes; its author's advice is to drop such a model, which is what this does);
* empty model outputs are fine for every method (the package's NMS fails on them);
* soft-NMS returns the decayed scores by default, as the soft-NMS paper defines them (the package
  returns each kept box's original score; ``rescore=False`` reproduces that);
* a WBF or NMW cluster whose scores are all 0 keeps its first box (the package divides by the zero
  score sum and returns NaN).

WBF and NMW cluster boxes in descending score order within each class, one box at a time: that
order is what defines the result. Classes are independent, so every class advances in the same
NumPy step ("rounds" of the r-th box of each class), which keeps the Python loop as short as the
longest class instead of as long as the number of boxes.

Arrays here are in normalised [0, 1] coordinates, as the method's clipping assumes; ``fuse``
converts from and to pixels. Settings carry visionpipe's names, not the package's: ``iou`` is its
``iou_thr``, ``conf`` its ``skip_box_thr`` (boxes scoring below it are skipped), and soft-NMS's
``soft_threshold``/``soft_method`` its ``thresh``/``method``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from visionpipe.detections import Detections
from visionpipe.errors import FusionError
from visionpipe.postprocess.nms import nms as greedy_nms


class FusionMethod(str, Enum):
    """How boxes of several models are merged; the CLI's ``--fusion`` takes the values.

    Example::

        FusionMethod("wbf") is FusionMethod.WBF   # also "nms", "soft-nms", "nmw", "vote"
    """

    NMS = "nms"
    SOFT_NMS = "soft-nms"
    WBF = "wbf"
    NMW = "nmw"
    VOTE = "vote"


CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass
class Fused:
    """Fused boxes (normalised xyxy), scores, labels, and per box how many distinct models and how
    many input boxes went into it (1 and 1 for the suppression methods)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    models: np.ndarray
    members: np.ndarray

    @classmethod
    def empty(cls) -> Fused:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass
class _Boxes:
    """Every model's boxes in one table, in model order then input order."""

    boxes: np.ndarray  # (N, 4) float64, corners ordered and clipped to [0, 1]
    scores: np.ndarray  # (N,) float64, weighted as the method wants
    labels: np.ndarray  # (N,) int64
    models: np.ndarray  # (N,) int64: index into the (zero-weight-free) model list
    weights: np.ndarray  # (M,) float64: the weight of each model kept


def _validate(
    boxes_list: Sequence, scores_list: Sequence, labels_list: Sequence, weights: Sequence[float] | None
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    if not (len(boxes_list) == len(scores_list) == len(labels_list)):
        raise FusionError("boxes, scores and labels must be given for the same number of models")
    if weights is None:
        weights = np.ones(len(boxes_list))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(boxes_list),):
        raise FusionError(f"{len(weights)} weights given for {len(boxes_list)} models")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise FusionError(f"weights must be finite and non-negative, got {weights.tolist()}")
    if len(weights) and not (weights > 0).any():
        raise FusionError("at least one model needs a positive weight")
    boxes, scores, labels = [], [], []
    for m, (b, s, l) in enumerate(zip(boxes_list, scores_list, labels_list)):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4) if np.size(b) else np.zeros((0, 4))
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        l = np.asarray(l).reshape(-1)
        if not (len(b) == len(s) == len(l)):
            raise FusionError(f"model {m}: {len(b)} boxes, {len(s)} scores and {len(l)} labels")
        if not np.isfinite(s).all() or (s < 0).any():
            raise FusionError(f"model {m}: scores must be finite and non-negative")
        if not np.isfinite(b).all():
            raise FusionError(f"model {m}: box coordinates must be finite")
        boxes.append(b)
        scores.append(s)
        labels.append(l.astype(np.int64))
    return boxes, scores, labels, weights


def _table(boxes_list, scores_list, labels_list, weights, conf: float | None) -> _Boxes:
    """Concatenate models, order corners, clip to [0, 1], drop zero-area and low-score boxes."""
    keep_models = np.flatnonzero(weights > 0)
    boxes = [boxes_list[m] for m in keep_models]
    scores = [scores_list[m] for m in keep_models]
    labels = [labels_list[m] for m in keep_models]
    models = [np.full(len(b), i, np.int64) for i, b in enumerate(boxes)]
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    s = np.concatenate(scores) if scores else np.zeros(0)
    l = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    m = np.concatenate(models) if models else np.zeros(0, np.int64)
    b = np.clip(np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1), 0.0, 1.0)
    keep = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) != 0.0
    if conf is not None:
        keep &= s >= conf
    return _Boxes(b[keep], s[keep], l[keep], m[keep], weights[keep_models])


# -- suppression ------------------------------------------------------------------------------------


def _suppression_table(boxes_list, scores_list, labels_list, weights) -> tuple[np.ndarray, _Boxes]:
    """The box table and its scores: scaled by weight / sum(weights) when weights are given, as is
    (unscaled) when they are not, as the reference does."""
    given = weights is not None
    boxes, scores, labels, weights = _validate(boxes_list, scores_list, labels_list, weights)
    table = _table(boxes, scores, labels, weights, None)
    if not given:
        return table.scores, table
    return table.scores * table.weights[table.models] / table.weights.sum(), table


def nms_fusion(boxes_list, scores_list, labels_list, weights=None, iou: float = 0.5) -> Fused:
    """Class-aware greedy NMS over all models' boxes; given weights scale scores by weight / sum(weights)."""
    scaled, table = _suppression_table(boxes_list, scores_list, labels_list, weights)
    order = _reference_tie_order(scaled, table.labels)
    keep = order[greedy_nms(table.boxes[order], scaled[order], iou, class_ids=table.labels[order])]
    ones = np.ones(len(keep), np.int64)
    return Fused(table.boxes[keep], scaled[keep], table.labels[keep], ones, ones)


def _reference_tie_order(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A permutation under which a stable sort by score visits equal scores of a class in the
    reference's order (its ``argsort()[::-1]`` per class). Without ties any order will do."""
    by_class = np.lexsort((scores, labels))
    tied = (np.diff(labels[by_class]) == 0) & (np.diff(scores[by_class]) == 0)
    if not tied.any():
        return np.arange(len(scores))
    return np.concatenate(
        [
            members[scores[members].argsort()[::-1]]
            for members in (np.flatnonzero(labels == l) for l in np.unique(labels))
        ]
    )


def soft_nms_fusion(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou: float = 0.5,
    sigma: float = 0.5,
    soft_threshold: float = 0.001,
    soft_method: str = "gaussian",
    rescore: bool = True,
) -> Fused:
    """Soft-NMS (Bodla et al., 2017) per class: overlapping boxes have their scores decayed —
    ``linear``: by (1 - IoU) above ``iou``; ``gaussian``: by exp(-IoU^2 / sigma) — and boxes
    whose decayed score stays above ``soft_threshold`` are kept (the reference's ``thresh``;
    ``soft_method`` is its ``method``)."""
    if soft_method not in ("linear", "gaussian"):
        raise FusionError(f"soft-NMS method must be 'linear' or 'gaussian', got {soft_method!r}")
    if sigma <= 0:
        raise FusionError("sigma must be positive")
    scaled, table = _suppression_table(boxes_list, scores_list, labels_list, weights)
    out_index, out_scores = [], []
    for label in np.unique(table.labels):
        members = np.flatnonzero(table.labels == label)
        kept, decayed = _soft_nms_one_class(
            table.boxes[members], scaled[members].copy(), iou, sigma, soft_threshold, soft_method
        )
        out_index.append(members[kept])
        out_scores.append(decayed if rescore else scaled[members[kept]])
    if not out_index:
        return Fused.empty()
    index = np.concatenate(out_index)
    ones = np.ones(len(index), np.int64)
    return Fused(table.boxes[index], np.concatenate(out_scores), table.labels[index], ones, ones)


def _soft_nms_one_class(boxes, scores, iou, sigma, thresh, method) -> tuple[np.ndarray, np.ndarray]:
    """Positions kept and their decayed scores. Each step moves the best remaining box to the front
    (swapping, so ties resolve as in the reference) and decays the rest by their overlap with it."""
    n = len(boxes)
    order = np.arange(n)
    boxes = boxes.copy()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(n):
        if i < n - 1:
            best = i + 1 + int(np.argmax(scores[i + 1 :]))
            if scores[i] < scores[best]:
                for array in (boxes, scores, areas, order):
                    array[[i, best]] = array[[best, i]]
        rest = slice(i + 1, n)
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        if method == "linear":
            decay = np.where(overlap > iou, 1.0 - overlap, 1.0)
        else:
            decay = np.exp(-(overlap * overlap) / sigma)
        scores[rest] = decay * scores[rest]
    kept = scores > thresh
    return order[kept], scores[kept]


# -- clustering: WBF and NMW --------------------------------------------------------------------------


def _rounds(table: _Boxes, score_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class (in order of first appearance), its box indices sorted by descending score,
    padded with -1 into a (classes, longest) matrix; plus the class labels."""
    labels, first = np.unique(table.labels, return_index=True)
    labels = labels[np.argsort(first, kind="stable")]
    per_class = []
    for label in labels:
        members = np.flatnonzero(table.labels == label)
        # argsort()[::-1], exactly as the reference orders each class (ties included)
        per_class.append(members[score_key[members].argsort()[::-1]])
    longest = max((len(p) for p in per_class), default=0)
    grid = np.full((len(labels), longest), -1, np.int64)
    for row, members in enumerate(per_class):
        grid[row, : len(members)] = members
    return grid, labels


def _iou_to_clusters(clusters: np.ndarray, new: np.ndarray) -> np.ndarray:
    """IoU of each new box (m, 4) with each cluster box (m, C, 4), in the reference's operation order."""
    x_a = np.maximum(clusters[..., 0], new[:, None, 0])
    y_a = np.maximum(clusters[..., 1], new[:, None, 1])
    x_b = np.minimum(clusters[..., 2], new[:, None, 2])
    y_b = np.minimum(clusters[..., 3], new[:, None, 3])
    inter = np.maximum(x_b - x_a, 0) * np.maximum(y_b - y_a, 0)
    area_a = (clusters[..., 2] - clusters[..., 0]) * (clusters[..., 3] - clusters[..., 1])
    area_b = (new[:, 2] - new[:, 0]) * (new[:, 3] - new[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b[:, None] - inter)


def weighted_boxes_fusion(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou: float = 0.55,
    conf: float = 0.0,
    conf_type: str = "avg",
    allows_overflow: bool = False,
) -> Fused:
    """Weighted boxes fusion: each class's boxes, by descending weighted score, join the cluster
    whose fused box they overlap most (IoU > ``iou``) or start a new one; a cluster's box is
    the score-weighted mean of its members and its score is rescaled by how many models agreed
    (``conf_type``: avg, max, box_and_model_avg, absent_model_aware_avg)."""
    if conf_type not in CONF_TYPES:
        raise FusionError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}")
    boxes, scores, labels, weights = _validate(boxes_list, scores_list, labels_list, weights)
    table = _table(boxes, scores, labels, weights, conf)
    weighted = table.scores * table.weights[table.models]
    grid, class_labels = _rounds(table, weighted)
    n_classes, longest = grid.shape
    if longest == 0:
        return Fused.empty()
    n_models = len(table.weights)
    # Longest classes first: the classes still active in round r are then rows [:active[r]], and
    # their clusters a slice (a view) rather than a gather.
    by_length = np.argsort(-(grid >= 0).sum(axis=1), kind="stable")
    grid = grid[by_length]
    active = (grid >= 0).sum(axis=0)

    fused = np.zeros((n_classes, longest, 4))  # each cluster's current box (what new boxes match)
    acc = np.zeros((n_classes * longest, 4), np.float32)  # sum of score * box, float32 as the reference
    score_sum = np.zeros(n_classes * longest)
    score_max = np.zeros(n_classes * longest)
    weight_sum = np.zeros(n_classes * longest)
    count = np.zeros(n_classes * longest, np.int64)
    seen = np.zeros((n_classes * longest, n_models), bool)
    clusters = np.zeros(n_classes, np.int64)
    flat_fused = fused.reshape(-1, 4)
    row_base = np.arange(n_classes) * longest

    for r in range(longest):
        k = active[r]
        index = grid[:k, r]
        box, score, model = table.boxes[index], weighted[index], table.models[index]
        have = clusters[:k]
        width = int(have.max())
        slot = row_base[:k] + have  # a new cluster's slot, unless the box joins one
        if width:
            overlap = _iou_to_clusters(fused[:k, :width], box)
            overlap[np.arange(width)[None, :] >= have[:, None]] = -1.0
            best = overlap.argmax(axis=1)
            join = overlap[np.arange(k), best] > iou
            slot[join] = row_base[:k][join] + best[join]
        else:
            join = np.zeros(k, bool)
        start = ~join
        clusters[:k] += start

        acc[slot] = acc[slot] + score[:, None] * box
        score_sum[slot] += score
        j = slot[join]
        j = j[score_sum[j] > 0]  # all-zero scores: keep the cluster's first box, not 0 / 0
        flat_fused[j] = (acc[j].astype(np.float64) / score_sum[j, None]).astype(np.float32)
        flat_fused[slot[start]] = box[start]  # a one-box cluster is that box, unrounded
        count[slot] += 1
        weight_sum[slot] += table.weights[model]
        score_max[slot] = np.maximum(score_max[slot], score)
        seen[slot, model] = True

    # back to classes in order of first appearance, as the reference concatenates them
    restore = np.argsort(by_length)
    shape = (n_classes, longest)
    count, score_sum, score_max, weight_sum = (
        a.reshape(shape)[restore] for a in (count, score_sum, score_max, weight_sum)
    )
    seen = seen.reshape(*shape, n_models)[restore]
    fused = fused[restore]
    clusters = clusters[restore]
    valid = np.arange(longest)[None, :] < clusters[:, None]
    n = count[valid]
    single = n == 1
    if conf_type == "max":
        score = np.where(single, score_sum[valid], score_max[valid].astype(np.float32))
    else:
        score = np.where(single, score_sum[valid], (score_sum[valid] / n).astype(np.float32))
    models_in = seen[valid]
    if conf_type == "box_and_model_avg":
        score = score * n / weight_sum[valid] * (models_in * table.weights).sum(axis=1) / table.weights.sum()
    elif conf_type == "absent_model_aware_avg":
        absent = (~models_in * table.weights).sum(axis=1)
        score = score * n / (weight_sum[valid] + absent)
    elif conf_type == "max":
        score = score / table.weights.max()
    elif not allows_overflow:
        score = score * np.minimum(n_models, n) / table.weights.sum()
    else:
        score = score * n / table.weights.sum()

    labels_out = np.repeat(class_labels, clusters)
    order = score.argsort()[::-1]
    return Fused(fused[valid][order], score[order], labels_out[order], models_in.sum(axis=1)[order], n[order])


def non_maximum_weighted(
    boxes_list, scores_list, labels_list, weights=None, iou: float = 0.55, conf: float = 0.0
) -> Fused:
    """Non-maximum weighted (Zhou et al., 2017): clusters form around each class's best boxes
    (IoU > ``iou`` with the cluster's first box); the fused box averages members weighted by
    score x IoU with that first box, and keeps its score. Weights are divided by the largest."""
    boxes, scores, labels, weights = _validate(boxes_list, scores_list, labels_list, weights)
    table = _table(boxes, scores, labels, weights / weights.max(), conf)
    weighted = table.scores * table.weights[table.models]
    grid, class_labels = _rounds(table, weighted)
    n_classes, longest = grid.shape
    if longest == 0:
        return Fused.empty()

    heads = np.zeros((n_classes, longest), np.int64)  # box index of each cluster's first box
    cluster_of = np.full(len(table.boxes), -1, np.int64)
    clusters = np.zeros(n_classes, np.int64)
    for r in range(longest):
        rows = np.flatnonzero(grid[:, r] >= 0)
        index = grid[rows, r]
        width = int(clusters[rows].max())
        target = np.full(len(rows), -1)
        if width:
            overlap = _nmw_iou(table.boxes[heads[rows, :width]], table.boxes[index][:, None, :])
            overlap[np.arange(width)[None, :] >= clusters[rows, None]] = -1.0
            best = overlap.argmax(axis=1)
            matched = overlap[np.arange(len(rows)), best] > iou
            target[matched] = best[matched]
        start = target < 0
        target[start] = clusters[rows[start]]
        heads[rows[start], target[start]] = index[start]
        clusters[rows[start]] += 1
        cluster_of[index] = rows * longest + target

    # Average each cluster's members in the order they joined (score order), float32 as the reference.
    flat_heads = heads.reshape(-1)
    members = grid.T[grid.T >= 0]  # rank-major: every cluster receives its members in order
    acc = np.zeros((n_classes * longest, 4), np.float32)
    total = np.zeros(n_classes * longest)
    head_of = flat_heads[cluster_of[members]]
    member_weight = weighted[members] * _nmw_iou(table.boxes[members], table.boxes[head_of])
    for rank in _rank_groups(cluster_of[members]):
        slots = cluster_of[members[rank]]
        acc[slots] = acc[slots] + member_weight[rank, None] * table.boxes[members[rank]]
        total[slots] += member_weight[rank]
    valid = (np.arange(longest)[None, :] < clusters[:, None]).reshape(-1)
    head_index = flat_heads[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        boxes = (acc[valid].astype(np.float64) / total[valid, None]).astype(np.float32)
    zero = total[valid] == 0  # all-zero scores: the cluster's first box, not 0 / 0
    boxes[zero] = table.boxes[head_index[zero]]
    score = weighted[head_index].astype(np.float32)
    counts = np.bincount(cluster_of[members], minlength=n_classes * longest)[valid]
    models = np.array([len(set(table.models[cluster_of == slot])) for slot in np.flatnonzero(valid)], dtype=np.int64)
    labels_out = np.repeat(class_labels, clusters)
    order = score.argsort()[::-1]
    return Fused(
        boxes[order].astype(np.float64),
        score[order].astype(np.float64),
        labels_out[order],
        models[order],
        counts[order],
    )


def _nmw_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU (broadcasting), 0 where boxes do not intersect, as the reference's helper."""
    x_a = np.maximum(a[..., 0], b[..., 0])
    y_a = np.maximum(a[..., 1], b[..., 1])
    x_b = np.minimum(a[..., 2], b[..., 2])
    y_b = np.minimum(a[..., 3], b[..., 3])
    inter = np.maximum(0, x_b - x_a) * np.maximum(0, y_b - y_a)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter == 0, 0.0, inter / (area_a + area_b - inter))


def _rank_groups(slots: np.ndarray) -> list[np.ndarray]:
    """Split positions into groups where each slot appears at most once, preserving each slot's order:
    group k holds every slot's k-th occurrence."""
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_slots)) + 1]
    rank = np.arange(len(slots)) - np.repeat(starts, np.diff(np.r_[starts, len(slots)]))
    ranks = np.empty(len(slots), np.int64)
    ranks[order] = rank
    return [np.flatnonzero(ranks == k) for k in range(int(ranks.max()) + 1)] if len(slots) else []


def consensus_vote(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou: float = 0.55,
    conf: float = 0.0,
    min_votes: int = 2,
) -> Fused:
    """Keep a fused box only where at least ``min_votes`` distinct models agree (WBF clusters)."""
    if min_votes < 1:
        raise FusionError("min_votes must be at least 1")
    fused = weighted_boxes_fusion(boxes_list, scores_list, labels_list, weights, iou, conf)
    keep = fused.models >= min_votes
    return Fused(fused.boxes[keep], fused.scores[keep], fused.labels[keep], fused.models[keep], fused.members[keep])


# -- many images at once --------------------------------------------------------------------------------


def fuse_batch(function, images: Sequence[tuple[Sequence, Sequence, Sequence]], **options) -> list[Fused]:
    """Apply a fusion function to many images in one call; the same result as one call per image.

    ``images`` holds, per image, the (boxes_list, scores_list, labels_list) the function takes
    (the same models, in the same order, for every image). Images are independent exactly as
    classes are, so each (image, class) pair becomes a class of one big call: the clustering steps
    then number the longest class of any image, not the sum over images. ``options`` are passed on
    (weights, iou, ...).
    """
    if not images:
        return []
    n_models = len(images[0][0])
    if any(len(boxes) != n_models for boxes, _, _ in images):
        raise FusionError("every image needs the same number of models")
    top = 1 + max((int(np.max(l)) for _, _, labels in images for l in labels if np.size(l)), default=0)
    if any(np.size(l) and np.min(l) < 0 for _, _, labels in images for l in labels):
        raise FusionError("labels must be non-negative")
    merged = tuple(
        [
            np.concatenate([np.asarray(image[part][m]).reshape((-1, 4) if part == 0 else (-1,)) for image in images])
            if part != 2
            else np.concatenate(
                [np.asarray(image[2][m], np.int64).reshape(-1) + i * top for i, image in enumerate(images)]
            )
            for m in range(n_models)
        ]
        for part in range(3)
    )
    fused = function(*merged, **options)
    image_of = fused.labels // top
    out = []
    for i in range(len(images)):
        mine = image_of == i
        out.append(
            Fused(
                fused.boxes[mine], fused.scores[mine], fused.labels[mine] % top, fused.models[mine], fused.members[mine]
            )
        )
    return out


# -- Detections in, Detections out ----------------------------------------------------------------------


def fuse(
    members: Sequence[Detections],
    method: FusionMethod | str = FusionMethod.WBF,
    *,
    image_hw: tuple[int, int],
    weights: Sequence[float] | None = None,
    iou: float = 0.55,
    conf: float = 0.0,
    conf_type: str = "avg",
    sigma: float = 0.5,
    soft_threshold: float = 0.001,
    soft_method: str = "gaussian",
    min_votes: int = 2,
) -> Detections:
    """Fuse per-model Detections of one image (pixel boxes) of ``image_hw`` = (height, width), the
    order of NumPy shapes and of every size in visionpipe (see :mod:`visionpipe.geometry`).

    Boxes of the same class overlapping with IoU above ``iou`` are fused; boxes scoring below
    ``conf`` are skipped first (WBF, NMW, vote). All members must share class names (map them
    first: see ``align_classes``). The result keeps, per box, ``data["models"]`` (distinct models
    that agreed) and ``data["members"]`` (boxes fused).

    Example::

        fused = fuse([yolox_dets, nanodet_dets], FusionMethod.WBF, image_hw=(480, 640), weights=[2, 1])
    """
    method = FusionMethod(method)
    if not members:
        raise FusionError("nothing to fuse: no member detections")
    names = members[0].class_names
    if any(m.class_names != names for m in members):
        raise FusionError("members have different class lists; align them by name first")
    height, width = image_hw
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes = [m.xyxy.astype(np.float64) / scale for m in members]
    scores = [m.confidence for m in members]
    labels = [m.class_id for m in members]
    if method is FusionMethod.NMS:
        out = nms_fusion(boxes, scores, labels, weights, iou)
    elif method is FusionMethod.SOFT_NMS:
        out = soft_nms_fusion(boxes, scores, labels, weights, iou, sigma, soft_threshold, soft_method)
    elif method is FusionMethod.WBF:
        out = weighted_boxes_fusion(boxes, scores, labels, weights, iou, conf, conf_type)
    elif method is FusionMethod.NMW:
        out = non_maximum_weighted(boxes, scores, labels, weights, iou, conf)
    else:
        out = consensus_vote(boxes, scores, labels, weights, iou, conf, min_votes)
    return Detections(
        xyxy=out.boxes * scale,
        confidence=out.scores,
        class_id=out.labels,
        data={"models": out.models, "members": out.members},
        class_names=names,
    )
