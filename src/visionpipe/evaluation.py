"""COCO-style detection accuracy through pycocotools, the reference implementation.

Detections are matched to ground-truth images by file name and to categories by class name, so a
model with contiguous class ids (0..79) scores correctly against COCO's sparse ids (1..90).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import EvaluationError, MissingExtraError
from visionpipe.results import Result

# pycocotools' 12 summary numbers, in its order, under names that experiment trackers accept
# (MLflow allows letters, digits, "_", "-", ".", " ", ":" and "/" in metric names, not "@").
STAT_NAMES = (
    "map_50_95",  # AP @ IoU .50:.95, all areas, 100 detections
    "map_50",
    "map_75",
    "map_small",  # area < 32^2
    "map_medium",  # 32^2 .. 96^2
    "map_large",  # > 96^2
    "mar_1",  # AR @ IoU .50:.95 with 1, 10, 100 detections per image
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


@dataclass
class OperatingPoint:
    """Precision, recall and F1 at IoU 0.5, each averaged over classes, at one score threshold
    shared by every class: the one that maximises the class-averaged F1 (how Ultralytics reports
    P and R)."""

    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    conf: float = 0.0


@dataclass
class CocoEvaluation:
    map_50_95: float
    map_50: float
    map_75: float
    per_class_ap: dict[str, float]  # AP @ IoU .50:.95 per class name
    stats: list[float]  # pycocotools' 12 summary numbers, in its order (see STAT_NAMES)
    detections: list[dict] = field(repr=False)  # the COCO results records that were scored
    images: int = 0
    failed_images: list[str] = field(default_factory=list)
    per_class_ap50: dict[str, float] = field(default_factory=dict)  # AP @ IoU .50 per class name
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)

    def metrics(self) -> dict[str, float]:
        """Every number as a flat ``{name: value}`` dict that ``mlflow.log_metrics`` (and other
        trackers) accept: the 12 COCO summary numbers, precision/recall/F1 at the best shared
        threshold, and ``ap_50_95/<class>`` and ``ap_50/<class>`` per class."""
        out = dict(zip(STAT_NAMES, self.stats))
        point = self.operating_point
        out.update(precision=point.precision, recall=point.recall, f1=point.f1, best_f1_conf=point.conf)
        out.update({f"ap_50_95/{name}": ap for name, ap in self.per_class_ap.items()})
        out.update({f"ap_50/{name}": ap for name, ap in self.per_class_ap50.items()})
        return out

    def summary(self) -> dict[str, Any]:
        point = self.operating_point
        return {
            **dict(zip(STAT_NAMES, self.stats)),
            "precision": point.precision,
            "recall": point.recall,
            "f1": point.f1,
            "best_f1_conf": point.conf,
            "images": self.images,
            "failed_images": self.failed_images,
            "detections": len(self.detections),
            "per_class_ap": dict(self.per_class_ap),
            "per_class_ap50": dict(self.per_class_ap50),
        }


def split_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of two halves of ``count`` images, by a seeded shuffle: settings are *chosen* on
    the first and *confirmed* on the second, which the choice never saw (ensemble tuning, the int8
    loop). Both come back sorted; the first has ``count // 2``."""
    order = np.random.default_rng(seed).permutation(count)
    half = count // 2
    return np.sort(order[:half]), np.sort(order[half:])


def image_ids_of(paths: Iterable[str | Path], ground_truth: Mapping[str, Any]) -> list[int]:
    """The annotation ids of image files, matched by file name as :func:`coco_records` matches
    results; a file the annotations do not list is an :class:`EvaluationError` naming it."""
    ids_by_file = {Path(img["file_name"]).name: img["id"] for img in ground_truth["images"]}
    missing = [str(p) for p in paths if Path(p).name not in ids_by_file]
    if missing:
        raise EvaluationError(f"{len(missing)} images are not in the annotations: {', '.join(missing[:5])}")
    return [ids_by_file[Path(p).name] for p in paths]


def load_annotations(annotations: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A COCO annotation file, read with a size cap (regular files only) and checked where a
    malformed entry would otherwise fail deep inside scoring: images, categories, boxes."""
    from visionpipe.io.files import MAX_ANNOTATIONS_BYTES, InputFileError, read_file

    if isinstance(annotations, Mapping):
        data: Any = dict(annotations)
    else:
        try:
            data = json.loads(read_file(annotations, MAX_ANNOTATIONS_BYTES))
        except InputFileError as exc:
            raise EvaluationError(f"cannot read COCO annotations {annotations}: {exc.cause}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise EvaluationError(f"cannot read COCO annotations {annotations}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not {"images", "categories"} <= data.keys():
        raise EvaluationError(f"{annotations} is not a COCO annotation file (needs 'images' and 'categories')")
    _check_coco(data, annotations if not isinstance(annotations, Mapping) else "the annotations")
    return data


def _check_coco(data: dict[str, Any], name: object) -> None:
    """The first malformed entry, named: pycocotools would raise an anonymous error later."""

    def bad(where: str, what: str) -> EvaluationError:
        return EvaluationError(f"{name}: {where} {what}")

    for key, required in (("images", ("id", "file_name")), ("categories", ("id", "name"))):
        if not isinstance(data[key], list):
            raise bad(f"'{key}'", "must be a list")
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict) or any(k not in item for k in required):
                raise bad(f"{key}[{i}]", f"must be an object with {' and '.join(required)}")
            if not isinstance(item["id"], int) or isinstance(item["id"], bool):
                raise bad(f"{key}[{i}].id", f"must be an integer, got {item['id']!r}")
        if key == "images" and not all(isinstance(item["file_name"], str) for item in data[key]):
            raise bad("images", "file_name values must be strings")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise bad("'annotations'", "must be a list")
    for i, item in enumerate(annotations):
        if not isinstance(item, dict) or any(k not in item for k in ("image_id", "category_id", "bbox")):
            raise bad(f"annotations[{i}]", "must be an object with image_id, category_id and bbox")
        box = item["bbox"]
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box)
            or box[2] < 0
            or box[3] < 0
        ):
            raise bad(f"annotations[{i}].bbox", f"must be [x, y, width, height] with width, height >= 0, got {box!r}")


def coco_records(
    results: Iterable[Result], ground_truth: Mapping[str, Any], class_names: tuple[str, ...]
) -> tuple[list[dict], list[int], list[str]]:
    """COCO results records for pipeline results, the image ids they cover, and failed inputs."""
    ids_by_file = {Path(img["file_name"]).name: img["id"] for img in ground_truth["images"]}
    category_by_name = {c["name"]: c["id"] for c in ground_truth["categories"]}
    category_ids = [category_by_name.get(name) for name in class_names]
    if class_names and not any(c is not None for c in category_ids):
        raise EvaluationError("none of the model's class names appear among the annotation categories")

    records: list[dict] = []
    image_ids: list[int] = []
    failed: list[str] = []
    unknown: list[str] = []
    for result in results:
        image_id = ids_by_file.get(Path(result.source).name)
        if image_id is None:
            unknown.append(result.source)
            continue
        image_ids.append(image_id)
        if result.detections is None:
            failed.append(result.source)  # scored as an image with no detections
            continue
        dets = result.detections
        scorable = np.array([category_ids[c] is not None for c in dets.class_id], dtype=bool)
        records.extend(dets[scorable].to_coco(image_id, category_ids))  # type: ignore[arg-type]
    if unknown:
        listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise EvaluationError(f"{len(unknown)} images are not in the annotations: {listed}")
    return records, image_ids, failed


def evaluate_coco(
    results: Iterable[Result],
    annotations: str | Path | Mapping[str, Any],
    class_names: Sequence[str] | None = None,
) -> CocoEvaluation:
    """Score pipeline results against a COCO json with pycocotools' bbox evaluation.

    Only the images present in ``results`` are scored; inputs that failed count as images where
    nothing was detected. ``class_names`` defaults to the detections' own class names.

    Example::

        evaluation = evaluate_coco(pipe.run(paths), "instances_val2017.json", pipe.model.class_names)
        evaluation.map_50_95, evaluation.summary()
    """
    results = list(results)
    if class_names is None:
        class_names = next((r.detections.class_names for r in results if r.detections is not None), ())
        if not class_names:
            raise EvaluationError("the detections carry no class names: pass class_names")
    class_names = tuple(class_names)
    ground_truth = load_annotations(annotations)
    records, image_ids, failed = coco_records(results, ground_truth, class_names)
    evaluation = score_records(records, ground_truth, image_ids)
    evaluation.failed_images = failed
    return evaluation


def score_records(records: list[dict], ground_truth: Mapping[str, Any], image_ids: list[int]) -> CocoEvaluation:
    """pycocotools bbox evaluation of COCO results records on the given images."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError("pycocotools", "eval", "COCO evaluation") from None

    ground_truth = dict(ground_truth)
    ground_truth.setdefault("annotations", [])
    ground_truth.setdefault("info", {})
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    if not records:
        return CocoEvaluation(0.0, 0.0, 0.0, {}, [0.0] * len(STAT_NAMES), [], images=len(set(image_ids)))

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(records)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    # precision: [iou thresholds, recall points, categories, area ranges, max dets]; -1 = no data
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class, per_class50 = {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        if (values > -1).any():
            per_class[names[cat_id]] = float(values[values > -1].mean())
            at_50 = values[0]
            per_class50[names[cat_id]] = float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else 0.0
    stats = [float(s) for s in evaluator.stats]
    return CocoEvaluation(
        map_50_95=stats[0],
        map_50=stats[1],
        map_75=stats[2],
        per_class_ap=per_class,
        stats=stats,
        detections=records,
        images=len(set(image_ids)),
        per_class_ap50=per_class50,
        operating_point=best_f1_point(evaluator),
    )


def best_f1_point(evaluator: Any, thresholds: int = 1001) -> OperatingPoint:
    """Precision and recall at IoU 0.5 (all areas, the largest detection cap) at the score
    threshold that maximises the class-averaged F1, from pycocotools' per-image matches.

    A class is averaged in when it has ground truth; at a threshold where a class keeps no
    detection its precision counts as 0 (the conservative choice).
    """
    params = evaluator.params
    area_all = params.areaRng[0]
    max_det = params.maxDets[-1]
    scores_of: dict[int, list[np.ndarray]] = {}
    matched_of: dict[int, list[np.ndarray]] = {}
    positives_of: dict[int, int] = {}
    for entry in evaluator.evalImgs:
        if entry is None or entry["aRng"] != area_all or entry["maxDet"] != max_det:
            continue
        category = entry["category_id"]
        keep = np.asarray(entry["dtIgnore"])[0] == 0 if len(entry["dtIds"]) else np.zeros(0, bool)
        scores_of.setdefault(category, []).append(np.asarray(entry["dtScores"])[:max_det][keep[:max_det]])
        matched_of.setdefault(category, []).append(np.asarray(entry["dtMatches"])[0][:max_det][keep[:max_det]] > 0)
        positives_of[category] = positives_of.get(category, 0) + int((np.asarray(entry["gtIgnore"]) == 0).sum())
    grid = np.linspace(0.0, 1.0, thresholds)
    precisions: list[np.ndarray] = []
    recalls: list[np.ndarray] = []
    for category, positives in positives_of.items():
        if positives == 0:
            continue
        scores = np.concatenate(scores_of[category]) if scores_of[category] else np.zeros(0)
        matched = np.concatenate(matched_of[category]) if matched_of[category] else np.zeros(0, bool)
        order = np.argsort(-scores, kind="mergesort")
        scores, matched = scores[order], matched[order]
        true_positives = np.concatenate([[0], np.cumsum(matched)])
        # detections kept at threshold c: those with score >= c (scores are sorted descending)
        kept = np.searchsorted(-scores, -grid, side="right")
        tp = true_positives[kept]
        with np.errstate(divide="ignore", invalid="ignore"):
            precisions.append(np.where(kept > 0, tp / np.maximum(kept, 1), 0.0))
        recalls.append(tp / positives)
    if not precisions:
        return OperatingPoint()
    p, r = np.array(precisions), np.array(recalls)  # (classes, thresholds)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    best = int(np.argmax(f1.mean(axis=0)))
    return OperatingPoint(
        float(p[:, best].mean()), float(r[:, best].mean()), float(f1[:, best].mean()), float(grid[best])
    )


def evaluate_detections_file(path: str | Path, annotations: str | Path | Mapping[str, Any]) -> CocoEvaluation:
    """Score stored detections against a COCO json, through the same pycocotools evaluation.

    ``path`` is a COCO results JSON (a list of ``{image_id, category_id, bbox, score}``, ids of the
    annotation file, as ``--format coco-results --annotations`` or ``eval --save-detections`` write
    it; every annotated image is scored, so an image without records counts as one where nothing
    was found); a COCO dataset with scored annotations (``--format coco``), or a JSONL file of
    ``visionpipe detect``/``merge``: these two are matched by file name and class name, and the
    images they list are scored (failed JSONL inputs as images with no detections).
    """
    ground_truth = load_annotations(annotations)
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return _evaluate_jsonl(path, ground_truth)
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read detections {path}: {exc}") from None
    if isinstance(records, dict) and {"images", "annotations", "categories"} <= records.keys():
        return _evaluate_dataset(path, records, ground_truth)
    keys = {"image_id", "category_id", "bbox", "score"}
    if not isinstance(records, list) or any(not isinstance(r, dict) or not keys <= r.keys() for r in records):
        raise EvaluationError(f"{path} is not a COCO results list (records need {', '.join(sorted(keys))})")
    known = {img["id"] for img in ground_truth["images"]}
    strangers = {r["image_id"] for r in records} - known
    if strangers:
        raise EvaluationError(
            f"{len(strangers)} image ids of {path} are not in the annotations (e.g. {sorted(strangers)[:3]}); "
            "write COCO output with the annotation file's ids (visionpipe merge --annotations)"
        )
    return score_records(records, ground_truth, sorted(known))


def _evaluate_dataset(path: Path, dataset: Mapping[str, Any], ground_truth: Mapping[str, Any]) -> CocoEvaluation:
    """A COCO dataset of detections (annotations with scores), mapped onto the ground truth's ids."""
    ids_by_file = {Path(img["file_name"]).name: img["id"] for img in ground_truth["images"]}
    category_by_name = {c["name"]: c["id"] for c in ground_truth["categories"]}
    try:
        image_ids = {img["id"]: ids_by_file.get(Path(img["file_name"]).name) for img in dataset["images"]}
        categories = {c["id"]: category_by_name.get(c["name"]) for c in dataset["categories"]}
        unknown = [img["file_name"] for img in dataset["images"] if image_ids[img["id"]] is None]
        if unknown:
            raise EvaluationError(f"{len(unknown)} images of {path} are not in the annotations: {unknown[:5]}")
        records = [
            {
                "image_id": image_ids[a["image_id"]],
                "category_id": categories[a["category_id"]],
                "bbox": a["bbox"],
                "score": a.get("score", 1.0),
            }
            for a in dataset["annotations"]
            if categories.get(a["category_id"]) is not None
        ]
    except (KeyError, TypeError) as exc:
        raise EvaluationError(f"{path} is not a COCO dataset of detections: {exc!r}") from None
    return score_records(records, ground_truth, [i for i in image_ids.values() if i is not None])


def _evaluate_jsonl(path: Path, ground_truth: Mapping[str, Any]) -> CocoEvaluation:
    from visionpipe.detections import Detections
    from visionpipe.io.formats import record_box, record_score

    names: list[str] = []
    results: list[Result] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if not line.strip():
                    continue
                record = json.loads(line)
                boxes = record["detections"]
                for box in boxes:
                    if box["class_name"] not in names:
                        names.append(box["class_name"])
                detections = Detections(
                    xyxy=np.array([record_box(b) for b in boxes], np.float32).reshape(-1, 4),
                    confidence=np.array([record_score(b) for b in boxes], np.float32),
                    class_id=np.array([names.index(b["class_name"]) for b in boxes], np.int64),
                )
                error = EvaluationError(record["error"]) if record.get("error") else None
                results.append(
                    Result(
                        index=number,
                        image_id=str(record.get("id")),
                        source=record["path"],
                        detections=None if error else detections,
                        error=error,
                    )
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"cannot read detections {path}: {exc}") from None
    records, image_ids, failed = coco_records(results, ground_truth, tuple(names))
    evaluation = score_records(records, ground_truth, image_ids)
    evaluation.failed_images = failed
    return evaluation
