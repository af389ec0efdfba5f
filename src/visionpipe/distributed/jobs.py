"""Sharded, resumable batch detection: the driver, and the local engine (this process or K processes).

The driver streams the input listing into shards (``shards.py``), skips those the manifest lists as
finished, hands the rest to an engine, and appends each finished shard to the manifest. Engines
only turn shards into result files: the local one here, Ray Data in ``ray_engine.py``. Both build
their pipelines from the same :class:`JobSettings`, so results, files and manifest are the same
whichever engine ran a shard, and a job started on one can be resumed on the other.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visionpipe.distributed.shards import Shard, iter_shards
from visionpipe.distributed.storage import (
    JOB_FILE,
    SUMMARY_FILE,
    Manifest,
    remove_stale_parts,
)
from visionpipe.distributed.work import JobSettings, run_shard, thread_budget
from visionpipe.errors import JobError
from visionpipe.io.formats import atomic_open
from visionpipe.io.sources import iter_sources

ENGINES = ("local", "ray")


@dataclass
class JobSummary:
    folder: str
    engine: str
    shards: int = 0  # in the whole plan
    shards_run: int = 0  # by this run
    shards_skipped: int = 0  # finished before (resume)
    images: int = 0  # in the whole job
    failed: int = 0
    detections: int = 0
    seconds: float = 0.0  # this run
    images_run: int = 0  # by this run

    @property
    def images_per_second(self) -> float | None:
        return round(self.images_run / self.seconds, 2) if self.seconds > 0 else None


# An engine turns pending shards into manifest records, in any order.
Engine = Callable[[Iterator[Shard], Path], Iterator[dict[str, Any]]]


def run_job(
    settings: JobSettings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    workers: int = 1,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> JobSummary:
    """Run (or, with ``resume``, continue) the sharded job ``settings`` describes, in folder ``out``.

    ``workers`` is the number of local processes (1: this process) or, with ``engine="ray"``, of
    Ray actors (0: as many as the cluster's CPUs allow). ``engine`` may also be any function that
    turns an iterator of shards and the job folder into manifest records after writing each shard's
    files with ``write_shard`` (``run_shard`` does both for a pipeline). ``on_shard`` sees each record.
    """
    if isinstance(engine, str) and engine not in ENGINES:
        raise JobError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    folder = Path(out)
    finished = _prepare_folder(folder, settings, resume)
    summary = JobSummary(folder=str(folder), engine=engine if isinstance(engine, str) else "custom")
    for record in finished.values():
        _count(summary, record)
    summary.shards_skipped = len(finished)
    start = clock()

    def pending() -> Iterator[Shard]:
        for shard in iter_shards(iter_sources(settings.sources), settings.shard_size):
            summary.shards = shard.index + 1
            done = finished.get(shard.index)
            if done is None:
                yield shard
            elif done["digest"] != shard.digest:
                raise JobError(
                    f"the input listing changed since {shard.name} was written in {folder}; "
                    "resume with the same inputs, or start a new job in another folder"
                )

    if callable(engine):
        run_engine: Engine = engine
    elif engine == "ray":
        from visionpipe.distributed.ray_engine import ray_engine

        run_engine = ray_engine(settings, workers=workers, address=ray_address)
    else:
        run_engine = local_engine(settings, workers=workers)

    manifest = Manifest(folder)
    manifest.open()
    try:
        for record in run_engine(pending(), folder):
            if record["shard"] in finished:
                continue  # a retried task that finished twice: its files were replaced, count it once
            finished[record["shard"]] = record
            manifest.append(record)
            _count(summary, record)
            summary.shards_run += 1
            summary.images_run += record["images"]
            if on_shard is not None:
                on_shard(record)
        summary.seconds = round(clock() - start, 3)
        manifest.append({"complete": True, "shards": summary.shards, "images": summary.images})
    finally:
        manifest.close()
    with atomic_open(folder / SUMMARY_FILE) as handle:
        json.dump({**asdict(summary), "images_per_second": summary.images_per_second}, handle, indent=2)
    return summary


def _count(summary: JobSummary, record: dict[str, Any]) -> None:
    summary.images += record["images"]
    summary.failed += record["failed"]
    summary.detections += record["detections"]


def _prepare_folder(folder: Path, settings: JobSettings, resume: bool) -> dict[int, dict[str, Any]]:
    """Check that ``folder`` may hold this job; the shards already finished there."""
    job_file = folder / JOB_FILE
    if job_file.exists():
        if not resume:
            raise JobError(f"{folder} already holds a job: pass --resume to continue it, or choose another --out")
        started = json.loads(job_file.read_text(encoding="utf-8"))
        now = settings.identity()
        changed = [k for k in sorted(set(started) | set(now)) if started.get(k) != now.get(k)]
        if changed:
            diffs = ", ".join(f"{k} {started.get(k)!r} there, {now.get(k)!r} now" for k in changed)
            raise JobError(f"{folder} holds a job with other settings ({diffs}); resume with the same settings")
        remove_stale_parts(folder)
        return Manifest(folder).read()[0]
    if folder.exists() and any(folder.iterdir()):
        raise JobError(f"{folder} is not empty and holds no job; choose an empty or new folder for --out")
    with atomic_open(job_file) as handle:
        json.dump(settings.identity(), handle, indent=2)
    return {}


# -- the local engine ------------------------------------------------------------------------------


def local_engine(settings: JobSettings, workers: int = 1) -> Engine:
    if workers < 1:
        raise JobError(f"--workers must be at least 1 for the local engine, got {workers}")

    def run(shards: Iterator[Shard], folder: Path) -> Iterator[dict[str, Any]]:
        if workers == 1:
            with settings.build_pipeline(**thread_budget(1)) as pipeline:
                for shard in shards:
                    yield run_shard(pipeline, shard, folder)
        else:
            yield from _run_processes(settings, shards, folder, workers)

    return run


def _run_processes(settings: JobSettings, shards: Iterable[Shard], folder: Path, workers: int):
    """K worker processes, each holding one pipeline; at most 2 shards per worker are queued, so
    the listing is read no faster than it is processed."""
    # spawn, not fork: ONNX Runtime's and the pipeline's threads do not survive a fork
    context = multiprocessing.get_context("spawn")
    tasks = context.Queue()
    done = context.Queue()
    processes = [
        context.Process(
            target=_worker_main,
            args=(settings, str(folder), tasks, done, os.getpid(), thread_budget(workers)),
            daemon=True,
            name=f"visionpipe-shard-worker-{k}",
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    listing = iter(shards)
    in_flight = 0
    exhausted = False
    try:
        while True:
            while not exhausted and in_flight < 2 * workers:
                shard = next(listing, None)
                if shard is None:
                    exhausted = True
                    break
                tasks.put(shard)
                in_flight += 1
            if in_flight == 0:
                break
            try:
                kind, payload = done.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode is not None]
                if dead:
                    raise JobError(
                        f"worker process {dead[0].name} exited (code {dead[0].exitcode}); "
                        "finished shards are kept: run again with --resume"
                    ) from None
                continue
            if kind == "error":
                raise JobError(payload)
            in_flight -= 1
            yield payload
    finally:
        for _ in processes:
            tasks.put(None)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def _worker_main(settings, folder, tasks, done, parent_pid, threads) -> None:
    """One worker process: build the pipeline once, then run shards until told to stop. It stops by
    itself when the driver is gone (killed), after the shard in hand."""
    try:
        pipeline = settings.build_pipeline(**threads)
    except Exception as exc:
        done.put(("error", f"cannot build the pipeline: {' '.join(str(exc).split())}"))
        return
    with pipeline:
        while os.getppid() == parent_pid:
            try:
                shard = tasks.get(timeout=0.5)
            except queue.Empty:
                continue
            if shard is None:
                return
            try:
                done.put(("done", run_shard(pipeline, shard, Path(folder))))
            except Exception as exc:  # e.g. a full disk: the driver stops, finished shards stay
                done.put(("error", f"{shard.name} failed: {' '.join(str(exc).split())}"))
                return
