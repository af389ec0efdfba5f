"""The Ray engine, on a Ray started inside the test session (2 CPUs): the same detections and files
as the local engine, a job resumed across engines, and an actor killed mid-job retried with every
input stored exactly once. Every job runs under a deadline of its own, so a hang fails the test."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
import ray

from visionpipe.distributed import JobSettings, run_job
from visionpipe.distributed.ray_engine import pool_plan
from visionpipe.distributed.storage import MANIFEST_FILE, Manifest
from visionpipe.errors import JobError

from .test_jobs import manifest_shards, stored

DEADLINE_S = 240


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """16 inputs and what the local engine stores for them."""
    from .conftest import write_listing

    folder = tmp_path_factory.mktemp("reference")
    inputs = write_listing(folder / "inputs.txt", 16)
    run_job(JobSettings(sources=(str(inputs),), shard_size=4), folder / "job")
    return inputs, stored(folder / "job")


def bounded(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a thread, failing the test if it runs past the deadline."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(function, *args, **kwargs)
    try:
        return future.result(timeout=DEADLINE_S)
    except FutureTimeout:
        ray.shutdown()  # unblocks the job's thread
        pytest.fail(f"the Ray job did not finish within {DEADLINE_S} s")
    finally:
        pool.shutdown(wait=False)


def test_a_job_started_locally_is_finished_on_ray_with_the_same_detections(tmp_path, local_ray, reference):
    inputs, expected = reference
    settings = JobSettings(sources=(str(inputs),), shard_size=4)
    job = tmp_path / "job"
    run_job(settings, job)
    # keep the first two shards only, as if the local run had been killed there
    kept = [line for line in (job / MANIFEST_FILE).read_text().splitlines() if json.loads(line).get("shard") in (0, 1)]
    (job / MANIFEST_FILE).write_text("\n".join(kept) + "\n")
    for name in ("shard-000002", "shard-000003"):
        for suffix in (".parquet", ".jsonl"):
            (job / "shards" / (name + suffix)).unlink()

    summary = bounded(run_job, settings, job, resume=True, engine="ray")
    assert (summary.engine, summary.shards_skipped, summary.shards_run, summary.images) == ("ray", 2, 2, 16)
    assert sorted(manifest_shards(job)) == [0, 1, 2, 3]
    assert (job / "shards" / "shard-000003.parquet").exists()
    assert stored(job) == expected  # identical boxes, scores and classes per input across engines


def actor_pids() -> list[int]:
    """Processes of the pool's actors (Ray titles them after the callable class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if b"ShardRunner" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_an_actor_killed_mid_job_is_retried_and_every_input_is_stored_once(tmp_path, local_ray, reference):
    inputs, expected = reference
    job = tmp_path / "job"
    killed: list[tuple[int, int]] = []
    stop = threading.Event()

    def kill_an_actor_after_the_first_shard() -> None:
        while not stop.is_set():
            if (job / MANIFEST_FILE).exists() and manifest_shards(job):
                pids = actor_pids()
                if pids:
                    done = len(manifest_shards(job))
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append((pids[0], done))
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_an_actor_after_the_first_shard, daemon=True)
    killer.start()
    try:
        summary = bounded(run_job, JobSettings(sources=(str(inputs),), shard_size=2), job, engine="ray")
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no actor was found to kill"
    assert killed[0][1] < 8, "the actor was killed after the job's last shard: nothing was retried"
    assert summary.shards_run == 8 and summary.images == 16
    assert sorted(manifest_shards(job)) == list(range(8)), "every shard recorded exactly once"
    assert Manifest(job).read()[1] is not None
    assert stored(job) == expected  # every input exactly once, with the local engine's detections


def test_pool_plan_leaves_a_cpu_for_reading_and_gives_each_actor_a_gpu():
    assert pool_plan({"CPU": 8}, 1, "cpu", 0)["size"] == 7
    assert pool_plan({"CPU": 2}, 1, "cpu", 0) | {"threads": None} == {
        "size": 1,
        "num_cpus": 1.0,
        "num_gpus": 0,
        "threads": None,
    }
    crowded = pool_plan({"CPU": 2}, 1, "cpu", 4)
    assert crowded["size"] == 4 and crowded["num_cpus"] * 4 <= 1.0  # still one CPU left free
    on_gpus = pool_plan({"CPU": 16, "GPU": 2}, 1, "cuda", 0)
    assert (on_gpus["size"], on_gpus["num_gpus"]) == (2, 1.0)
    assert pool_plan({"CPU": 16, "GPU": 1}, 1, "cuda", 4)["num_gpus"] == 0.25
    with pytest.raises(JobError, match="has none"):
        pool_plan({"CPU": 16}, 1, "cuda", 0)
