"""Fusing an ensemble's members on one image: classes matched by name, each group of classes fused
among the members that know it (:mod:`visionpipe.postprocess.fusion` does the box maths).

The pipeline runs the members and hands their detections here; nothing in this module knows
about models or runtimes::

    fused = fuse_members([yolox_dets, nanodet_dets], [to_union_a, to_union_b], names, FusionConfig(), (480, 640))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from visionpipe.detections import Detections
from visionpipe.errors import FusionError
from visionpipe.postprocess.fusion import FusionMethod, fuse


@dataclass(frozen=True)
class FusionConfig:
    """How an ensemble's members are fused (see ``visionpipe.postprocess.fusion``).

    ``iou``: boxes of a class overlapping above it are fused (``--fusion-iou`` on the command
    line, ``fusion_iou`` to ``Pipeline``, ``fusion: {iou: ...}`` in an ensemble file); ``conf``:
    member boxes scoring below it are skipped before fusing (``fusion: {conf: ...}``). The names are
    the house's, not ensemble-boxes' (``iou_thr``, ``skip_box_thr``).

    ``iou`` and ``conf`` default to what scored best for YOLOX-Nano + NanoDet-m on the
    128 COCO train2017 photos of the test assets (a grid over weights, IoU, skip threshold and
    confidence type), chosen there so that the val2017 figures stay an honest test.

    Example::

        Pipeline(["yolox.yaml", "nanodet.yaml"], fusion=FusionConfig(method="wbf", weights=(3, 1), iou=0.6))
    """

    method: FusionMethod = FusionMethod.WBF
    weights: tuple[float, ...] | None = None
    iou: float = 0.7
    conf: float = 0.02
    conf_type: str = "avg"
    sigma: float = 0.5
    soft_threshold: float = 0.001
    soft_method: str = "gaussian"
    min_votes: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", FusionMethod(self.method))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def check_weights(self, members: int) -> None:
        """Refuse weights that do not fit ``members`` models or cannot weigh anything."""
        if self.weights is None:
            return
        if len(self.weights) != members:
            raise FusionError(f"{len(self.weights)} weights given for {members} models")
        if any(w < 0 or not np.isfinite(w) for w in self.weights) or not any(self.weights):
            raise FusionError(f"weights must be non-negative with at least one positive, got {list(self.weights)}")


def fuse_members(
    detections: Sequence[Detections | None],
    to_ensemble: Sequence[np.ndarray],
    class_names: tuple[str, ...],
    config: FusionConfig,
    image_size: tuple[int, int],
    max_det: int,
) -> Detections:
    """Fuse the members' detections of one image (``image_size`` = (height, width)).

    ``detections[k]`` is member k's (None when it failed on this image), ``to_ensemble[k]`` maps
    its class ids to positions in ``class_names`` (the union of the members' classes). Each group
    of classes known to the same members is fused among those members alone; a class only one
    member knows passes through with its scores unchanged. At most ``max_det`` boxes, best first.

    Example::

        fused = fuse_members([a, b], [a_to_union, b_to_union], names, FusionConfig(), (480, 640), max_det=300)
    """
    mapped = {
        k: _to_ensemble(dets, to_ensemble[k], class_names) for k, dets in enumerate(detections) if dets is not None
    }
    knows = np.zeros((len(class_names), len(to_ensemble)), dtype=bool)
    for k, ids in enumerate(to_ensemble):
        knows[ids, k] = True
    height, width = image_size
    parts = []
    for pattern in np.unique(knows, axis=0):
        group = np.flatnonzero((knows == pattern).all(axis=1))
        voters = [int(k) for k in np.flatnonzero(pattern) if int(k) in mapped]
        subsets = [mapped[k][np.isin(mapped[k].class_id, group)] for k in voters]
        if config.weights is not None and not any(config.weights[k] for k in voters):
            continue  # only zero-weight members know these classes: a weight of 0 removes a model
        if len(voters) == 1 and pattern.sum() == 1:
            ones = np.ones(len(subsets[0]), np.int64)
            parts.append(replace(subsets[0], data={"models": ones, "members": ones}))
        elif voters:
            weights = None if config.weights is None else [config.weights[k] for k in voters]
            parts.append(
                fuse(
                    subsets,
                    config.method,
                    image_hw=(height, width),
                    weights=weights,
                    iou=config.iou,
                    conf=config.conf,
                    conf_type=config.conf_type,
                    sigma=config.sigma,
                    soft_threshold=config.soft_threshold,
                    soft_method=config.soft_method,
                    min_votes=config.min_votes,
                )
            )
    if not parts:
        return Detections.empty(class_names)
    fused = Detections.concatenate(parts)
    return fused[np.argsort(-fused.confidence, kind="stable")[:max_det]]


def _to_ensemble(detections: Detections, to_ensemble: np.ndarray, names: tuple[str, ...]) -> Detections:
    """A member's detections with class ids of the ensemble's class list (other data dropped)."""
    return Detections(
        xyxy=detections.xyxy,
        confidence=detections.confidence,
        class_id=to_ensemble[detections.class_id],
        class_names=names,
    )


__all__ = ["FusionConfig", "fuse_members"]
