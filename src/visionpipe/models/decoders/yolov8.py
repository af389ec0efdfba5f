"""YOLOv8 / YOLO11 (Ultralytics, anchor-free): (B, 4 + C, N) — cx, cy, w, h in input pixels, then
class scores (sigmoid applied), no objectness. Channels come first, so N > 4 + C in practice."""

from __future__ import annotations

import numpy as np

from visionpipe.geometry import cxcywh_to_xyxy
from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders.base import (
    ULTRALYTICS_INPUT,
    Candidates,
    DecodeParams,
    Decoder,
    FamilyPreset,
    LayoutMismatch,
    as_int,
    expect_rank3,
    select_scores,
)


class Yolov8Decoder(Decoder):
    family = "yolov8"
    summary = "(B, 4+C, N): cx, cy, w, h in input pixels, then class scores (YOLOv8, YOLO11)"
    aliases = ("yolo11", "yolov11")
    preset = FamilyPreset(ULTRALYTICS_INPUT, DecodeParams(iou=0.7))

    def _bind(self, outputs: list[TensorInfo]) -> int | None:
        out = expect_rank3(outputs, self.family)
        channels, anchors = as_int(out.shape[1]), as_int(out.shape[2])
        if channels is None or channels < 5:
            raise LayoutMismatch("yolov8 expects (B, 4+C, N) with a fixed channel count")
        if anchors is not None and anchors <= channels:
            raise LayoutMismatch("yolov8 expects channels first: (B, 4+C, N) with N > 4+C")
        return channels - 4

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(pred.T, params) for pred in outputs[0]]

    def _decode_one(self, pred: np.ndarray, params: DecodeParams) -> Candidates:
        rows, class_ids, scores = select_scores(pred[:, 4:], params)
        return Candidates(cxcywh_to_xyxy(pred[rows, :4]), scores, class_ids)
