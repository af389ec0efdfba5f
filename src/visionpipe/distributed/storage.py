"""A job folder on disk: settings, the manifest of finished shards, and each shard's result files.

```
DIR/job.json                 the settings the job was started with (checked on --resume)
DIR/manifest.jsonl           one line per finished shard, appended and fsynced after its files
DIR/shards/shard-NNNNNN.parquet   one row per input: position, path, size, error, boxes, scores, classes
DIR/shards/shard-NNNNNN.jsonl     the same inputs as visionpipe detect's JSONL lines (plus "index")
DIR/summary.json             written when every shard is done
```

Crash safety: a shard's two files are each written to a temporary name and renamed into place,
then its manifest line is appended. A run killed at any moment leaves either no trace of a shard,
complete files without a manifest line (redone and replaced on resume), or a finished shard; a
manifest line torn by the kill is cut off on resume. Only shards named in the manifest are merged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.detections import Detections
from visionpipe.distributed.shards import shard_name
from visionpipe.errors import JobError, MissingExtraError
from visionpipe.io.formats import atomic_open, result_record
from visionpipe.results import Result

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
SHARDS_DIR = "shards"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "jobs", "sharded batch jobs") from None
    return pa, pq


def shard_paths(folder: Path, index: int) -> tuple[Path, Path]:
    """The Parquet and JSONL files of shard ``index`` in job folder ``folder``."""
    base = folder / SHARDS_DIR / shard_name(index)
    return base.with_suffix(".parquet"), base.with_suffix(".jsonl")


def write_shard(folder: Path, index: int, results: list[Result], class_names: tuple[str, ...]) -> None:
    """Both result files of one shard, each published atomically (Parquet last: a shard counts as
    written once its manifest line exists, and the manifest is appended after this returns)."""
    _, pq = _pyarrow()
    parquet_path, jsonl_path = shard_paths(folder, index)
    with atomic_open(jsonl_path) as handle:
        for result in results:
            handle.write(json.dumps({"index": result.index, **result_record(result)}) + "\n")
    with atomic_open(parquet_path, "wb") as handle:
        pq.write_table(results_table(results, class_names), handle)


def results_table(results: list[Result], class_names: tuple[str, ...]):
    """One row per input; boxes, scores and class ids as list columns (float32 boxes kept exact)."""
    pa, _ = _pyarrow()
    empty = Detections.empty(class_names)
    dets = [r.detections if r.detections is not None else empty for r in results]
    offsets = np.zeros(len(dets) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in dets], out=offsets[1:])
    xyxy = np.concatenate([d.xyxy for d in dets]).astype(np.float32) if dets else np.zeros((0, 4), np.float32)
    scores = np.concatenate([d.confidence for d in dets]).astype(np.float32) if dets else np.zeros(0, np.float32)
    classes = np.concatenate([d.class_id for d in dets]).astype(np.int32) if dets else np.zeros(0, np.int32)
    boxes = pa.FixedSizeListArray.from_arrays(pa.array(xyxy.reshape(-1)), 4)
    columns = {
        "index": pa.array([r.index for r in results], pa.int64()),
        "path": pa.array([r.source for r in results], pa.string()),
        "image_id": pa.array([r.image_id for r in results], pa.string()),
        "width": pa.array([r.image_size[1] if r.image_size else None for r in results], pa.int32()),
        "height": pa.array([r.image_size[0] if r.image_size else None for r in results], pa.int32()),
        "error": pa.array([_error_text(r) for r in results], pa.string()),
        "boxes": pa.ListArray.from_arrays(pa.array(offsets), boxes),
        "scores": pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores)),
        "class_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(classes)),
    }
    metadata = {b"visionpipe.class_names": json.dumps(list(class_names)).encode()}
    return pa.table(columns).replace_schema_metadata(metadata)


def _error_text(result: Result) -> str | None:
    if result.error is None:
        return None
    return str(result.error) or type(result.error).__name__


@dataclass
class StoredImage:
    """One input as a shard file holds it: detections, or the error that stopped it."""

    index: int
    path: str
    width: int | None
    height: int | None
    detections: Detections | None
    error: str | None


def read_shard(path: Path) -> Iterator[StoredImage]:
    """The inputs of one Parquet shard file, in their order."""
    _, pq = _pyarrow()
    table = pq.read_table(path)
    names = tuple(json.loads((table.schema.metadata or {}).get(b"visionpipe.class_names", b"[]")))
    boxes = table.column("boxes").combine_chunks()
    scores = table.column("scores").combine_chunks()
    classes = table.column("class_ids").combine_chunks()
    offsets = boxes.offsets.to_numpy()
    flat_boxes = boxes.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
    flat_scores = scores.flatten().to_numpy(zero_copy_only=False)
    flat_classes = classes.flatten().to_numpy(zero_copy_only=False)
    columns = {name: table.column(name).to_pylist() for name in ("index", "path", "width", "height", "error")}
    for row in range(table.num_rows):
        lo, hi = offsets[row], offsets[row + 1]
        error = columns["error"][row]
        yield StoredImage(
            index=columns["index"][row],
            path=columns["path"][row],
            width=columns["width"][row],
            height=columns["height"][row],
            detections=None
            if error is not None
            else Detections(
                xyxy=flat_boxes[lo:hi], confidence=flat_scores[lo:hi], class_id=flat_classes[lo:hi], class_names=names
            ),
            error=error,
        )


class Manifest:
    """The append-only record of finished shards (one JSON line each, fsynced)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST_FILE
        self._fd: int | None = None

    def read(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
        """Finished shards by index, and the completion record if the job finished."""
        shards: dict[int, dict[str, Any]] = {}
        complete = None
        if not self.path.exists():
            return shards, complete
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # torn by a kill: that shard is not finished
                record = json.loads(line)
                if "complete" in record:
                    complete = record
                else:
                    shards[int(record["shard"])] = record
        return shards, complete

    def open(self) -> None:
        """Open for appending, first cutting off a last line that a kill left unfinished."""
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with open(self.path, "r+b") as handle:
                    handle.truncate(keep)
                    os.fsync(handle.fileno())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise JobError("the manifest is not open")
        # one write() of one line: appended whole (O_APPEND), and on disk before the next shard starts
        os.write(self._fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_stale_parts(folder: Path) -> None:
    """Temporary files that a killed run left behind (never renamed, so never part of a result)."""
    shards = folder / SHARDS_DIR
    if shards.is_dir():
        for part in shards.glob(".*.part"):
            part.unlink(missing_ok=True)
