"""End-to-end detectors with NMS inside the graph: (B, K, 6) = x1, y1, x2, y2, score, class.

Used by YOLOv10, YOLO26 and Ultralytics exports with ``nms=True``; padding rows have score 0.
"""

from __future__ import annotations

import numpy as np

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
)


class End2EndDecoder(Decoder):
    family = "end2end"
    summary = "(B, K, 6): x1, y1, x2, y2, score, class after in-graph NMS"
    aliases = ("yolov10", "yolo26")
    preset = FamilyPreset(ULTRALYTICS_INPUT, DecodeParams())
    applies_nms = False

    def _bind(self, outputs: list[TensorInfo]) -> int | None:
        out = expect_rank3(outputs, self.family)
        if as_int(out.shape[2]) != 6:
            raise LayoutMismatch("end2end expects (B, K, 6)")
        return None

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(pred, params) for pred in outputs[0]]

    def _decode_one(self, pred: np.ndarray, params: DecodeParams) -> Candidates:
        keep = pred[:, 4] > params.conf
        class_ids = pred[:, 5].astype(np.int64)
        if params.classes is not None:
            keep &= np.isin(class_ids, params.classes)
        pred = pred[keep]
        # corners may come unordered from some exports; a box is the same whichever corner is first
        xyxy = np.concatenate([np.minimum(pred[:, 0:2], pred[:, 2:4]), np.maximum(pred[:, 0:2], pred[:, 2:4])], axis=1)
        return Candidates(xyxy.astype(np.float32), pred[:, 4].astype(np.float32), class_ids[keep])
