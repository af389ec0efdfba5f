"""Each family's usual preprocessing and decoding, so a spec only says what differs.

Values follow each family's reference demo (see the shared assets' MANIFEST for the COCO models).
The score threshold is a production default; evaluation passes its own (e.g. 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass

from visionpipe.data import COCO80_NAMES
from visionpipe.models.decoders import DecodeParams
from visionpipe.preprocess import PreprocessConfig

ULTRALYTICS_INPUT = PreprocessConfig(
    resize="letterbox", anchor="center", pad_value=114, interpolation="linear", channel_order="rgb", scale=1 / 255
)


@dataclass(frozen=True)
class FamilyPreset:
    preprocess: PreprocessConfig
    params: DecodeParams
    # The classes the family's published weights detect, used when neither spec nor metadata names them.
    class_names: tuple[str, ...] = ()
    # For models with a dynamic input size, when neither spec nor metadata fixes one.
    input_size: tuple[int, int] | None = None


PRESETS: dict[str, FamilyPreset] = {
    "yolox": FamilyPreset(
        PreprocessConfig(
            resize="letterbox", anchor="top_left", pad_value=114, interpolation="linear", channel_order="bgr", scale=1.0
        ),
        DecodeParams(iou_threshold=0.65, multi_label=True),
        COCO80_NAMES,
    ),
    "nanodet": FamilyPreset(
        PreprocessConfig(
            resize="letterbox",
            anchor="center",
            pad_value=0,
            interpolation="area",
            channel_order="bgr",
            scale=1.0,
            mean=(103.53, 116.28, 123.675),
            std=(57.375, 57.12, 58.395),
        ),
        DecodeParams(iou_threshold=0.6, multi_label=True),
        COCO80_NAMES,
    ),
    "fastestdet": FamilyPreset(
        PreprocessConfig(resize="stretch", interpolation="area", channel_order="bgr", scale=1 / 255),
        DecodeParams(iou_threshold=0.45, multi_label=False),
        COCO80_NAMES,
    ),
    "yolov8": FamilyPreset(ULTRALYTICS_INPUT, DecodeParams(iou_threshold=0.7)),
    "yolov5": FamilyPreset(ULTRALYTICS_INPUT, DecodeParams(iou_threshold=0.45)),
    "end2end": FamilyPreset(ULTRALYTICS_INPUT, DecodeParams()),
    # PP-OCR det as PaddleOCR feeds it: BGR, x / 255, then (x - 0.5) / 0.5; shrunk to fit 960
    # (never enlarged), sides rounded to multiples of 32, no padding -- a padded border reads as a
    # text edge. score_threshold is DBNet's box threshold.
    "dbnet": FamilyPreset(
        PreprocessConfig(
            resize="fit",
            interpolation="linear",
            channel_order="bgr",
            scale=1 / 255,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            size_divisor=32,
        ),
        DecodeParams(score_threshold=0.5, max_det=1000),
        ("text",),
        input_size=(960, 960),
    ),
}

# Used when neither the model nor the spec fixes the input size (dynamic height and width).
DEFAULT_INPUT_SIZE = (640, 640)
