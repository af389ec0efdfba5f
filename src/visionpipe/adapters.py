"""Conversions between :class:`~visionpipe.detections.Detections` and the neighbouring libraries:
supervision, Ultralytics, pandas and FiftyOne.

Use them through the methods of ``Detections`` (``to_supervision``, ``from_supervision``, ...): the
functions here take the class to build as ``cls``, so that this module sits below
``visionpipe.detections`` and never imports it. Each foreign package is imported only inside the
function that needs it; a missing one raises :class:`~visionpipe.errors.MissingExtraError` naming
the extra to install. Ultralytics results are
read by their attributes (``boxes.xyxy``, ``boxes.conf``, ``boxes.cls``, ``boxes.id``, ``names``),
so converting them does not import ultralytics at all.

Vocabulary: visionpipe and supervision share the column names (``xyxy``, ``confidence``,
``class_id``, ``tracker_id``). A supervision ``data["class_name"]`` array becomes visionpipe's
``class_names`` (the id -> name list, which Ultralytics calls ``names``); visionpipe's
``Detections.class_name`` is the name of every box, like supervision's ``data["class_name"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from visionpipe.errors import DetectionsError, MissingExtraError

# visionpipe.detections.Detections: not imported (it imports this module), hence Any below
Detections = Any

CLASS_NAME_KEY = "class_name"  # where supervision keeps each box's class name


def to_supervision(detections: Detections) -> Any:
    """A ``supervision.Detections`` with the same boxes, scores, classes, track ids and data, and
    each box's class name in ``data["class_name"]`` (as supervision's own converters put it)."""
    try:
        import supervision as sv
    except ImportError:
        raise MissingExtraError("supervision", "supervision", "Detections.to_supervision") from None
    data: dict[str, Any] = {key: np.asarray(value) for key, value in detections.data.items()}
    if detections.class_names:
        data[CLASS_NAME_KEY] = detections.class_name
    return sv.Detections(
        xyxy=detections.xyxy.copy(),
        confidence=detections.confidence.copy(),
        class_id=detections.class_id.copy(),
        tracker_id=None if detections.tracker_id is None else detections.tracker_id.copy(),
        data=data,
    )


def from_supervision(cls: Any, detections: Any, class_names: Sequence[str] | None = None) -> Detections:
    """visionpipe Detections from a ``supervision.Detections`` (duck-typed: anything with
    ``xyxy``, ``confidence``, ``class_id``, ``tracker_id`` and ``data``).

    ``class_names`` defaults to what ``data["class_name"]`` says for each class id (ids no box
    names get their number as text). A missing ``confidence`` (ground truth) becomes 1; a missing
    ``class_id`` is refused, since visionpipe boxes always have a class. Masks are not carried.
    """
    n = len(detections.xyxy)
    if detections.class_id is None:
        raise DetectionsError("supervision Detections without class_id cannot become visionpipe Detections")
    class_id = np.asarray(detections.class_id).astype(np.int64)
    data: dict[str, Any] = {k: np.asarray(v) for k, v in (detections.data or {}).items() if k != CLASS_NAME_KEY}
    if class_names is None:
        class_names = _names_from_boxes(class_id, (detections.data or {}).get(CLASS_NAME_KEY))
    return cls(
        xyxy=np.asarray(detections.xyxy, dtype=np.float32).reshape(n, 4),
        confidence=np.ones(n, np.float32) if detections.confidence is None else detections.confidence,
        class_id=class_id,
        tracker_id=detections.tracker_id,
        data=data,
        class_names=tuple(class_names),
    )


def _names_from_boxes(class_id: np.ndarray, box_names: Any) -> tuple[str, ...]:
    if box_names is None or not len(class_id):
        return ()
    names: dict[int, str] = {}
    for cid, name in zip(class_id.tolist(), np.asarray(box_names).tolist()):
        if names.setdefault(cid, str(name)) != str(name):
            raise DetectionsError(f"class id {cid} is named both {names[cid]!r} and {name!r}")
    return tuple(names.get(i, str(i)) for i in range(max(names) + 1))


def _numpy(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy array or a torch tensor (on any device)."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def from_ultralytics(cls: Any, result: Any) -> Detections:
    """visionpipe Detections from one Ultralytics ``Results`` object (``model(image)[0]``).

    Reads ``result.boxes.xyxy``, ``.conf``, ``.cls`` and ``.id`` (track ids, None when not
    tracking) and ``result.names`` (``{id: name}``); tensors may live on any device.
    """
    boxes = result.boxes
    if boxes is None:
        raise DetectionsError("this Ultralytics result has no boxes (a classification or pose-only result?)")
    names: Mapping[int, str] | Sequence[str] = getattr(result, "names", None) or {}
    if isinstance(names, Mapping):
        class_names = tuple(str(names.get(i, i)) for i in range(max(names, default=-1) + 1))
    else:
        class_names = tuple(str(n) for n in names)
    track = getattr(boxes, "id", None)
    return cls(
        xyxy=_numpy(boxes.xyxy).astype(np.float32).reshape(-1, 4),
        confidence=_numpy(boxes.conf).astype(np.float32).reshape(-1),
        class_id=_numpy(boxes.cls).reshape(-1).astype(np.int64),
        tracker_id=None if track is None else _numpy(track).reshape(-1).astype(np.int64),
        class_names=class_names,
    )


def to_pandas(detections: Detections) -> Any:
    """A pandas DataFrame with one row per box: x1, y1, x2, y2, confidence, class_id, class_name
    (and tracker_id when tracked). Needs pandas (``pip install 'visionpipe[pandas]'``)."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingExtraError("pandas", "pandas", "Detections.to_pandas") from None
    columns: dict[str, Any] = {
        "x1": detections.xyxy[:, 0].astype(np.float64),
        "y1": detections.xyxy[:, 1].astype(np.float64),
        "x2": detections.xyxy[:, 2].astype(np.float64),
        "y2": detections.xyxy[:, 3].astype(np.float64),
        "confidence": detections.confidence.astype(np.float64),
        "class_id": detections.class_id,
        "class_name": pd.Series(detections.names, dtype=object),
    }
    if detections.tracker_id is not None:
        columns["tracker_id"] = detections.tracker_id
    return pd.DataFrame(columns)


def fiftyone_fields(detections: Detections, *, width: int, height: int) -> list[dict[str, Any]]:
    """The keyword arguments of one ``fiftyone.Detection`` per box: ``label``, ``confidence``,
    ``bounding_box`` as FiftyOne stores it ([x, y, w, h] of the top-left corner, relative to the
    image size), and ``index`` (the track id) when tracked."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    xyxy = detections.xyxy.astype(np.float64) / scale
    fields = []
    tracks = None if detections.tracker_id is None else detections.tracker_id.tolist()
    for k, ((x1, y1, x2, y2), name, score) in enumerate(
        zip(xyxy.tolist(), detections.names, detections.confidence.tolist())
    ):
        item: dict[str, Any] = {"label": name, "bounding_box": [x1, y1, x2 - x1, y2 - y1], "confidence": score}
        if tracks is not None:
            item["index"] = tracks[k]
        fields.append(item)
    return fields


def to_fiftyone(detections: Detections, *, width: int, height: int) -> Any:
    """A ``fiftyone.Detections`` label for a sample of an image ``width`` x ``height`` pixels
    (``pip install fiftyone``)."""
    try:
        import fiftyone as fo
    except ImportError:
        raise MissingExtraError("fiftyone", "fiftyone", "Detections.to_fiftyone") from None
    return fo.Detections(
        detections=[fo.Detection(**f) for f in fiftyone_fields(detections, width=width, height=height)]
    )


__all__ = [
    "fiftyone_fields",
    "from_supervision",
    "from_ultralytics",
    "to_fiftyone",
    "to_pandas",
    "to_supervision",
]
