"""Per-image features, cheap: image statistics on a downscaled copy, and prediction statistics.

Every feature is one float per image (NaN where it is undefined, e.g. the mean confidence of an
image without detections). Image statistics are taken on a copy shrunk so that its longer side is
``SMALL_SIDE`` pixels (colour statistics on a copy half that size); ``blockiness`` and ``noise``
read every ``ROW_STEP``-th full-resolution row instead, because JPEG's 8x8 block grid and pixel
noise do not survive downscaling. About 0.1 ms of CPU per 640x480 frame on an idle core.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from visionpipe.detections import Detections

SMALL_SIDE = 96
DARK_LEVEL = 16  # gray level at or below which a pixel counts as clipped dark
BRIGHT_LEVEL = 239  # ... at or above which it counts as clipped bright
ROW_STEP = 32  # blockiness and noise read every 32nd row of the full-resolution image

IMAGE_FEATURES = (
    "brightness",
    "contrast",
    "sharpness",
    "saturation",
    "colourfulness",
    "dark_share",
    "bright_share",
    "blockiness",
    "noise",
    "width",
    "height",
    "aspect",
    "mean_b",
    "mean_g",
    "mean_r",
)
PREDICTION_FEATURES = (
    "count",
    "empty",
    "confidence_mean",
    "confidence_min",
    "confidence_max",
    "low_confidence_share",
    "box_area_mean",
    "box_aspect_mean",
)
LATENCY_FEATURES = ("decode_seconds", "preprocess_seconds", "infer_seconds", "postprocess_seconds", "total_seconds")

# what each feature means, for the report and the README
DESCRIPTIONS = {
    "brightness": "mean gray level (0-255)",
    "contrast": "RMS contrast: standard deviation of the gray level",
    "sharpness": "variance of the Laplacian of the gray image",
    "saturation": "mean HSV saturation (0-255)",
    "colourfulness": "Hasler-Suesstrunk colourfulness",
    "dark_share": f"share of pixels with gray <= {DARK_LEVEL}",
    "bright_share": f"share of pixels with gray >= {BRIGHT_LEVEL}",
    "blockiness": "JPEG 8x8 block-edge strength: mean step across block borders / mean step elsewhere",
    "noise": "mean absolute second difference along full-resolution rows (pixel noise)",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "aspect": "width / height",
    "mean_b": "mean blue",
    "mean_g": "mean green",
    "mean_r": "mean red",
    "count": "detections per image",
    "empty": "1 when the image has no detection",
    "confidence_mean": "mean detection confidence",
    "confidence_min": "lowest detection confidence",
    "confidence_max": "highest detection confidence",
    "low_confidence_share": "share of detections under the low-confidence level",
    "box_area_mean": "mean box area / image area",
    "box_aspect_mean": "mean box width / height",
}


def downscale(image: np.ndarray, side: int = SMALL_SIDE) -> np.ndarray:
    """The image shrunk (never enlarged) so that its longer side is ``side`` pixels.

    Nearest-neighbour sampling, not averaging: it reads only the sampled rows of the frame, and
    these statistics are means over thousands of sampled pixels, which need no alias-free copy.
    In a loaded pipeline, reading the frame and the number of calls, not the arithmetic, are most
    of the cost.
    """
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


def _sparse_rows(image: np.ndarray) -> np.ndarray:
    """Every ``ROW_STEP``-th full-resolution row of the green channel (closest to luma), contiguous."""
    return np.ascontiguousarray(image[::ROW_STEP, :, 1])


def blockiness(image: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Mean absolute horizontal step across 8-pixel column borders over the mean step elsewhere.

    About 1 for natural photos and high-quality JPEG; well above 1 for heavy JPEG compression.
    """
    if image.shape[1] < 16:
        return float("nan")
    rows = _sparse_rows(image) if rows is None else rows
    steps = cv2.absdiff(rows[:, 1:], rows[:, :-1])  # steps[:, j] is between column j and j+1
    border_steps = steps[:, 7::8]
    border = float(border_steps.sum(dtype=np.int64))
    inside = (float(steps.sum(dtype=np.int64)) - border) / (steps.size - border_steps.size)
    return border / border_steps.size / inside if inside > 0 else float("nan")


def noise(image: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Mean absolute second difference along sparse full-resolution rows of the green channel.

    Edges contribute too, but sensor or transmission noise raises it far more than scene content.
    """
    if image.shape[1] < 3:
        return float("nan")
    rows = _sparse_rows(image) if rows is None else rows
    # a 1x3 Sobel of order 2 is the kernel [1, -2, 1]; the first and last columns are padding
    second = cv2.Sobel(rows, cv2.CV_16S, 2, 0, ksize=1)[:, 1:-1]
    return float(cv2.norm(second, cv2.NORM_L1)) / second.size


# (r - g, (r + g) / 2 - b) of a BGR pixel: the opponent channels of Hasler-Suesstrunk colourfulness
OPPONENT = np.array([[0.0, -1.0, 1.0], [-1.0, 0.5, 0.5]], np.float32)


def image_features(image: np.ndarray) -> dict[str, float]:
    """The image statistics of one BGR uint8 image (see ``DESCRIPTIONS``).

    Each statistic is one OpenCV call on a small array: on arrays this size the number of calls,
    not the arithmetic, is most of the cost (each call also hands Python's lock to other threads).
    """
    height, width = image.shape[:2]
    small = downscale(image)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    mean_b, mean_g, mean_r, _ = cv2.mean(small)
    gray_mean, gray_std = cv2.meanStdDev(gray)
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))  # exact in 16 bits for 8-bit input
    tiny = downscale(small, SMALL_SIDE // 2)  # colour statistics need even fewer pixels
    saturation = cv2.mean(cv2.cvtColor(tiny, cv2.COLOR_BGR2HSV))[1]
    opponent_mean, opponent_std = cv2.meanStdDev(cv2.transform(tiny.astype(np.float32), OPPONENT))
    colourfulness = math.hypot(*opponent_std[:, 0]) + 0.3 * math.hypot(*opponent_mean[:, 0])
    histogram = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    pixels = gray.size
    rows = _sparse_rows(image) if image.shape[1] >= 3 else None
    return {
        "brightness": float(gray_mean[0, 0]),
        "contrast": float(gray_std[0, 0]),
        "sharpness": float(laplacian_std[0, 0]) ** 2,
        "saturation": float(saturation),
        "colourfulness": float(colourfulness),
        "dark_share": float(histogram[: DARK_LEVEL + 1].sum()) / pixels,
        "bright_share": float(histogram[BRIGHT_LEVEL:].sum()) / pixels,
        "blockiness": blockiness(image, rows),
        "noise": noise(image, rows),
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
        "mean_b": mean_b,
        "mean_g": mean_g,
        "mean_r": mean_r,
    }


def prediction_features(
    detections: Detections, image_size: tuple[int, int] | None, low_confidence: float = 0.5
) -> dict[str, float]:
    """Statistics of one image's detections (``image_size`` = (height, width) of the original)."""
    n = len(detections)
    nan = float("nan")
    if n == 0:
        return {
            "count": 0.0,
            "empty": 1.0,
            "confidence_mean": nan,
            "confidence_min": nan,
            "confidence_max": nan,
            "low_confidence_share": nan,
            "box_area_mean": nan,
            "box_aspect_mean": nan,
        }
    # sums over n rather than .mean(): NumPy's mean costs several microseconds more per call, and
    # this runs for every image
    conf = detections.confidence
    xyxy = detections.xyxy
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    area = nan
    if image_size is not None and image_size[0] > 0 and image_size[1] > 0:
        area = float((w * h).sum()) / n / (image_size[0] * image_size[1])
    aspect = w / np.maximum(h, 1e-6)
    return {
        "count": float(n),
        "empty": 0.0,
        "confidence_mean": float(conf.sum()) / n,
        "confidence_min": float(conf.min()),
        "confidence_max": float(conf.max()),
        "low_confidence_share": float(np.count_nonzero(conf < low_confidence)) / n,
        "box_area_mean": area,
        "box_aspect_mean": float(aspect.sum()) / n,
    }


def class_counts(detections: Detections) -> dict[str, int]:
    """Detections per class name (class ids where the detections carry no names)."""
    if not len(detections):
        return {}
    counts = np.bincount(detections.class_id)  # no sort: this runs for every image
    names = detections.class_names
    return {(names[i] if i < len(names) else str(i)): int(counts[i]) for i in np.flatnonzero(counts).tolist()}
