"""Pure NumPy box geometry. Boxes are float arrays of shape (N, 4); nothing here allocates per box.

Sizes: one convention in all of visionpipe. A size held as one pair is **(height, width)** —
``Result.image_size``, ``input_size`` (spec key, ``Pipeline`` keyword, ``--input-size 480,640``),
``fuse(image_hw=...)``, ``declared_size()``, the deployment manifest's ``input_size``. That is the
order of NumPy shapes: ``image.shape[:2]`` is (height, width) for every image OpenCV, Pillow-to-NumPy
or a video decoder hands over, so a size can be taken from an array and compared with one without
reordering, and a model input (N, C, H, W) reads the same way. Ultralytics' ``imgsz`` pair and
ONNX/TensorRT input shapes are (height, width) too. The width-first APIs (OpenCV's ``cv2.resize``
``dsize``, ensemble-boxes, FiftyOne's relative boxes) are called at their edges only.

Where width and height travel as two numbers they are keyword-only (``clip_boxes(b, width=640,
height=480)``, ``Detections.to_yolo(width=..., height=...)``): a positional pair could be read in
either order, a named one cannot. Boxes themselves are (x1, y1, x2, y2): x along the width.
"""

from __future__ import annotations

import numpy as np

from visionpipe.errors import InputShapeError


def _as_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    """Validated (N, 4) float boxes; integer boxes are promoted so scaling never truncates."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputShapeError(f"{name} must have shape (N, 4), got {boxes.shape}")
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    return boxes


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (x, y, width, height), the COCO layout."""
    boxes = _as_boxes(boxes)
    out = boxes.copy()
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(x, y, width, height) -> (x1, y1, x2, y2)."""
    boxes = _as_boxes(boxes)
    out = boxes.copy()
    out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return out


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(centre x, centre y, width, height) -> (x1, y1, x2, y2)."""
    boxes = _as_boxes(boxes)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (centre x, centre y, width, height), the YOLO layout before normalising."""
    boxes = _as_boxes(boxes)
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + size / 2, size], axis=1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = _as_boxes(boxes)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix of shape (len(a), len(b)). Zero-area pairs have IoU 0, never NaN."""
    a = _as_boxes(boxes_a, "boxes_a")
    b = _as_boxes(boxes_b, "boxes_b")
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.result_type(a.dtype, b.dtype, np.float32), copy=False)


def clip_boxes(boxes: np.ndarray, *, width: float, height: float) -> np.ndarray:
    """Clip boxes to the image rectangle [0, width] x [0, height]; returns a new array.

    Example::

        clip_boxes(boxes, width=640, height=480)   # or: height, width = image.shape[:2]
    """
    boxes = _as_boxes(boxes)
    out = np.empty_like(boxes)
    np.clip(boxes[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=out[:, 1::2])
    return out


def scale_boxes(
    boxes: np.ndarray, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0
) -> np.ndarray:
    """Apply x' = x * scale_x + offset_x (and the same for y) to every corner."""
    boxes = _as_boxes(boxes)
    scale = np.array([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype)
    offset = np.array([offset_x, offset_y, offset_x, offset_y], dtype=boxes.dtype)
    return boxes * scale + offset
