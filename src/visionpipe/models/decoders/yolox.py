"""YOLOX (anchor-free, decoupled head): (B, N, 5 + C) with N grid cells over strides 8/16/32.

Columns: dx, dy, log w, log h (raw), objectness and class scores (sigmoid applied);
centre = (d + cell) * stride, size = exp(log size) * stride, score = objectness * class score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionpipe.data import COCO80_NAMES
from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders.base import (
    Candidates,
    DecodeParams,
    Decoder,
    FamilyPreset,
    LayoutMismatch,
    as_int,
    expect_rank3,
    grid_points,
    select_scores,
)
from visionpipe.preprocess import ChannelOrder, PadAnchor, PreprocessConfig, ResizeMode


class YoloxDecoder(Decoder):
    family = "yolox"
    summary = "(B, cells, 5+C): dx, dy, log w, log h, objectness, class scores over strides 8/16/32"
    preset = FamilyPreset(
        PreprocessConfig(
            resize=ResizeMode.LETTERBOX,
            anchor=PadAnchor.TOP_LEFT,
            pad_value=114,
            interpolation="linear",
            channel_order=ChannelOrder.BGR,
            scale=1.0,
        ),
        DecodeParams(iou=0.65, multi_label=True),
        COCO80_NAMES,
    )
    options = ("strides",)

    def _bind(self, outputs: list[TensorInfo], strides: Sequence[int] = (8, 16, 32)) -> int | None:
        out = expect_rank3(outputs, self.family)
        self.cells, self.cell_strides = grid_points(self.input_hw, strides)
        cells, channels = as_int(out.shape[1]), as_int(out.shape[2])
        if channels is None or channels < 6:
            raise LayoutMismatch(f"yolox expects (B, {len(self.cells)}, 5+C)")
        if cells is not None and cells != len(self.cells):
            raise LayoutMismatch(
                f"yolox at input {self.input_hw} with strides {tuple(strides)} has {len(self.cells)} cells, "
                f"the output has {cells}"
            )
        return channels - 5

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(pred, params) for pred in outputs[0]]

    def _decode_one(self, pred: np.ndarray, params: DecodeParams) -> Candidates:
        # Rows whose best possible score cannot pass the threshold are dropped before the (C-wide)
        # score matrix is formed: at low thresholds most cells still go, at high ones nearly all.
        objectness = pred[:, 4]
        live = np.flatnonzero(objectness * pred[:, 5:].max(axis=1) > params.conf)
        pred = pred[live]
        rows, class_ids, scores = select_scores(pred[:, 4:5] * pred[:, 5:], params)
        cell = live[rows]
        stride = self.cell_strides[cell, None]
        centre = (pred[rows, 0:2] + self.cells[cell]) * stride
        half = np.exp(pred[rows, 2:4]) * stride / 2
        return Candidates(np.concatenate([centre - half, centre + half], axis=1), scores, class_ids)
