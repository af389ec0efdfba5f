"""Standard output formats, written atomically, and read back.

Writers take pipeline results one at a time, so a long run keeps nothing but what the format needs
in memory, and publish each file with a rename at the end: an interrupted run never leaves a half
file behind. Formats: COCO results JSON (the bare list pycocotools' ``loadRes`` reads), YOLO txt per
image (with ``data.yaml`` and ``classes.txt``), JSONL (one line per image) and CSV (one row per box,
one row for an image without any). The annotation-tool formats (COCO dataset, Pascal VOC, Label
Studio) are in :mod:`visionpipe.io.dataset_formats`; :func:`open_writers` builds any of them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from visionpipe.data import COCO80_NAMES, COCO80_TO_COCO91
from visionpipe.detections import Detections
from visionpipe.errors import MissingExtraError
from visionpipe.io.sinks import Sink
from visionpipe.results import Result


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; published outputs get what open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


def _temp_beside(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.fchmod(fd, _FILE_MODE)
    return fd, Path(tmp)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        text = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}  # file names kept byte for byte
        with os.fdopen(fd, mode, **({} if "b" in mode else text)) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def category_ids_for(class_names: Sequence[str], annotations: Mapping | None = None) -> list[int]:
    """COCO category id of each class: by name from an annotation file when given; the official
    COCO ids for the 80 COCO classes; otherwise class index + 1 (COCO ids start at 1)."""
    if annotations is not None:
        by_name = {c["name"]: int(c["id"]) for c in annotations.get("categories", [])}
        missing = [n for n in class_names if n not in by_name]
        if len(missing) == len(class_names):
            raise ValueError("none of the model's class names are categories of the annotation file")
        return [by_name.get(n, -1) for n in class_names]
    if tuple(class_names) == COCO80_NAMES:
        return list(COCO80_TO_COCO91)
    return list(range(1, len(class_names) + 1))


class ResultWriter(Sink[Result]):
    """Base of the writers: ``write`` each result, then ``close`` to publish the file(s); on an error
    inside ``with``, ``abort`` leaves no half-written file.

    ``claim``, when set (by :func:`visionpipe.io.dataset_formats.open_writers`), is told the path
    of every file the writer is about to write, before it is written — how a run's output folder
    lists what it owns (the files known from the start are in ``main_paths``).
    """

    claim: Callable[[Path], object] | None = None

    @property
    def main_paths(self) -> list[Path]:
        """The files this writer will write whatever the inputs (per-image files are claimed as
        they are written)."""
        return []

    def _owned(self, path: Path) -> Path:
        if self.claim is not None:
            self.claim(path)
        return path

    def write(self, result: Result) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        pass


class _StreamingFile:
    """A temporary file filled progressively and renamed into place by ``publish``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, self.tmp = _temp_beside(path)
        # surrogateescape: a file name that is not UTF-8 is written back as the bytes it was
        self.handle = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")

    def publish(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except BaseException:  # a full disk while flushing: no .part left behind
            self.discard()
            raise

    def discard(self) -> None:
        try:
            self.handle.close()
        except OSError:  # closing flushes, and the disk may still be full
            pass
        self.tmp.unlink(missing_ok=True)


def run_image_id(result: Result) -> int:
    """The COCO image id of an input without an annotation file: its 1-based position in the run
    (COCO ids start at 1). The COCO dataset and results files of one run use the same ids, so the
    results load against the dataset with pycocotools' ``loadRes``."""
    return result.index + 1


class CocoWriter(ResultWriter):
    """COCO results JSON: a list of {image_id, category_id, bbox [x, y, w, h], score}.

    Image ids come from the annotation file (matched by file name) when given, else the input's
    position in the run, counted from 1 (see :func:`run_image_id`).
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str], annotations: Mapping | None = None) -> None:
        self.path = Path(path)
        self.category_ids = category_ids_for(class_names, annotations)
        self.image_ids = (
            {Path(img["file_name"]).name: int(img["id"]) for img in annotations["images"]} if annotations else None
        )
        self.records: list[dict] = []

    def write(self, result: Result) -> None:
        if result.detections is None:
            return
        if self.image_ids is not None:
            image_id = self.image_ids.get(Path(result.source).name)
            if image_id is None:
                return  # not part of the annotated set: nothing to score it against
        else:
            image_id = run_image_id(result)
        dets = result.detections
        scorable = np.array([self.category_ids[c] >= 0 for c in dets.class_id], dtype=bool)
        self.records.extend(dets[scorable].to_coco(image_id, self.category_ids))

    @property
    def main_paths(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        with atomic_open(self.path) as handle:
            json.dump(self.records, handle)


class JsonlWriter(ResultWriter):
    """One JSON object per input: id, path, size, detections, stage times (ms) and error."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.file = _StreamingFile(Path(path))

    @property
    def main_paths(self) -> list[Path]:
        return [self.file.path]

    def write(self, result: Result) -> None:
        self.file.handle.write(json.dumps(result_record(result)) + "\n")

    def close(self) -> None:
        self.file.publish()

    def abort(self) -> None:
        self.file.discard()


CSV_COLUMNS = ["image_id", "path", "x1", "y1", "x2", "y2", "confidence", "class_id", "class_name", "error"]


def result_rows(result: Result) -> list[tuple]:
    """The table rows of one input, in ``CSV_COLUMNS`` order: one per box; an input with no boxes
    one row with None box fields (so it is not lost from a table of the run); a failed input one
    row with its error."""
    if result.detections is None:
        return [(result.image_id, result.source, None, None, None, None, None, None, None, error_text(result.error))]
    dets = result.detections
    if not len(dets):
        return [(result.image_id, result.source, None, None, None, None, None, None, None, None)]
    return [
        (result.image_id, result.source, *box, score, cls, name, None)
        for box, score, cls, name in zip(
            dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), dets.names
        )
    ]


def csv_rows(result: Result) -> list[list]:
    """:func:`result_rows` as CSV text fields: boxes to 3 decimals, scores to 5, None as empty."""
    rows = []
    for image_id, source, x1, y1, x2, y2, score, cls, name, error in result_rows(result):
        box = ["", "", "", ""] if x1 is None else [f"{v:.3f}" for v in (x1, y1, x2, y2)]
        rows.append(
            [
                image_id,
                source,
                *box,
                "" if score is None else f"{score:.5f}",
                "" if cls is None else cls,
                name or "",
                error or "",
            ]
        )
    return rows


class CsvWriter(ResultWriter):
    """One row per box, one row with empty box fields for an input without boxes, and one row with
    the error for a failed input (see :func:`csv_rows`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.file = _StreamingFile(Path(path))
        self.csv = csv.writer(self.file.handle)
        self.csv.writerow(CSV_COLUMNS)

    @property
    def main_paths(self) -> list[Path]:
        return [self.file.path]

    def write(self, result: Result) -> None:
        self.csv.writerows(csv_rows(result))

    def close(self) -> None:
        self.file.publish()

    def abort(self) -> None:
        self.file.discard()


def results_to_pandas(results) -> Any:
    """A pandas DataFrame of pipeline results with the CSV output's columns and rows: one per box,
    one with empty (NaN) box fields for an input without boxes, one with the error for a failed
    input. Needs pandas (``pip install 'visionpipe[pandas]'``)."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingExtraError("pandas", "pandas", "DataFrame output") from None
    rows = [row for result in results for row in result_rows(result)]
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    for column in ("x1", "y1", "x2", "y2", "confidence"):
        frame[column] = frame[column].astype("float64")  # None -> NaN
    frame["class_id"] = frame["class_id"].astype("Int64")  # nullable: an image without boxes has none
    return frame


def close_writers(writers: Sequence[ResultWriter]) -> None:
    """Publish every writer's file(s); if one fails (a full disk), the rest are discarded rather
    than left as ``.part`` files, and the first error is raised."""
    error: BaseException | None = None
    for writer in writers:
        if error is None:
            try:
                writer.close()
            except BaseException as exc:
                error = exc
                writer.abort()
        else:
            writer.abort()
    if error is not None:
        raise error


def abort_writers(writers: Sequence[ResultWriter]) -> None:
    for writer in writers:
        try:
            writer.abort()
        except OSError:
            pass


def unique_name(name: str, index: int, used: set[str]) -> str:
    """``name``, or ``<index>_<name>`` when an earlier input of the run already took it."""
    if name in used:
        name = f"{index:06d}_{name}"
    used.add(name)
    return name


class YoloWriter(ResultWriter):
    """A YOLO dataset's labels: ``<out>/labels/<image stem>.txt`` per image, with ``<out>/data.yaml``
    and ``<out>/classes.txt``.

    Rows are ``class cx cy w h``, normalised to [0, 1]: the five-column training format that
    Ultralytics' dataset loader accepts (an image without detections gets an empty file: a
    background image). ``save_conf`` appends the score as a sixth column, as Ultralytics'
    ``save_conf`` does for predictions (its dataset loader rejects such files).

    ``data.yaml`` (Ultralytics' dataset file: ``path``, ``train``/``val`` image folders, ``names``)
    expects the images in ``<out>/images/``, where Ultralytics looks for them beside ``labels/``;
    they are not copied there (photos are large): link or copy them. ``classes.txt`` lists one name
    per line, as CVAT's and labelImg's YOLO import expect.

    A label's name is the image id with ``.txt``: the file name, or the path relative to the
    inputs' common folder when names clash (``run_ids``), so labels then mirror the inputs' folders.
    Two ids that still map to one label name (``a.jpg`` and ``a.png``) get distinct files: the
    later is prefixed with its position in the run.
    """

    def __init__(self, out: str | os.PathLike, class_names: Sequence[str] = (), save_conf: bool = False) -> None:
        self.out = Path(out)
        self.folder = self.out / "labels"
        self.class_names = tuple(class_names)
        self.save_conf = save_conf
        self.used: set[str] = set()

    def write(self, result: Result) -> None:
        if result.detections is None or result.image_size is None:
            return
        height, width = result.image_size
        rows = result.detections.to_yolo(width=width, height=height, with_confidence=self.save_conf)
        # boxes are clipped to the image; rounding must not push a coordinate past 1 either
        np.clip(rows[:, 1:5], 0.0, 1.0, out=rows[:, 1:5])
        if self.save_conf:
            text = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f} {r[5]:.5f}\n" for r in rows)
        else:
            text = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)
        name = unique_name(Path(result.image_id).with_suffix(".txt").as_posix(), result.index, self.used)
        with atomic_open(self._owned(self.folder / name)) as handle:
            handle.write(text)

    def close(self) -> None:
        import yaml

        data = {
            "path": str(self.out.resolve()),
            "train": "images",
            "val": "images",
            "nc": len(self.class_names),
            "names": dict(enumerate(self.class_names)),
        }
        header = (
            "# YOLO dataset written by visionpipe: labels in labels/, one .txt per image.\n"
            "# Put (or link) the images in images/ beside labels/ to train or validate on them.\n"
        )
        with atomic_open(self.out / "data.yaml") as handle:
            handle.write(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        with atomic_open(self.out / "classes.txt") as handle:
            handle.write("".join(f"{name}\n" for name in self.class_names))

    @property
    def main_paths(self) -> list[Path]:
        return [self.out / "data.yaml", self.out / "classes.txt"]


def error_text(error: BaseException | None) -> str:
    if error is None:
        return ""
    return str(error) or type(error).__name__


def result_record(result: Result) -> dict:
    record: dict = {
        "id": result.image_id,
        "path": result.source,
        "width": result.image_size[1] if result.image_size else None,
        "height": result.image_size[0] if result.image_size else None,
        "detections": [],
        "times_ms": {k: round(v * 1000, 3) for k, v in vars(result.times).items()},
        "error": error_text(result.error) or None,
    }
    if result.detections is not None:
        record["detections"] = result.detections.to_records()
    return record


# -- reading back ---------------------------------------------------------------------------------


def record_box(item: Mapping) -> list[float]:
    """A JSON detection's box: ``xyxy``, or ``box`` in files written before the one vocabulary."""
    return item["xyxy"] if "xyxy" in item else item["box"]


def record_score(item: Mapping) -> float:
    """A JSON detection's score: ``confidence``, or ``score`` in older files."""
    return item["confidence"] if "confidence" in item else item["score"]


def read_jsonl(path: str | os.PathLike, class_names: Sequence[str] = ()) -> dict[str, Detections | str]:
    """``{path: Detections}`` from a JSONL file; failed inputs map to their error text."""
    out: dict[str, Detections | str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["error"]:
            out[record["path"]] = record["error"]
            continue
        dets = record["detections"]
        out[record["path"]] = Detections(
            xyxy=np.array([record_box(d) for d in dets], np.float32).reshape(-1, 4),
            confidence=[record_score(d) for d in dets],
            class_id=[d["class_id"] for d in dets],
            class_names=tuple(class_names),
        )
    return out


def read_csv(path: str | os.PathLike, class_names: Sequence[str] = ()) -> dict[str, Detections | str]:
    """``{path: Detections}`` from a CSV file; failed inputs map to their error text, inputs
    without boxes to empty Detections."""
    rows: dict[str, list[dict[str, str]]] = {}
    errors: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["error"]:
                errors[row["path"]] = row["error"]
            else:
                boxes = rows.setdefault(row["path"], [])
                if row["x1"]:  # an input without boxes has one row with empty box fields
                    boxes.append(row)
    out: dict[str, Detections | str] = dict(errors)
    for source, items in rows.items():
        out[source] = Detections(
            xyxy=np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in items], np.float32).reshape(-1, 4),
            confidence=[float(r["confidence"]) for r in items],
            class_id=[int(r["class_id"]) for r in items],
            class_names=tuple(class_names),
        )
    return out


def read_yolo(path: str | os.PathLike, *, width: int, height: int, class_names: Sequence[str] = ()) -> Detections:
    """One YOLO txt file (5 or 6 columns) of an image ``width`` x ``height`` pixels as Detections."""
    text = Path(path).read_text(encoding="utf-8")
    rows = np.loadtxt(io.StringIO(text), ndmin=2) if text.strip() else np.zeros((0, 6))
    return Detections.from_yolo(rows, width=width, height=height, class_names=class_names)
