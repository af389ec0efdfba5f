"""Accuracy once labels arrive: match stored detections to ground truth by image id, score per window.

Labels may come days after the images: the monitor keeps each image's detections in its raw rows
(while they are retained), so ingestion needs only the store and the labels. mAP goes through the
project's pycocotools evaluation (``visionpipe.evaluation``), so it equals ``visionpipe eval`` on
the same detections. Precision and recall per class are taken at the operating threshold ``conf``:
detections at or above it are matched greedily by confidence to unmatched ground truth of the same
class at IoU >= ``iou`` (crowd regions are ignored on both sides).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import EvaluationError, MonitorDataError
from visionpipe.evaluation import coco_records, load_annotations, score_records
from visionpipe.geometry import box_iou
from visionpipe.monitor.monitor import decode_detections
from visionpipe.monitor.store import Store
from visionpipe.results import Result


@dataclass
class WindowAccuracy:
    window_start: float | None  # None for all matched images together
    images: int
    map_50_95: float
    map_50: float
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)  # ap, precision, recall

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start,
            "images": self.images,
            "map_50_95": self.map_50_95,
            "map_50": self.map_50,
            "per_class": self.per_class,
        }


@dataclass
class AccuracyReport:
    overall: WindowAccuracy
    windows: list[WindowAccuracy]
    matched: int
    unmatched_labels: int  # labelled images never seen by the monitor (or whose rows expired)

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(),
            "windows": [w.as_dict() for w in self.windows],
            "matched_images": self.matched,
            "unmatched_labelled_images": self.unmatched_labels,
        }


def yolo_ground_truth(folder: str | Path, class_names: tuple[str, ...], sizes: Mapping[str, tuple[int, int]]) -> dict:
    """A COCO ground-truth dict from YOLO txt files (``class cx cy w h``, normalised) for the images
    whose (height, width) is known, keyed by image id (file name); class k is ``class_names[k]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"YOLO labels folder {folder} does not exist")
    by_stem = {Path(image_id).stem: image_id for image_id in sizes}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for number, txt in enumerate(sorted(folder.glob("*.txt")), start=1):
        image_id = by_stem.get(txt.stem)
        if image_id is None:
            continue
        height, width = sizes[image_id]
        images.append({"id": number, "file_name": image_id, "width": width, "height": height})
        for line_number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                k, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, TypeError):
                raise EvaluationError(f"{txt}:{line_number}: expected 'class cx cy w h', got {line!r}") from None
            if not 0 <= k < len(class_names):
                raise EvaluationError(f"{txt}:{line_number}: class {k} is not one of the {len(class_names)} classes")
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": k + 1,
                    "bbox": [cx * width - bw / 2, cy * height - bh / 2, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def precision_recall(
    results: list[Result], ground_truth: Mapping[str, Any], class_names: tuple[str, ...], conf: float, iou: float = 0.5
) -> dict[str, dict[str, float | None]]:
    """Per-class precision and recall at the operating threshold (see the module docstring)."""
    ids_by_file = {Path(img["file_name"]).name: img["id"] for img in ground_truth["images"]}
    name_of = {c["id"]: c["name"] for c in ground_truth["categories"]}
    truth: dict[tuple[int, str], list[list[float]]] = {}
    for ann in ground_truth.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        truth.setdefault((ann["image_id"], name_of[ann["category_id"]]), []).append([x, y, x + w, y + h])
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    positives: dict[str, int] = {}
    images = {ids_by_file[Path(r.source).name] for r in results}
    for (image, name), boxes in truth.items():
        if image in images:
            positives[name] = positives.get(name, 0) + len(boxes)
    for r in results:
        image = ids_by_file[Path(r.source).name]
        dets = r.detections
        if dets is None or not len(dets):
            continue
        dets = dets[dets.confidence >= conf]
        for k in np.unique(dets.class_id):
            name = class_names[k] if k < len(class_names) else str(k)
            mine = dets[dets.class_id == k]
            mine = mine[np.argsort(-mine.confidence, kind="stable")]
            gt = np.asarray(truth.get((image, name), []), dtype=np.float64).reshape(-1, 4)
            overlaps = box_iou(mine.xyxy.astype(np.float64), gt) if len(gt) else np.zeros((len(mine), 0))
            taken = np.zeros(len(gt), dtype=bool)
            for row in overlaps:
                candidates = np.where(~taken & (row >= iou), row, -1.0)
                best = int(np.argmax(candidates)) if len(candidates) else -1
                if best >= 0 and candidates[best] >= iou:
                    taken[best] = True
                    tp[name] = tp.get(name, 0) + 1
                else:
                    fp[name] = fp.get(name, 0) + 1
    out: dict[str, dict[str, float | None]] = {}
    for name in sorted(set(tp) | set(fp) | set(positives)):
        t, f, p = tp.get(name, 0), fp.get(name, 0), positives.get(name, 0)
        out[name] = {
            "precision": t / (t + f) if t + f else None,
            "recall": t / p if p else None,
            "true_positives": t,
            "false_positives": f,
            "ground_truth": p,
        }
    return out


def _window_accuracy(
    start: float | None, results: list[Result], ground_truth: dict, class_names: tuple[str, ...], conf: float
) -> WindowAccuracy:
    records, image_ids, _ = coco_records(results, ground_truth, class_names)
    scored = score_records(records, ground_truth, image_ids)
    per_class: dict[str, dict[str, float | None]] = precision_recall(results, ground_truth, class_names, conf)
    for name, ap in scored.per_class_ap.items():
        per_class.setdefault(name, {})["ap"] = ap
    return WindowAccuracy(start, len(set(image_ids)), scored.map_50_95, scored.map_50, per_class)


def ingest_labels(
    store: Store,
    labels: str | Path | Mapping[str, Any],
    *,
    tag: str | None = None,
    conf: float = 0.5,
    window_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
) -> AccuracyReport:
    """Score the stored detections of the labelled images (COCO json, or a folder of YOLO txt files)
    overall and per window, and save the per-window results in the store."""
    class_names = tuple(store.get_meta("class_names", []))
    window_seconds = window_seconds or float(store.get_meta("window_seconds", 3600.0))
    rows = store.records(tag=tag, columns="id, ts, tag, image_id, error, features, detections")
    latest: dict[str, tuple] = {}
    for row in rows:  # an image seen twice is scored on its latest result
        latest[Path(row[3]).name] = row
    if isinstance(labels, (str, Path)) and Path(labels).is_dir():
        if not class_names:
            raise MonitorDataError("YOLO labels need the model's class names, which this store does not have")
        sizes = {}
        for name, row in latest.items():
            values = json.loads(row[5])
            if values.get("height") and values.get("width"):
                sizes[name] = (int(values["height"]), int(values["width"]))
        ground_truth = yolo_ground_truth(labels, class_names, sizes)
    else:
        ground_truth = load_annotations(labels)
    labelled = {Path(img["file_name"]).name for img in ground_truth["images"]}
    matched = [latest[name] for name in labelled if name in latest and latest[name][6] is not None]
    if not matched:
        raise MonitorDataError("no labelled image has stored detections (wrong tag, ids, or rows past retention?)")
    matched.sort(key=lambda row: row[0])
    results = [
        Result(index=i, image_id=row[3], source=Path(row[3]).name, detections=decode_detections(row[6], class_names))
        for i, row in enumerate(matched)
    ]
    ground_truth = dict(ground_truth)
    overall = _window_accuracy(None, results, ground_truth, class_names, conf)
    by_window: dict[float, list[Result]] = {}
    for row, result in zip(matched, results):
        by_window.setdefault(row[1] - row[1] % window_seconds, []).append(result)
    windows = [_window_accuracy(s, rs, ground_truth, class_names, conf) for s, rs in sorted(by_window.items())]
    now = clock()
    store.save_accuracy(
        [(w.window_start, tag or "*", now, w.images, w.map_50_95, w.map_50, json.dumps(w.per_class)) for w in windows]
    )
    return AccuracyReport(overall, windows, len(matched), len(labelled) - len(matched))
