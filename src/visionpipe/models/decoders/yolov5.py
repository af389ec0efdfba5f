"""YOLOv5-style anchor-based heads: (B, N, 5 + C) — box, objectness, class scores.

Two forms exist. The usual export decodes inside the graph (cx, cy, w, h in input pixels,
probabilities). A raw head exports grid offsets: give ``anchors`` (per level, w/h pairs in input
pixels) and ``strides`` and the decoder applies YOLOv5's grid: xy = (2 sigmoid(t) - 0.5 + cell) *
stride, wh = (2 sigmoid(t))^2 * anchor. Raw rows are ordered level, anchor, row, column (as
YOLOv5's Detect layer reshapes them). ``logits: false`` if the raw head already applied sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


class Yolov5Decoder(Decoder):
    family = "yolov5"
    summary = "(B, N, 5+C): cx, cy, w, h, objectness, class scores (decoded, or raw with anchors in the spec)"
    preset = FamilyPreset(ULTRALYTICS_INPUT, DecodeParams(iou=0.45))
    options = ("anchors", "strides", "logits")
    generality = 1

    def _bind(
        self,
        outputs: list[TensorInfo],
        anchors: Sequence[Sequence[float]] | None = None,
        strides: Sequence[int] = (8, 16, 32),
        logits: bool = True,
    ) -> int | None:
        out = expect_rank3(outputs, self.family)
        rows, channels = as_int(out.shape[1]), as_int(out.shape[2])
        if channels is None or channels < 6:
            raise LayoutMismatch("yolov5 expects (B, N, 5+C) with a fixed channel count")
        if rows is not None and rows <= channels:
            raise LayoutMismatch("yolov5 expects rows first: (B, N, 5+C) with N > 5+C")
        self.raw = anchors is not None
        self.logits = logits
        if self.raw:
            if len(anchors) != len(strides):
                raise LayoutMismatch(
                    f"yolov5 needs one anchor list per stride: {len(anchors)} lists, {len(strides)} strides"
                )
            cells, cell_strides, anchor_wh = [], [], []
            for level, stride in zip(anchors, strides):
                pairs = np.asarray(level, np.float32).reshape(-1, 2)
                h, w = math.ceil(self.input_hw[0] / stride), math.ceil(self.input_hw[1] / stride)
                gy, gx = np.mgrid[0:h, 0:w]
                grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
                for pair in pairs:
                    cells.append(grid)
                    cell_strides.append(np.full(h * w, stride))
                    anchor_wh.append(np.repeat(pair[None], h * w, axis=0))
            self.cells = np.concatenate(cells).astype(np.float32)
            self.cell_strides = np.concatenate(cell_strides).astype(np.float32)[:, None]
            self.anchor_wh = np.concatenate(anchor_wh).astype(np.float32)
            if rows is not None and rows != len(self.cells):
                raise LayoutMismatch(f"yolov5 anchors and strides give {len(self.cells)} rows, the output has {rows}")
        return channels - 5

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(pred, params) for pred in outputs[0]]

    def _decode_one(self, pred: np.ndarray, params: DecodeParams) -> Candidates:
        if self.raw and self.logits:
            pred = 1.0 / (1.0 + np.exp(-pred))
        rows, class_ids, scores = select_scores(pred[:, 4:5] * pred[:, 5:], params)
        box = pred[rows, :4]
        if self.raw:
            stride = self.cell_strides[rows]
            centre = (box[:, :2] * 2 - 0.5 + self.cells[rows]) * stride
            size = (box[:, 2:] * 2) ** 2 * self.anchor_wh[rows]
            box = np.concatenate([centre, size], axis=1)
        return Candidates(cxcywh_to_xyxy(box).astype(np.float32), scores.astype(np.float32), class_ids)
