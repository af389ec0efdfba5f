"""What every decoder shares: the decode parameters, its family preset, the candidates it returns,
score selection.

A decoder family is one class in one module: its ``family`` name and ``aliases``, its ``preset``
(the preprocessing and thresholds of the family's reference demo, so a spec only says what
differs), the ``data`` keys of its candidates that hold points to map back to the original image
(``point_keys``), and the decoding itself. Registering it (:func:`visionpipe.models.decoders.register_decoder`,
an entry point, or a spec's ``decoder: {class: "pkg.module:Class"}``) is all the rest of visionpipe
needs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from visionpipe.errors import LayoutMismatch
from visionpipe.models.backend import TensorInfo
from visionpipe.preprocess import ChannelOrder, PadAnchor, PreprocessConfig, ResizeMode


@dataclass(frozen=True)
class DecodeParams:
    """Thresholds applied when turning raw outputs into detections, named as everywhere else (the
    ``Pipeline`` keywords, the CLI flags, the spec's ``thresholds``): ``conf``, ``iou``, ...

    ``classes`` keeps only those class ids; ``top_k`` keeps the best candidates before NMS and
    ``max_det`` caps the detections after it; ``multi_label`` keeps every (box, class) pair above
    the threshold instead of only the best class of each box.

    Example::

        DecodeParams(conf=0.3, iou=0.5, max_det=100)
    """

    conf: float = 0.25
    iou: float = 0.45
    multi_label: bool = False
    agnostic: bool = False
    classes: tuple[int, ...] | None = None
    top_k: int | None = 1000
    max_det: int = 300

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {self.conf}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")
        if self.max_det < 0 or (self.top_k is not None and self.top_k < 0):
            raise ValueError("top_k and max_det must not be negative")
        # stored as plain Python values, so params compare and hash alike however they were given
        normal = {
            "conf": float(self.conf),
            "iou": float(self.iou),
            "multi_label": bool(self.multi_label),
            "agnostic": bool(self.agnostic),
            "classes": None if self.classes is None else tuple(int(c) for c in self.classes),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class FamilyPreset:
    """A family's usual input handling and thresholds; every field of a spec overrides its own."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    params: DecodeParams = field(default_factory=DecodeParams)
    # The classes the family's published weights detect, used when neither spec nor metadata names them.
    class_names: tuple[str, ...] = ()
    # For models with a dynamic input size, when neither spec nor metadata fixes one.
    input_size: tuple[int, int] | None = None  # (height, width)


# How Ultralytics exports are fed (YOLOv5, YOLOv8/YOLO11, YOLOv10/YOLO26 end-to-end).
ULTRALYTICS_INPUT = PreprocessConfig(
    resize=ResizeMode.LETTERBOX,
    anchor=PadAnchor.CENTER,
    pad_value=114,
    interpolation="linear",
    channel_order=ChannelOrder.RGB,
    scale=1 / 255,
)


@dataclass(frozen=True)
class Candidates:
    """Boxes of one image before NMS, in model-input pixels (x1, y1, x2, y2).

    ``data`` holds extra per-box arrays; the entries the decoder names in ``Decoder.point_keys``
    (N, K, 2) are input-pixel points, mapped to the original image with the boxes.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    data: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class Decoder(ABC):
    """Turns one output family's raw tensors into per-image candidates.

    A decoder is bound to a model's output tensors and input size when built, and raises
    :class:`LayoutMismatch` if they are not of its family.
    """

    family: ClassVar[str]
    summary: ClassVar[str]
    # other names the family answers to in specs and metadata (``yolo11`` for ``yolov8``)
    aliases: ClassVar[tuple[str, ...]] = ()
    preset: ClassVar[FamilyPreset] = FamilyPreset()
    # keys of ``Candidates.data`` holding (N, K, 2) input-pixel points to map to the original image
    point_keys: ClassVar[tuple[str, ...]] = ()
    applies_nms: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()
    # When a layout fits several families, the least general one is taken (a YOLOX grid of exactly
    # the right cell count over a YOLOv5 layout that accepts any row count).
    generality: ClassVar[int] = 0

    def __init__(self, outputs: Sequence[TensorInfo], input_hw: tuple[int, int], **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise LayoutMismatch(
                f"unknown {self.family} decoder options {sorted(unknown)}; known: {list(self.options)}"
            )
        self.input_hw = input_hw
        self.num_classes: int | None = self._bind(list(outputs), **options)

    @abstractmethod
    def _bind(self, outputs: list[TensorInfo], **options: Any) -> int | None:
        """Check the outputs fit this family and prepare grids; return the class count if known."""

    @abstractmethod
    def decode(self, outputs: list[np.ndarray], params: DecodeParams) -> list[Candidates]:
        """One :class:`Candidates` per image of the batch (outputs carry a leading batch axis)."""


def select_scores(class_scores: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, class, score) of each kept pair from an (N, C) score matrix.

    Multi-label keeps every pair strictly above the threshold; otherwise each row's best allowed
    class, if above it.
    """
    if params.classes is not None:
        allowed = np.zeros(class_scores.shape[1], dtype=bool)
        allowed[[c for c in params.classes if 0 <= c < class_scores.shape[1]]] = True
        class_scores = np.where(allowed, class_scores, -np.inf)
    if params.multi_label:
        rows, cols = np.nonzero(class_scores > params.conf)
        return rows, cols, class_scores[rows, cols]
    cols = class_scores.argmax(axis=1)
    best = np.take_along_axis(class_scores, cols[:, None], axis=1)[:, 0]
    rows = np.flatnonzero(best > params.conf)
    return rows, cols[rows], best[rows]


def grid_points(input_hw: tuple[int, int], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates (gx, gy) of every level, row-major with x fastest, and each cell's stride."""
    cells, cell_strides = [], []
    for stride in strides:
        h, w = math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)
        gy, gx = np.mgrid[0:h, 0:w]
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        cell_strides.append(np.full(h * w, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def expect_rank3(outputs: list[TensorInfo], family: str) -> TensorInfo:
    if len(outputs) != 1 or len(outputs[0].shape) != 3:
        raise LayoutMismatch(f"{family} expects one output of rank 3")
    return outputs[0]


def as_int(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None
