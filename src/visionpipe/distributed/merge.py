"""Merge a job's finished shards into the output files ``visionpipe detect`` writes.

Only shards named in the manifest are read, in shard order, one at a time. The merged folder holds
the same files under the same names as a plain ``detect --out`` run (``coco.json``,
``detections.json``, ``detections.jsonl``, ...) plus ``detections.parquet``. COCO results, JSONL
and Parquet are streamed straight into their file, so memory stays flat however large the job; the
other formats go through detect's own writers (``io.dataset_formats``), which hold what their one
file needs. Every file is written to a temporary name and renamed: an interrupted merge leaves no
half file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.distributed.storage import JOB_FILE, Manifest, StoredImage, _pyarrow, read_shard, shard_paths
from visionpipe.errors import JobError
from visionpipe.io.dataset_formats import OutputFormat, open_writers
from visionpipe.io.formats import atomic_open, category_ids_for, run_image_id
from visionpipe.results import Result

PARQUET = "parquet"
MERGE_FORMATS = tuple(f.value for f in OutputFormat) + (PARQUET,)
STREAMED_FILES = {
    OutputFormat.COCO_RESULTS.value: "detections.json",
    OutputFormat.JSONL.value: "detections.jsonl",
    PARQUET: "detections.parquet",
}


@dataclass
class MergeSummary:
    folder: str
    formats: list[str]
    shards: int
    images: int
    complete: bool


def merge_job(
    folder: str | os.PathLike,
    formats: Sequence[str] = (OutputFormat.COCO_RESULTS.value,),
    out: str | os.PathLike | None = None,
    *,
    annotations: Mapping[str, Any] | None = None,
    partial: bool = False,
) -> MergeSummary:
    """Merge the job in ``folder`` into the folder ``out`` (default ``folder/merged``).

    COCO image ids are the inputs' 1-based positions in the job's listing (as ``detect`` numbers a
    run's inputs), or, given ``annotations`` (a COCO dataset), its ids matched by file name (COCO
    results then leave out inputs it does not list), with its category ids matched by class name.
    An unfinished job is refused unless ``partial``.
    """
    folder = Path(folder)
    unknown = [f for f in formats if f not in MERGE_FORMATS]
    if unknown:
        raise JobError(f"unknown merge format {unknown[0]!r}; choose from {', '.join(MERGE_FORMATS)}")
    if not (folder / JOB_FILE).exists():
        raise JobError(f"{folder} holds no job (no {JOB_FILE})")
    finished, complete = Manifest(folder).read()
    if complete is None and not partial:
        raise JobError(
            f"the job in {folder} is not finished ({len(finished)} shards done): "
            "finish it with --resume, or merge what is done with --partial"
        )
    order = sorted(finished)
    for index in order:
        for path in shard_paths(folder, index):
            if not path.exists():
                raise JobError(f"{path} is listed as finished in the manifest but missing")
    target = Path(out) if out is not None else folder / "merged"
    chosen = list(dict.fromkeys(formats))
    for fmt in chosen:
        if fmt == OutputFormat.JSONL.value:
            _merge_jsonl(folder, order, target / STREAMED_FILES[fmt])
        elif fmt == PARQUET:
            _merge_parquet(folder, order, target / STREAMED_FILES[fmt])
        elif fmt == OutputFormat.COCO_RESULTS.value:
            _merge_coco_results(folder, order, target / STREAMED_FILES[fmt], annotations)
    others = [f for f in chosen if f not in STREAMED_FILES]
    if others:
        _merge_with_writers(folder, order, target, others, annotations)
    images = sum(finished[i]["images"] for i in order)
    return MergeSummary(str(target), chosen, len(order), images, complete is not None)


def stored_images(folder: Path, order: list[int]) -> Iterator[StoredImage]:
    for index in order:
        yield from read_shard(shard_paths(folder, index)[0])


def _as_result(image: StoredImage) -> Result:
    from visionpipe.errors import ImageDecodeError

    return Result(
        index=image.index,
        image_id=Path(image.path).name,
        source=image.path,
        image_size=(image.height, image.width) if image.width is not None and image.height is not None else None,
        detections=image.detections,
        error=None if image.error is None else ImageDecodeError(image.path, image.error),
    )


def _merge_jsonl(folder: Path, order: list[int], target: Path) -> None:
    with atomic_open(target, "wb") as handle:
        for index in order:
            with open(shard_paths(folder, index)[1], "rb") as shard:
                for line in shard:
                    handle.write(line)


def _merge_parquet(folder: Path, order: list[int], target: Path) -> None:
    _, pq = _pyarrow()
    with atomic_open(target, "wb") as handle:
        writer = None
        for index in order:
            table = pq.read_table(shard_paths(folder, index)[0])
            if writer is None:
                writer = pq.ParquetWriter(handle, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()


def _merge_coco_results(folder: Path, order: list[int], target: Path, annotations: Mapping[str, Any] | None) -> None:
    ids_by_file = (
        {Path(img["file_name"]).name: int(img["id"]) for img in annotations["images"]} if annotations else None
    )
    category_ids: list[int] | None = None
    count = 0
    with atomic_open(target) as handle:
        handle.write("[")
        for image in stored_images(folder, order):
            if image.detections is None:
                continue
            if ids_by_file is not None:
                image_id = ids_by_file.get(Path(image.path).name)
                if image_id is None:
                    continue  # not in the annotated set: nothing to score it against
            else:
                image_id = run_image_id(_as_result(image))
            if category_ids is None:
                category_ids = category_ids_for(image.detections.class_names, annotations)
            dets = image.detections
            scorable = np.array([category_ids[c] >= 0 for c in dets.class_id.tolist()], dtype=bool)
            for record in dets[scorable].to_coco(image_id, category_ids):
                handle.write(("," if count else "") + json.dumps(record))
                count += 1
        handle.write("]")


def _merge_with_writers(
    folder: Path, order: list[int], target: Path, formats: list[str], annotations: Mapping[str, Any] | None
) -> None:
    writers = open_writers(formats, target, _class_names(folder, order), annotations)
    try:
        for image in stored_images(folder, order):
            result = _as_result(image)
            for writer in writers:
                writer.write(result)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()


def _class_names(folder: Path, order: list[int]) -> tuple[str, ...]:
    _, pq = _pyarrow()
    for index in order:
        metadata = pq.read_schema(shard_paths(folder, index)[0]).metadata or {}
        names = json.loads(metadata.get(b"visionpipe.class_names", b"[]"))
        if names:
            return tuple(names)
    return ()
