"""What every engine needs: the job's settings (and the pipeline they describe), the threads each
of several pipelines on one machine gets, and the detection of one shard into its files."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from visionpipe.distributed.shards import Shard
from visionpipe.distributed.storage import write_shard
from visionpipe.errors import JobError


@dataclass(frozen=True)
class JobSettings:
    """Everything that decides a job's results. ``device`` and ``batch_size`` only decide speed, so
    a job may be resumed with others (and on another engine)."""

    sources: tuple[str, ...]
    shard_size: int
    model: tuple[str, ...] = ()  # model names or files; several make an ensemble; none: the default
    conf: float | None = None
    iou: float | None = None
    classes: tuple[int | str, ...] | None = None
    max_det: int | None = None
    agnostic: bool | None = None
    input_size: int | tuple[int, int] | None = None
    half: bool = False
    family: str | None = None
    fusion: str | None = None  # None: the ensemble spec's or the default (WBF)
    weights: tuple[float, ...] | None = None
    fusion_iou: float | None = None
    max_pixels: int = 50_000_000
    batch_size: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise JobError(f"the shard size must be at least 1, got {self.shard_size}")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed job must share with its start (JSON-shaped)."""
        values = json.loads(json.dumps(asdict(self)))
        values.pop("device")
        values.pop("batch_size")
        return values

    def build_pipeline(self, concurrency: int | None = None, intra_op_threads: int | None = None):
        """The Pipeline these settings describe, with this many inference lanes and threads each."""
        from visionpipe.io.images import DecodeLimits
        from visionpipe.models.zoo import model_sources
        from visionpipe.pipeline import Pipeline

        return Pipeline(
            model_sources(list(self.model)),
            conf=self.conf,
            iou=self.iou,
            classes=list(self.classes) if self.classes is not None else None,
            max_det=self.max_det,
            agnostic=self.agnostic,
            input_size=self.input_size,
            half=self.half,
            family=self.family,
            fusion=self.fusion,
            weights=self.weights,
            fusion_iou=self.fusion_iou,
            limits=DecodeLimits(max_pixels=self.max_pixels),
            batch_size=self.batch_size,
            device=self.device,
            concurrency=concurrency,
            intra_op_threads=intra_op_threads,
        )


def thread_budget(workers: int) -> dict[str, int]:
    """Inference threads for each of ``workers`` pipelines sharing this machine's cores."""
    cores = max(1, (os.cpu_count() or 1) // workers)
    concurrency = min(2, cores)
    return {"concurrency": concurrency, "intra_op_threads": max(1, cores // concurrency)}


def run_shard(pipeline, shard: Shard, folder: Path) -> dict[str, Any]:
    """Detect one shard's inputs, write its files, and return its manifest record."""
    results = [replace(r, index=shard.start + r.index) for r in pipeline.stream(shard.paths)]
    write_shard(folder, shard.index, results, pipeline.class_names)
    return {
        "shard": shard.index,
        "start": shard.start,
        "images": len(results),
        "failed": sum(r.error is not None for r in results),
        "detections": sum(len(r.detections) for r in results if r.detections is not None),
        "digest": shard.digest,
    }
