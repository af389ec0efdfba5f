"""The Ray engine: the job's shards through Ray Data, an actor pool of pipelines writing shard files.

Each shard is one row of a Ray dataset; ``map_batches`` hands rows one at a time to
:class:`ShardRunner`, a callable class run in an actor pool (``compute=ActorPoolStrategy``), so each
actor loads its pipeline once and keeps it. An actor writes its shard's files itself (the same
``run_shard`` as the local engine) and returns only the small manifest record, which the driver
appends: the files, the manifest and ``--resume`` are those of the local engine, on either engine.

Sizing: actors ask for one CPU each (or one GPU each with ``device`` cuda/tensorrt), and by default
one CPU of the cluster is left free for Ray Data's own tasks and the driver, so the pool cannot
starve the rest of the pipeline of CPU (a known cause of hangs). The shard plan is fed in windows
of at least 64 shards (8 per actor on larger pools), so the driver never holds the whole listing.

An actor that dies (killed, out of memory) is restarted and its shard retried (Ray Data's actor
pools default ``max_restarts`` and ``max_task_retries`` to unbounded); shard files are replaced atomically and the driver records each
shard once, so every input appears exactly once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from visionpipe.distributed.shards import Shard
from visionpipe.distributed.work import JobSettings, run_shard, thread_budget
from visionpipe.errors import JobError, MissingExtraError

SHARDS_PER_ACTOR_PER_WINDOW = 8
# Each window is a new dataset and a new actor pool, so every actor loads its model again (5-10 s);
# windows of a few shards spent a fifth of their time starting. The floor bounds the driver's
# memory all the same (MIN_WINDOW_SHARDS x shard size paths: 32,000 at the default 500).
MIN_WINDOW_SHARDS = 64
GPU_DEVICES = ("cuda", "tensorrt")


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError("ray[data]", "ray", "the Ray engine") from None
    return ray


class ShardRunner:
    """One actor of the pool: builds the pipeline once, then detects and writes one shard per row."""

    def __init__(self, settings: JobSettings, folder: str, threads: dict[str, int]) -> None:
        self.pipeline = settings.build_pipeline(**threads)
        self.folder = Path(folder)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = []
        for index, start, paths in zip(batch["index"], batch["start"], batch["paths"]):
            shard = Shard(index=int(index), start=int(start), paths=tuple(str(p) for p in paths))
            records.append(json.dumps(run_shard(self.pipeline, shard, self.folder)))
        return {"record": records}


def ray_engine(settings: JobSettings, workers: int = 0, address: str | None = None):
    """An engine (see ``jobs.run_job``) running ``workers`` actors (0: as many as fit)."""
    if workers < 0:
        raise JobError(f"--workers must be 0 (as many as fit) or more, got {workers}")
    ray = _ray()

    def run(shards: Iterator[Shard], folder: Path) -> Iterator[dict[str, Any]]:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            yield from _run(ray, settings, shards, folder, workers)
        finally:
            if started_here:
                ray.shutdown()

    return run


def pool_plan(resources: dict[str, float], nodes: int, device: str, workers: int) -> dict[str, Any]:
    """Actors, resources per actor and pipeline threads for a cluster with ``resources`` in all."""
    cpus = float(resources.get("CPU", 1))
    gpus = float(resources.get("GPU", 0))
    wants_gpu = device in GPU_DEVICES
    if wants_gpu and gpus < 1:
        raise JobError(f"--device {device} asks for GPUs, and the Ray cluster has none")
    if workers:
        size = workers
    elif wants_gpu:
        size = int(gpus)
    else:
        size = max(1, int(cpus) - 1)  # one CPU left for Ray Data's tasks and the driver
    per_actor_cpus = 1.0 if size <= cpus - 1 or cpus < 2 else max(0.25, (cpus - 1) / size)
    return {
        "size": size,
        "num_cpus": per_actor_cpus,
        "num_gpus": min(1.0, gpus / size) if wants_gpu else 0,
        "threads": thread_budget(max(1, math.ceil(size / max(1, nodes)))),
    }


def _run(ray, settings: JobSettings, shards: Iterator[Shard], folder: Path, workers: int):
    plan = pool_plan(ray.cluster_resources(), len(ray.nodes()), settings.device, workers)
    window = max(MIN_WINDOW_SHARDS, plan["size"] * SHARDS_PER_ACTOR_PER_WINDOW)
    while True:
        chunk = list(islice(shards, window))
        if not chunk:
            return
        rows = [{"index": s.index, "start": s.start, "paths": list(s.paths)} for s in chunk]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardRunner,
            fn_constructor_kwargs={"settings": settings, "folder": str(folder), "threads": plan["threads"]},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(plan["size"], len(rows))),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
            # restarts and task retries: Ray Data's actor pools default both to unbounded (-1), and
            # passing them as remote arguments is deprecated; tests/distributed kills an actor
        )
        for row in dataset.iter_rows():
            yield json.loads(row["record"])
