"""Image -> model input tensor, returning the exact transform that maps boxes back.

Every resize mode records the scale and offset it really applied (per axis, after rounding the
resized size to whole pixels), so ``transform.to_original(transform.to_input(boxes)) == boxes`` up
to float rounding and decoded boxes land on the original image without drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from visionpipe.errors import InputShapeError
from visionpipe.geometry import clip_boxes, scale_boxes


class ResizeMode(str, Enum):
    STRETCH = "stretch"  # resize to the input size, ignoring aspect ratio
    LETTERBOX = "letterbox"  # keep aspect ratio, pad the rest
    # keep aspect ratio, shrink to fit the input size (never enlarge), round each side to a multiple
    # of size_divisor, no padding: tensors differ in shape per image (dynamic-size models, PP-OCR)
    FIT = "fit"


class PadAnchor(str, Enum):
    TOP_LEFT = "top_left"
    CENTER = "center"


class ChannelOrder(str, Enum):
    BGR = "bgr"
    RGB = "rgb"


INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How one model wants its input. ``(pixel * scale - mean) / std`` per channel, in ``channel_order``.

    Example::

        PreprocessConfig(resize="letterbox", anchor="top_left", pad_value=114, channel_order="bgr", scale=1.0)
    """

    resize: ResizeMode = ResizeMode.LETTERBOX
    anchor: PadAnchor = PadAnchor.CENTER
    pad_value: float = 114.0
    interpolation: str = "linear"
    channel_order: ChannelOrder = ChannelOrder.RGB
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_divisor: int = 32  # "fit" only

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", ResizeMode(self.resize))
        object.__setattr__(self, "anchor", PadAnchor(self.anchor))
        object.__setattr__(self, "channel_order", ChannelOrder(self.channel_order))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"{name} needs 3 values (one per channel), got {values}")
            object.__setattr__(self, name, values)
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain zeros")
        if self.size_divisor < 1:
            raise ValueError("size_divisor must be at least 1")


@dataclass(frozen=True)
class BoxTransform:
    """input = original * scale + offset, per axis; the inverse maps model boxes to the original image.

    Example::

        tensor, transform = preprocess(image, (416, 416), config)
        transform.to_original(xyxy_in_tensor_pixels)
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    original_width: int
    original_height: int

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        return scale_boxes(boxes, self.scale_x, self.scale_y, self.offset_x, self.offset_y)

    def to_original(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        out = scale_boxes(
            boxes,
            1.0 / self.scale_x,
            1.0 / self.scale_y,
            -self.offset_x / self.scale_x,
            -self.offset_y / self.scale_y,
        )
        return clip_boxes(out, width=self.original_width, height=self.original_height) if clip else out

    def points_to_original(self, points: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map (..., 2) input-pixel points (e.g. polygons) to the original image."""
        out = (np.asarray(points, dtype=np.float32) - (self.offset_x, self.offset_y)) / (self.scale_x, self.scale_y)
        if clip:
            np.clip(out[..., 0], 0, self.original_width, out=out[..., 0])
            np.clip(out[..., 1], 0, self.original_height, out=out[..., 1])
        return out.astype(np.float32, copy=False)


def preprocess(
    image: np.ndarray, input_size: tuple[int, int], config: PreprocessConfig
) -> tuple[np.ndarray, BoxTransform]:
    """Resize/pad/normalise one HxWx3 uint8 BGR image into a (3, H, W) float32 tensor.

    ``input_size`` is (height, width) of the model input (the largest allowed, for "fit").

    Example::

        tensor, transform = preprocess(image, (416, 416), PreprocessConfig(resize="letterbox"))
        boxes_in_image = transform.to_original(boxes_in_tensor)
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputShapeError(f"expected an HxWx3 BGR image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputShapeError(f"image has no pixels: shape {image.shape}")
    canvas, transform = resize_to_input(image, input_size, config)
    return to_tensor(canvas, config), transform


def resize_to_input(
    image: np.ndarray, input_size: tuple[int, int], config: PreprocessConfig
) -> tuple[np.ndarray, BoxTransform]:
    """The geometric half of :func:`preprocess`: an input-sized uint8 image and its transform."""
    height, width = image.shape[:2]
    in_h, in_w = input_size
    interpolation = INTERPOLATIONS[config.interpolation]

    if config.resize is ResizeMode.STRETCH:
        resized = cv2.resize(image, (in_w, in_h), interpolation=interpolation)
        return resized, BoxTransform(in_w / width, in_h / height, 0.0, 0.0, width, height)

    if config.resize is ResizeMode.FIT:
        ratio = min(1.0, in_h / height, in_w / width)
        step = config.size_divisor
        new_w = max(step, min(in_w // step * step, round(width * ratio / step) * step))
        new_h = max(step, min(in_h // step * step, round(height * ratio / step) * step))
        resized = (
            image
            if (new_w, new_h) == (width, height)
            else cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        )
        return resized, BoxTransform(new_w / width, new_h / height, 0.0, 0.0, width, height)

    # (w, h) * min(in_w / w, in_h / h), truncated as the reference demos do, but in integers:
    # float ratios land just below whole numbers often enough to lose a pixel row.
    if in_w * height <= in_h * width:
        new_w, new_h = in_w, max(1, height * in_w // width)
    else:
        new_w, new_h = max(1, width * in_h // height), in_h
    if config.anchor is PadAnchor.TOP_LEFT:
        left, top = 0, 0
    else:
        left, top = (in_w - new_w) // 2, (in_h - new_h) // 2
    resized = (
        image if (new_w, new_h) == (width, height) else cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    )
    canvas = cv2.copyMakeBorder(
        resized,
        top,
        in_h - new_h - top,
        left,
        in_w - new_w - left,
        cv2.BORDER_CONSTANT,
        value=(config.pad_value,) * 3,
    )
    return canvas, BoxTransform(new_w / width, new_h / height, float(left), float(top), width, height)


def to_tensor(canvas: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 (3, H, W) in the model's channel order and normalisation.

    ``mean`` and ``std`` are given in the model's channel order, the order the tensor ends up in.
    """
    if config.channel_order is ChannelOrder.RGB:
        canvas = canvas[:, :, ::-1]
    tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    if config.scale != 1.0:
        tensor *= np.float32(config.scale)
    if mean.any():
        tensor -= mean[:, None, None]
    if (std != 1).any():
        tensor /= std[:, None, None]
    return tensor
