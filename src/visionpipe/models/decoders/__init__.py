"""Decoders, one module per output family, and the registry that finds the one a model needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visionpipe.errors import UnknownOutputLayoutError
from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders.base import (
    Candidates,
    DecodeParams,
    Decoder,
    LayoutMismatch,
)
from visionpipe.models.decoders.dbnet import DbnetDecoder
from visionpipe.models.decoders.end2end import End2EndDecoder
from visionpipe.models.decoders.fastestdet import FastestdetDecoder
from visionpipe.models.decoders.nanodet import NanodetDecoder
from visionpipe.models.decoders.yolov5 import Yolov5Decoder
from visionpipe.models.decoders.yolov8 import Yolov8Decoder
from visionpipe.models.decoders.yolox import YoloxDecoder

DECODERS: dict[str, type[Decoder]] = {
    cls.family: cls
    for cls in (
        YoloxDecoder,
        NanodetDecoder,
        FastestdetDecoder,
        Yolov8Decoder,
        Yolov5Decoder,
        End2EndDecoder,
        DbnetDecoder,
    )
}
FAMILY_ALIASES = {
    "yolo11": "yolov8",
    "yolov11": "yolov8",
    "yolov10": "end2end",
    "yolo26": "end2end",
    "ppocr": "dbnet",
    "db": "dbnet",
}


def canonical_family(family: str) -> str:
    name = family.lower().strip()
    return FAMILY_ALIASES.get(name, name)


def build_decoder(
    family: str, outputs: Sequence[TensorInfo], input_hw: tuple[int, int], options: dict[str, Any] | None = None
) -> Decoder:
    """The decoder of ``family`` bound to these outputs, or a typed error that says why not."""
    name = canonical_family(family)
    shapes = [o.shape for o in outputs]
    if name not in DECODERS:
        raise UnknownOutputLayoutError(f"unknown decoder family {family!r}", shapes, sorted(DECODERS))
    try:
        return DECODERS[name](outputs, input_hw, **(options or {}))
    except LayoutMismatch as exc:
        raise UnknownOutputLayoutError(f"outputs do not fit family {name!r}: {exc}", shapes, sorted(DECODERS)) from None


def matching_families(outputs: Sequence[TensorInfo], input_hw: tuple[int, int]) -> list[str]:
    """Every family whose decoder accepts these outputs with default options."""
    matches = []
    for name, cls in DECODERS.items():
        try:
            cls(outputs, input_hw)
        except LayoutMismatch:
            continue
        matches.append(name)
    return matches


__all__ = [
    "DECODERS",
    "Candidates",
    "DecodeParams",
    "Decoder",
    "build_decoder",
    "canonical_family",
    "matching_families",
]
