"""Draw detections on an image: a colour per class, readable labels kept inside the image."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from visionpipe.detections import Detections


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per class (hues spaced by the golden ratio)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def annotate(image: np.ndarray, detections: Detections, show_score: bool = True) -> np.ndarray:
    """A copy of a BGR image with boxes (or polygons, when present) and "name #track score" labels.

    Example::

        cv2.imwrite("boxed.jpg", annotate(image, pipe(image)))
    """
    canvas = image.copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 400))
    font_scale = max(0.4, min(height, width) / 1000)
    polygons = detections.data.get("polygon")
    names = detections.names
    for i in np.argsort(detections.confidence):  # strongest drawn last, on top
        colour = class_colour(int(detections.class_id[i]))
        x1, y1, x2, y2 = (int(round(v)) for v in detections.xyxy[i])
        if polygons is not None:
            cv2.polylines(canvas, [np.round(polygons[i]).astype(np.int32)], True, colour, thickness, cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = names[i] if detections.tracker_id is None else f"{names[i]} #{detections.tracker_id[i]}"
        if show_score:
            label = f"{label} {detections.confidence[i]:.2f}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness - 1))
        box_h = th + baseline + 2
        # above the box when there is room, else just inside its top edge; never past the borders
        top = y1 - box_h if y1 - box_h >= 0 else min(max(y1, 0), max(0, height - box_h))
        left = min(max(x1, 0), max(0, width - tw - 2))
        cv2.rectangle(canvas, (left, top), (left + tw + 2, top + box_h), colour, cv2.FILLED)
        cv2.putText(
            canvas,
            label,
            (left + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            _text_colour(colour),
            max(1, thickness - 1),
            cv2.LINE_AA,
        )
    return canvas


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode for writing; unknown suffixes fall back to JPEG."""
    ok, data = cv2.imencode(suffix if suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"} else ".jpg", image)
    if not ok:
        raise ValueError(f"cannot encode image as {suffix}")
    return data.tobytes()


def overlay_text(image: np.ndarray, lines: list[str], bottom: bool = False) -> None:
    """Write status lines (e.g. FPS and latency) in the top-left corner, or the bottom-left one,
    in place."""
    scale = max(0.5, min(image.shape[:2]) / 900)
    y = 0
    if bottom:
        sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1) for line in lines]
        y = max(0, image.shape[0] - sum(th + baseline + 6 for (_, th), baseline in sizes))
    for line in lines:
        (tw, th), baseline = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (0, y), (tw + 8, y + th + baseline + 6), (0, 0, 0), cv2.FILLED)
        cv2.putText(image, line, (4, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        y += th + baseline + 6


LINE_COLOUR = (255, 0, 255)  # BGR magenta: stands out from people, cars and floors
ZONE_COLOUR = (255, 255, 0)  # BGR cyan


def _label(image: np.ndarray, text: str, centre: tuple[float, float], scale: float) -> None:
    """White text on a black box centred at ``centre``, kept inside the image."""
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2)))
    height, width = image.shape[:2]
    box_w, box_h = tw + 8, th + baseline + 8
    left = int(min(max(centre[0] - box_w / 2, 0), max(0, width - box_w)))
    top = int(min(max(centre[1] - box_h / 2, 0), max(0, height - box_h)))
    cv2.rectangle(image, (left, top), (left + box_w, top + box_h), (0, 0, 0), cv2.FILLED)
    cv2.putText(
        image,
        text,
        (left + 4, top + 4 + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, round(scale * 2)),
        cv2.LINE_AA,
    )


def draw_line_counter(
    image: np.ndarray, start: tuple[float, float], end: tuple[float, float], in_count: int, out_count: int
) -> None:
    """A counting line with its running totals, in place: "in N" on the side a track reaches when
    it is counted in (the left of the directed line start -> end, as seen on screen), "out M" on
    the other side, both beside the line's middle so neither sits on the line itself."""
    height, width = image.shape[:2]
    thickness = max(2, round(min(height, width) / 200))
    p, q = np.asarray(start, np.float64), np.asarray(end, np.float64)
    cv2.line(
        image, tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q), LINE_COLOUR, thickness, cv2.LINE_AA
    )
    direction = q - p
    left = np.array([direction[1], -direction[0]]) / max(float(np.hypot(*direction)), 1e-9)
    scale = max(0.5, min(height, width) / 700)
    offset = 22 * scale + thickness
    middle = (p + q) / 2
    _label(image, f"in {in_count}", tuple(middle + left * offset), scale)
    _label(image, f"out {out_count}", tuple(middle - left * offset), scale)


def draw_zone(image: np.ndarray, points, count: int, name: str = "zone") -> None:
    """A polygon zone's outline and "<name>: N" (objects in it now) at its top-left corner, in place."""
    height, width = image.shape[:2]
    thickness = max(2, round(min(height, width) / 300))
    polygon = np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(image, [polygon], True, ZONE_COLOUR, thickness, cv2.LINE_AA)
    scale = max(0.5, min(height, width) / 800)
    corner = polygon.reshape(-1, 2).min(axis=0)
    _label(image, f"{name}: {count}", (float(corner[0]) + 60 * scale, float(corner[1]) + 14 * scale), scale)
