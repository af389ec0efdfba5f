"""Outputs that annotation and training tools import: a COCO dataset, Pascal VOC XML, Label Studio
pre-annotations — and :func:`open_writers`, which builds the writers a run asks for by name.

Every file is written atomically (see :mod:`visionpipe.io.formats`).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path

import numpy as np

from visionpipe.io.formats import (
    CocoWriter,
    CsvWriter,
    JsonlWriter,
    ResultWriter,
    YoloWriter,
    atomic_open,
    category_ids_for,
    run_image_id,
    unique_name,
)
from visionpipe.results import Result


class OutputFormat(str, Enum):
    """What ``detect --format`` writes, and where in the output folder.

    Example::

        detect_to_folder(["photos/"], "runs/1", pipeline, formats=[OutputFormat.COCO, OutputFormat("csv")])
    """

    COCO = "coco"  # coco.json: a COCO dataset (images, categories, annotations with scores)
    COCO_RESULTS = "coco-results"  # detections.json: the bare results list pycocotools' loadRes reads
    YOLO = "yolo"  # labels/*.txt + data.yaml + classes.txt
    VOC = "voc"  # voc/*.xml, one Pascal VOC file per image
    LABEL_STUDIO = "label-studio"  # label_studio.json: tasks with predictions to import
    JSONL = "jsonl"  # detections.jsonl: one line per input
    CSV = "csv"  # detections.csv: one row per box


def open_writers(
    formats: Sequence[OutputFormat | str],
    out: str | os.PathLike,
    class_names: Sequence[str],
    annotations: Mapping | None = None,
    save_conf: bool = False,
    model_name: str = "",
    claim: Callable[[Path], object] | None = None,
) -> list[ResultWriter]:
    """One writer per format asked for (repeats ignored), each writing under ``out``. ``claim`` (e.g.
    ``OutputFolder.claim``) is told every output path before its file is written: the main files
    now, per-image files (YOLO labels, VOC XML) as each is written."""
    out = Path(out)
    writers: list[ResultWriter] = []
    for fmt in dict.fromkeys(OutputFormat(f) for f in formats):
        if fmt is OutputFormat.COCO:
            writers.append(CocoDatasetWriter(out / "coco.json", class_names, annotations))
        elif fmt is OutputFormat.COCO_RESULTS:
            writers.append(CocoWriter(out / "detections.json", class_names, annotations))
        elif fmt is OutputFormat.YOLO:
            writers.append(YoloWriter(out, class_names, save_conf=save_conf))
        elif fmt is OutputFormat.VOC:
            writers.append(VocWriter(out / "voc"))
        elif fmt is OutputFormat.LABEL_STUDIO:
            writers.append(LabelStudioWriter(out / "label_studio.json", model_name=model_name))
        elif fmt is OutputFormat.JSONL:
            writers.append(JsonlWriter(out / "detections.jsonl"))
        else:
            writers.append(CsvWriter(out / "detections.csv"))
    if claim is not None:
        for writer in writers:
            writer.claim = claim
            for path in writer.main_paths:
                claim(path)
    return writers


class CocoDatasetWriter(ResultWriter):
    """A COCO detection dataset: ``images`` (id, file name, width, height), ``categories`` and
    ``annotations`` (id, image id, category id, bbox [x, y, w, h], area, iscrowd 0, and the
    detection's ``score``). It loads as ground truth in pycocotools and in supervision's
    ``DetectionDataset.from_coco``, and the ``score`` lets tools import it as pre-annotations.

    Every input that was read is an image of the dataset, with or without detections (failed
    inputs are not: their size is unknown). ``file_name`` is the path relative to the deepest
    folder holding every input (recorded as ``info.images_root``), so the dataset resolves against
    that folder. With an ``annotations`` file, image ids, file names and category ids come from it;
    an input it does not list gets an id after its largest.
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str], annotations: Mapping | None = None) -> None:
        self.path = Path(path)
        self.class_names = tuple(class_names)
        self.category_ids = category_ids_for(class_names, annotations)
        self.known = (
            {Path(img["file_name"]).name: (int(img["id"]), str(img["file_name"])) for img in annotations["images"]}
            if annotations
            else None
        )
        self.next_extra_id = max((i for i, _ in (self.known or {}).values()), default=0) + 1
        self.images: list[dict] = []
        self.sources: list[str] = []
        self.annotations: list[dict] = []

    def write(self, result: Result) -> None:
        if result.detections is None or result.image_size is None:
            return
        height, width = result.image_size
        file_name: str | None = None
        if self.known is not None and Path(result.source).name in self.known:
            image_id, file_name = self.known[Path(result.source).name]
        elif self.known is not None:
            image_id, self.next_extra_id = self.next_extra_id, self.next_extra_id + 1
        else:
            image_id = run_image_id(result)
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        self.sources.append(result.source)
        dets = result.detections
        scorable = np.array([self.category_ids[c] >= 0 for c in dets.class_id], dtype=bool)
        for record in dets[scorable].to_coco(image_id, self.category_ids):
            _, _, w, h = record["bbox"]
            record.update(id=len(self.annotations) + 1, area=round(w * h, 3), iscrowd=0)
            self.annotations.append(record)

    @property
    def main_paths(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        root = _common_folder(self.sources)
        for image, source in zip(self.images, self.sources):
            if image["file_name"] is None:
                image["file_name"] = _relative_name(source, root)
        categories = [
            {"id": cid, "name": name, "supercategory": ""}
            for name, cid in zip(self.class_names, self.category_ids)
            if cid >= 0
        ]
        dataset = {
            "info": {"description": "detections written by visionpipe", "images_root": str(root) if root else ""},
            "images": self.images,
            "categories": sorted(categories, key=lambda c: int(c["id"])),  # type: ignore[call-overload]
            "annotations": self.annotations,
        }
        with atomic_open(self.path) as handle:
            json.dump(dataset, handle)


def _common_folder(sources: Sequence[str]) -> Path | None:
    paths = [Path(s).resolve() for s in sources if _is_path(s)]
    if not paths:
        return None
    try:
        return Path(os.path.commonpath([p.parent for p in paths]))
    except ValueError:  # different drives: no common folder
        return None


def _is_path(source: str) -> bool:
    return not source.startswith("<")  # arrays and bytes are described as <array ...> / <bytes ...>


def _relative_name(source: str, root: Path | None) -> str:
    if root is None or not _is_path(source):
        return source
    return Path(source).resolve().relative_to(root).as_posix()


class VocWriter(ResultWriter):
    """Pascal VOC: ``<folder>/<image stem>.xml`` per image (an image without detections gets a file
    without objects).

    Boxes are written as the VOC devkit defines them: whole pixels, 1-based and inclusive, so
    ``xmin = x1 + 1`` and ``xmax = x2`` for a box covering pixels x1..x2-1 in 0-based
    coordinates (supervision's reader undoes exactly this). ``difficult`` and ``truncated`` are 0;
    the score is kept in a ``<confidence>`` element, which VOC readers ignore.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.used: set[str] = set()

    def write(self, result: Result) -> None:
        if result.detections is None or result.image_size is None:
            return
        height, width = result.image_size
        root = ET.Element("annotation")
        source = Path(result.source)
        ET.SubElement(root, "folder").text = source.parent.name
        ET.SubElement(root, "filename").text = source.name
        ET.SubElement(root, "path").text = result.source
        ET.SubElement(ET.SubElement(root, "source"), "database").text = "visionpipe"
        size = ET.SubElement(root, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(root, "segmented").text = "0"
        dets = result.detections
        boxes = np.round(dets.xyxy.astype(np.float64)).astype(np.int64)
        for (x1, y1, x2, y2), name, score in zip(boxes.tolist(), dets.names, dets.confidence.tolist()):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            ET.SubElement(obj, "confidence").text = f"{score:.5f}"
            bndbox = ET.SubElement(obj, "bndbox")
            xmin, ymin = min(x1 + 1, width), min(y1 + 1, height)
            for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", max(x2, xmin)), ("ymax", max(y2, ymin))):
                ET.SubElement(bndbox, tag).text = str(value)
        ET.indent(root)
        name = unique_name(f"{source.stem}.xml", result.index, self.used)
        with atomic_open(self._owned(self.folder / name), "wb") as handle:
            handle.write(ET.tostring(root, encoding="utf-8", xml_declaration=True))


class LabelStudioWriter(ResultWriter):
    """Label Studio tasks with pre-annotations (``predictions``), ready to import into a project
    whose labeling config has ``<Image name="image" value="$image"/>`` and
    ``<RectangleLabels name="label" toName="image">`` with the model's class names.

    Each task's ``data.image`` is the input's path as given; Label Studio needs it as a URL it can
    serve (for local files, ``/data/local-files/?d=<path under the document root>``), so rewrite the
    prefix to match your storage. Boxes are in percent of the image size, as Label Studio stores
    them; every region carries its score and the prediction the mean score.
    """

    def __init__(
        self, path: str | os.PathLike, model_name: str = "", from_name: str = "label", to_name: str = "image"
    ) -> None:
        self.path = Path(path)
        self.model_name = model_name
        self.from_name = from_name
        self.to_name = to_name
        self.tasks: list[dict] = []

    def write(self, result: Result) -> None:
        if result.detections is None or result.image_size is None:
            return
        height, width = result.image_size
        dets = result.detections
        regions = []
        for k, ((x1, y1, x2, y2), name, score) in enumerate(
            zip(dets.xyxy.astype(np.float64).tolist(), dets.names, dets.confidence.tolist())
        ):
            regions.append(
                {
                    "id": f"{result.index}_{k}",
                    "type": "rectanglelabels",
                    "from_name": self.from_name,
                    "to_name": self.to_name,
                    "original_width": int(width),
                    "original_height": int(height),
                    "image_rotation": 0,
                    "value": {
                        "x": 100.0 * x1 / width,
                        "y": 100.0 * y1 / height,
                        "width": 100.0 * (x2 - x1) / width,
                        "height": 100.0 * (y2 - y1) / height,
                        "rotation": 0,
                        "rectanglelabels": [name],
                    },
                    "score": round(score, 5),
                }
            )
        mean = float(dets.confidence.mean()) if len(dets) else 0.0
        self.tasks.append(
            {
                "id": result.index + 1,
                "data": {"image": result.source},
                "predictions": [
                    {"model_version": self.model_name or "visionpipe", "score": round(mean, 5), "result": regions}
                ],
            }
        )

    @property
    def main_paths(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        with atomic_open(self.path) as handle:
            json.dump(self.tasks, handle)


__all__ = ["CocoDatasetWriter", "LabelStudioWriter", "OutputFormat", "VocWriter", "open_writers"]
