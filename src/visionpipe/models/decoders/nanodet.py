"""NanoDet (GFL head): per stride, class scores (N, C) and box distributions (N, 4 * (reg_max + 1)).

Tensors are identified by shape, never by name: some exports name them wrongly. Each side's
distance is the expectation of a softmax over reg_max + 1 bins, times the stride, measured from the
cell point (gx * s + (s - 1) / 2, gy * s + (s - 1) / 2).
"""

from __future__ import annotations

import math
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
    select_scores,
)
from visionpipe.preprocess import ChannelOrder, PadAnchor, PreprocessConfig, ResizeMode


class NanodetDecoder(Decoder):
    family = "nanodet"
    summary = "per stride 8/16/32: class scores (N, C) and GFL distributions (N, 4*(reg_max+1)), matched by shape"
    preset = FamilyPreset(
        PreprocessConfig(
            resize=ResizeMode.LETTERBOX,
            anchor=PadAnchor.CENTER,
            pad_value=0,
            interpolation="area",
            channel_order=ChannelOrder.BGR,
            scale=1.0,
            mean=(103.53, 116.28, 123.675),
            std=(57.375, 57.12, 58.395),
        ),
        DecodeParams(iou=0.6, multi_label=True),
        COCO80_NAMES,
    )
    options = ("strides", "reg_max")

    def _bind(self, outputs: list[TensorInfo], strides: Sequence[int] = (8, 16, 32), reg_max: int = 7) -> int | None:
        self.bins = reg_max + 1
        sizes = {}
        for stride in strides:
            h, w = math.ceil(self.input_hw[0] / stride), math.ceil(self.input_hw[1] / stride)
            sizes[h * w] = (stride, h, w)
        if len(outputs) != 2 * len(strides):
            raise LayoutMismatch(f"nanodet expects {2 * len(strides)} outputs (scores and boxes per stride)")

        # (output index of scores, output index of boxes) per stride, found by (cells, channels)
        self.levels: list[tuple[int, int, int]] = []
        num_classes = None
        found: dict[int, dict[str, int]] = {}
        for index, info in enumerate(outputs):
            dims = [as_int(d) for d in info.shape]
            dims = dims[1:] if len(dims) == 3 else dims  # with or without a batch axis
            if len(dims) != 2 or dims[0] not in sizes or dims[1] is None:
                raise LayoutMismatch(f"nanodet output {info.name} {info.shape} is not (cells, channels) of a stride")
            kind = "boxes" if dims[1] == 4 * self.bins else "scores"
            if kind == "scores":
                if num_classes not in (None, dims[1]):
                    raise LayoutMismatch("nanodet score outputs disagree on the number of classes")
                num_classes = dims[1]
            slot = found.setdefault(dims[0], {})
            if kind in slot:
                raise LayoutMismatch(f"nanodet found two {kind} outputs with {dims[0]} cells")
            slot[kind] = index
        points, point_strides = [], []
        for cells, (stride, h, w) in sorted(sizes.items(), key=lambda kv: kv[1][0]):
            slot = found.get(cells, {})
            if set(slot) != {"scores", "boxes"}:
                raise LayoutMismatch(f"nanodet is missing scores or boxes for stride {stride}")
            self.levels.append((slot["scores"], slot["boxes"], stride))
            gy, gx = np.mgrid[0:h, 0:w]
            points.append(np.stack([gx.ravel(), gy.ravel()], axis=1) * stride + (stride - 1) / 2)
            point_strides.append(np.full(h * w, stride))
        self.points = np.concatenate(points).astype(np.float32)
        self.point_strides = np.concatenate(point_strides).astype(np.float32)
        return num_classes

    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        scores = np.concatenate([outputs[s] for s, _, _ in self.levels], axis=1)
        dists = np.concatenate([outputs[b] for _, b, _ in self.levels], axis=1)
        return [self._decode_one(s, d, params) for s, d in zip(scores, dists)]

    def _decode_one(self, scores: np.ndarray, dists: np.ndarray, params: DecodeParams) -> Candidates:
        rows, class_ids, kept_scores = select_scores(scores, params)
        cells = np.unique(rows)  # decode each box once, even when several classes keep it
        logits = dists[cells].reshape(-1, 4, self.bins)
        logits = logits - logits.max(axis=2, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=2, keepdims=True)
        distance = (prob @ np.arange(self.bins, dtype=np.float32)) * self.point_strides[cells, None]
        point = np.concatenate([self.points[cells], self.points[cells]], axis=1)
        boxes = point + distance * np.array([-1, -1, 1, 1], np.float32)
        h, w = self.input_hw
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return Candidates(boxes[np.searchsorted(cells, rows)], kept_scores, class_ids)
