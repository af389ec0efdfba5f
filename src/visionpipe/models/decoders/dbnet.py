"""DBNet text detection (PP-OCR det): a text probability map (B, 1, H, W) at input resolution.

The map has the size of the input tensor, which may differ per image ("fit" preprocessing), so
boxes are read in map pixels = input pixels and clipped to the map.

The map is binarised, each connected region becomes a rotated rectangle scored by the mean
probability inside it, and rectangles are grown ("unclipped") by area * ratio / perimeter on every
side, since DBNet learns shrunk text kernels. Boxes carry their 4-point polygon in ``data``.
"""

from __future__ import annotations

import cv2
import numpy as np

from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders.base import (
    Candidates,
    DecodeParams,
    Decoder,
    FamilyPreset,
    LayoutMismatch,
    as_int,
)
from visionpipe.preprocess import ChannelOrder, PreprocessConfig, ResizeMode

_DILATE = np.ones((2, 2), np.uint8)


class DbnetDecoder(Decoder):
    family = "dbnet"
    summary = "(B, 1, H, W): text probability map -> rotated boxes and polygons (PP-OCR det)"
    aliases = ("ppocr", "db")
    # PP-OCR det as PaddleOCR feeds it: BGR, x / 255, then (x - 0.5) / 0.5; shrunk to fit 960
    # (never enlarged), sides rounded to multiples of 32, no padding -- a padded border reads as a
    # text edge. conf is DBNet's box threshold.
    preset = FamilyPreset(
        PreprocessConfig(
            resize=ResizeMode.FIT,
            interpolation="linear",
            channel_order=ChannelOrder.BGR,
            scale=1 / 255,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            size_divisor=32,
        ),
        DecodeParams(conf=0.5, max_det=1000),
        ("text",),
        input_size=(960, 960),
    )
    point_keys = ("polygon",)
    applies_nms = False
    options = ("binary_threshold", "unclip_ratio", "min_size", "max_candidates", "dilate")

    def _bind(
        self,
        outputs: list[TensorInfo],
        binary_threshold: float = 0.3,
        unclip_ratio: float = 1.6,
        min_size: float = 3.0,
        max_candidates: int = 1000,
        dilate: bool = True,
    ) -> int | None:
        if len(outputs) != 1 or len(outputs[0].shape) != 4 or as_int(outputs[0].shape[1]) != 1:
            raise LayoutMismatch("dbnet expects one probability map (B, 1, H, W)")
        self.binary_threshold = binary_threshold
        self.unclip_ratio = unclip_ratio
        self.min_size = min_size
        self.max_candidates = max_candidates
        self.dilate = dilate
        return 1

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(prob[0], params) for prob in outputs[0]]

    def _decode_one(self, prob: np.ndarray, params: DecodeParams) -> Candidates:
        mask = (prob > self.binary_threshold).astype(np.uint8)
        if self.dilate:
            mask = cv2.dilate(mask, _DILATE)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        height, width = prob.shape

        polygons, scores = [], []
        for contour in contours[: self.max_candidates]:
            (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
            if min(w, h) < self.min_size:
                continue
            score = _mean_inside(prob, contour)
            if score <= params.conf:
                continue
            grow = w * h * self.unclip_ratio / (2 * (w + h))
            w, h = w + 2 * grow, h + 2 * grow
            if min(w, h) < self.min_size + 2:
                continue
            points = cv2.boxPoints(((cx, cy), (w, h), angle))
            points[:, 0] = np.clip(points[:, 0], 0, width)
            points[:, 1] = np.clip(points[:, 1], 0, height)
            polygons.append(points)
            scores.append(score)
        if not polygons:
            empty = Candidates.empty()
            return Candidates(empty.xyxy, empty.scores, empty.class_ids, {"polygon": np.zeros((0, 4, 2), np.float32)})
        poly = np.asarray(polygons, np.float32)
        xyxy = np.concatenate([poly.min(axis=1), poly.max(axis=1)], axis=1)
        return Candidates(xyxy, np.asarray(scores, np.float32), np.zeros(len(poly), np.int64), {"polygon": poly})


def _mean_inside(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside a contour, computed on its bounding rectangle only."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - (x, y)], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask)[0])
