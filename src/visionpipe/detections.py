"""`Detections`: the one columnar type every layer of visionpipe speaks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionpipe.errors import DetectionsError
from visionpipe.geometry import (
    box_area,
    cxcywh_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

# Rounding of every JSON output (Detections.to_records): a thousandth of a pixel, five score digits.
BOX_DECIMALS = 3
SCORE_DECIMALS = 5
POINT_DECIMALS = 2


@dataclass(eq=False)
class Detections:
    """Boxes of one image, as parallel arrays.

    ``xyxy`` is float32 (N, 4) in original-image pixels; ``confidence`` float32 (N,); ``class_id``
    int64 (N,) indexing ``class_names``; ``tracker_id`` int64 (N,) or None; ``data`` holds any other
    per-box arrays (which ensemble member produced a box, a mask, ...). Index it like an array to
    filter: ``dets[dets.confidence > 0.5]``.

    Example::

        detections = Pipeline("yolox.yaml")("photo.jpg")
        people = detections[detections.class_id == 0]     # filtering is indexing
        people.xyxy, people.confidence, people.to_records()
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise DetectionsError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        n = len(xyxy)
        self.xyxy = xyxy
        self.confidence = self._column("confidence", self.confidence, np.float32, n)
        self.class_id = self._column("class_id", self.class_id, np.int64, n)
        if self.tracker_id is not None:
            self.tracker_id = self._column("tracker_id", self.tracker_id, np.int64, n)
        self.data = {key: self._per_box(key, value, n) for key, value in self.data.items()}
        self.class_names = tuple(self.class_names)

        if not np.isfinite(xyxy).all():
            raise DetectionsError("xyxy contains NaN or infinite coordinates")
        if not np.isfinite(self.confidence).all():
            raise DetectionsError("confidence contains NaN or infinite values")
        if n and ((xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any()):
            raise DetectionsError("boxes must satisfy x2 >= x1 and y2 >= y1")
        if n and (self.class_id < 0).any():
            raise DetectionsError("class_id must be non-negative")
        if n and self.class_names and self.class_id.max() >= len(self.class_names):
            raise DetectionsError(
                f"class_id {int(self.class_id.max())} out of range for {len(self.class_names)} class names"
            )

    @staticmethod
    def _column(name: str, values: Any, dtype: type, n: int) -> np.ndarray:
        array = np.asarray(values)
        if array.ndim != 1 or len(array) != n:
            raise DetectionsError(f"{name} must have shape ({n},), got {array.shape}")
        if (
            dtype is np.int64
            and array.size
            and not np.issubdtype(array.dtype, np.integer)
            and not np.all(np.mod(array, 1) == 0)
        ):
            raise DetectionsError(f"{name} must hold whole numbers")
        return array.astype(dtype, copy=False)

    @staticmethod
    def _per_box(key: str, values: Any, n: int) -> np.ndarray:
        array = np.asarray(values)
        if array.ndim == 0 or len(array) != n:
            raise DetectionsError(f"data[{key!r}] must have length {n}, got shape {array.shape}")
        return array

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls, class_names: Sequence[str] = ()) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            class_names=tuple(class_names),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """Stack several Detections that share class names (e.g. tiles or ensemble members)."""
        if not parts:
            return cls.empty()
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise DetectionsError("cannot concatenate Detections with different class names")
        keys = set(parts[0].data)
        if any(set(p.data) != keys for p in parts):
            raise DetectionsError("cannot concatenate Detections whose data keys differ")
        tracked = [p.tracker_id is not None for p in parts]
        if any(tracked) and not all(tracked):
            raise DetectionsError("cannot concatenate tracked with untracked Detections")
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            tracker_id=np.concatenate([p.tracker_id for p in parts]) if all(tracked) else None,
            data={k: np.concatenate([p.data[k] for p in parts]) for k in keys},
            class_names=names,
        )

    # -- array-like behaviour -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Detections:
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: v[index] for k, v in self.data.items()},
            class_names=self.class_names,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        same_tracks = (self.tracker_id is None) == (other.tracker_id is None) and (
            self.tracker_id is None or np.array_equal(self.tracker_id, other.tracker_id)
        )
        return (
            self.class_names == other.class_names
            and np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.confidence, other.confidence)
            and np.array_equal(self.class_id, other.class_id)
            and same_tracks
            and self.data.keys() == other.data.keys()
            and all(np.array_equal(self.data[k], other.data[k]) for k in self.data)
        )

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, classes={len(self.class_names)}, data={sorted(self.data)})"

    @property
    def area(self) -> np.ndarray:
        return box_area(self.xyxy)

    @property
    def class_name(self) -> np.ndarray:
        """The class name of every box, as a (N,) string array (its id as text when the names are
        unknown) — supervision's ``data["class_name"]``. The id -> name list is ``class_names``
        (what Ultralytics calls ``names``)."""
        return np.array(self.names, dtype=str).reshape(len(self))

    @property
    def names(self) -> list[str]:
        """The class name of every box, as a list (the same as ``class_name``). Not the id -> name
        mapping Ultralytics calls ``names``: that is ``class_names`` here; prefer ``class_name``."""
        if not self.class_names:
            return [str(c) for c in self.class_id]
        return [self.class_names[c] for c in self.class_id]

    # -- foreign formats ----------------------------------------------------------------------

    def to_records(self, point_keys: Sequence[str] = ("polygon",)) -> list[dict[str, Any]]:
        """One JSON-ready dict per box, the shape every JSON output of visionpipe writes (image and
        video JSONL alike), under the names of the columns (and of the HTTP server's answer)::

            {"xyxy": [x1, y1, x2, y2], "confidence": 0.91234, "class_id": 0, "class_name": "person",
             "tracker_id": 7, "polygon": [[x, y], ...]}

        Boxes are rounded to 3 decimals (a thousandth of a pixel), scores to 5 and points to 2;
        ``tracker_id`` appears when the boxes are tracked, and each ``point_keys`` entry of ``data``
        when present. (Files written before this vocabulary used ``box``, ``score`` and
        ``track_id``; the readers take both.)
        """
        tracks = self.tracker_id.tolist() if self.tracker_id is not None else None
        points = {key: self.data[key] for key in point_keys if key in self.data}
        records = []
        for i, (box, score, cls, name) in enumerate(
            zip(self.xyxy.tolist(), self.confidence.tolist(), self.class_id.tolist(), self.names)
        ):
            record: dict[str, Any] = {
                "xyxy": [round(v, BOX_DECIMALS) for v in box],
                "confidence": round(score, SCORE_DECIMALS),
                "class_id": cls,
                "class_name": name,
            }
            if tracks is not None:
                record["tracker_id"] = int(tracks[i])
            for key, values in points.items():
                record[key] = np.round(np.asarray(values[i], np.float64), POINT_DECIMALS).tolist()
            records.append(record)
        return records

    def to_coco(self, image_id: int, category_ids: Sequence[int] | Mapping[int, int] | None = None) -> list[dict]:
        """COCO results records (``bbox`` as x, y, w, h). ``category_ids[class_id]`` maps classes to
        the dataset's category ids; without it the class id is used as is."""
        xywh = xyxy_to_xywh(self.xyxy.astype(np.float64))
        if category_ids is None:
            categories = self.class_id.tolist()
        else:
            try:
                categories = [int(category_ids[c]) for c in self.class_id.tolist()]
            except (KeyError, IndexError) as exc:
                raise DetectionsError(f"no category id for class {exc}") from None
        return [
            {
                "image_id": image_id,
                "category_id": cat,
                "bbox": [round(float(v), 3) for v in box],
                "score": round(float(s), 5),
            }
            for cat, box, s in zip(categories, xywh, self.confidence.tolist())
        ]

    @classmethod
    def from_coco(
        cls,
        records: Iterable[Mapping[str, Any]],
        category_to_class: Mapping[int, int] | None = None,
        class_names: Sequence[str] = (),
    ) -> Detections:
        """Build from COCO annotation or result records (``score`` defaults to 1 for ground truth)."""
        records = list(records)
        if not records:
            return cls.empty(class_names)
        xywh = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4)
        categories = [int(r["category_id"]) for r in records]
        if category_to_class is not None:
            try:
                class_id = [category_to_class[c] for c in categories]
            except KeyError as exc:
                raise DetectionsError(f"no class for category id {exc}") from None
        else:
            class_id = categories
        return cls(
            xyxy=xywh_to_xyxy(xywh),
            confidence=np.array([r.get("score", 1.0) for r in records], dtype=np.float32),
            class_id=np.array(class_id, dtype=np.int64),
            class_names=tuple(class_names),
        )

    def to_yolo(self, *, width: int, height: int, with_confidence: bool = False) -> np.ndarray:
        """Rows ``class cx cy w h [confidence]`` normalised to the image size, as YOLO txt files hold
        (``width`` and ``height`` by name: a positional pair could be read in either order).

        Example::

            rows = dets.to_yolo(width=640, height=480)
        """
        cxcywh = xyxy_to_cxcywh(self.xyxy.astype(np.float64)) / np.array([width, height, width, height])
        columns = [self.class_id[:, None].astype(np.float64), cxcywh]
        if with_confidence:
            columns.append(self.confidence[:, None].astype(np.float64))
        return np.concatenate(columns, axis=1)

    @classmethod
    def from_yolo(cls, rows: np.ndarray, *, width: int, height: int, class_names: Sequence[str] = ()) -> Detections:
        """Inverse of :meth:`to_yolo`; rows have 5 columns (labels) or 6 (predictions with confidence).

        Example::

            dets = Detections.from_yolo(rows, width=640, height=480, class_names=names)
        """
        rows = np.asarray(rows, dtype=np.float64)
        if rows.size == 0:
            return cls.empty(class_names)
        if rows.ndim != 2 or rows.shape[1] not in (5, 6):
            raise DetectionsError(f"YOLO rows must have 5 or 6 columns, got shape {rows.shape}")
        scale = np.array([width, height, width, height], dtype=np.float64)
        confidence = rows[:, 5] if rows.shape[1] == 6 else np.ones(len(rows))
        return cls(
            xyxy=cxcywh_to_xyxy(rows[:, 1:5] * scale),
            confidence=confidence,
            class_id=rows[:, 0],
            class_names=tuple(class_names),
        )

    # -- other libraries (see visionpipe.adapters; each import is optional) ----------------------

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` with the same boxes, scores, classes, track ids and data."""
        from visionpipe.adapters import to_supervision

        return to_supervision(self)

    @classmethod
    def from_supervision(cls, detections: Any, class_names: Sequence[str] | None = None) -> Detections:
        """From a ``supervision.Detections``; class names from its ``data["class_name"]`` by default."""
        from visionpipe.adapters import from_supervision

        return from_supervision(cls, detections, class_names)

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """From one Ultralytics ``Results`` object (boxes, scores, classes, track ids, names)."""
        from visionpipe.adapters import from_ultralytics

        return from_ultralytics(cls, result)

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per box."""
        from visionpipe.adapters import to_pandas

        return to_pandas(self)

    def to_fiftyone(self, *, width: int, height: int) -> Any:
        """A ``fiftyone.Detections`` label for an image of ``width`` x ``height`` pixels."""
        from visionpipe.adapters import to_fiftyone

        return to_fiftyone(self, width=width, height=height)
