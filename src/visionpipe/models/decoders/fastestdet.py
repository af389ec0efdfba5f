"""FastestDet: one stride-16 map (B, 5 + C, H, W).

Per cell: objectness (sigmoid applied), 4 raw box values, class probabilities (softmax applied).
cx = (col + tanh(t0)) / W, cy = (row + tanh(t1)) / H, w = sigmoid(t2), h = sigmoid(t3), all relative
to the input; score = objectness^0.6 * class^0.4.
"""

from __future__ import annotations

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
    select_scores,
)
from visionpipe.preprocess import ChannelOrder, PreprocessConfig, ResizeMode


class FastestdetDecoder(Decoder):
    family = "fastestdet"
    summary = "(B, 5+C, H, W): objectness, 4 box values, class probabilities per cell"
    preset = FamilyPreset(
        PreprocessConfig(
            resize=ResizeMode.STRETCH, interpolation="area", channel_order=ChannelOrder.BGR, scale=1 / 255
        ),
        DecodeParams(iou=0.45, multi_label=False),
        COCO80_NAMES,
    )
    options = ("objectness_power", "class_power")

    def _bind(self, outputs: list[TensorInfo], objectness_power: float = 0.6, class_power: float = 0.4) -> int | None:
        if len(outputs) != 1 or len(outputs[0].shape) != 4:
            raise LayoutMismatch("fastestdet expects one output of rank 4 (B, 5+C, H, W)")
        channels = as_int(outputs[0].shape[1])
        if channels is None or channels < 6:
            raise LayoutMismatch("fastestdet expects (B, 5+C, H, W) with C >= 1")
        self.objectness_power = objectness_power
        self.class_power = class_power
        return channels - 5

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        return [self._decode_one(feature, params) for feature in outputs[0]]

    def _decode_one(self, feature: np.ndarray, params: DecodeParams) -> Candidates:
        channels, grid_h, grid_w = feature.shape
        cells = feature.reshape(channels, -1).T  # (H*W, 5+C), row-major cells
        scores = (cells[:, 0:1] ** self.objectness_power) * (cells[:, 5:] ** self.class_power)
        rows, class_ids, kept = select_scores(scores, params)
        box = cells[rows, 1:5]
        cx = (rows % grid_w + np.tanh(box[:, 0])) / grid_w
        cy = (rows // grid_w + np.tanh(box[:, 1])) / grid_h
        w = 1.0 / (1.0 + np.exp(-box[:, 2]))
        h = 1.0 / (1.0 + np.exp(-box[:, 3]))
        in_h, in_w = self.input_hw
        xyxy = np.stack([(cx - w / 2) * in_w, (cy - h / 2) * in_h, (cx + w / 2) * in_w, (cy + h / 2) * in_h], axis=1)
        return Candidates(xyxy.astype(np.float32), kept.astype(np.float32), class_ids)
