"""Sharded jobs on the local engine: results equal a plain Pipeline.run, K processes equal one, a
run killed with SIGKILL and resumed equals an uninterrupted one, and the folder guards hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from visionpipe.distributed import JobSettings, merge_job, run_job
from visionpipe.distributed.storage import MANIFEST_FILE, Manifest, read_shard, shard_paths
from visionpipe.errors import JobError
from visionpipe.models.zoo import resolve_model_source
from visionpipe.pipeline import Pipeline

from .conftest import SAMPLES


def stored(folder: Path) -> dict[int, tuple]:
    """Every stored input by position: (path, error, boxes, scores, classes), from all shard files."""
    out: dict[int, tuple] = {}
    for parquet in sorted((folder / "shards").glob("shard-*.parquet")):
        for image in read_shard(parquet):
            assert image.index not in out, f"input {image.index} stored twice"
            dets = image.detections
            out[image.index] = (
                image.path,
                image.error,
                None if dets is None else dets.xyxy.tolist(),
                None if dets is None else dets.confidence.tolist(),
                None if dets is None else dets.class_id.tolist(),
            )
    return out


def manifest_shards(folder: Path) -> list[int]:
    lines = (folder / MANIFEST_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["shard"] for line in lines if "shard" in json.loads(line)]


def test_job_results_equal_pipeline_run_and_failures_are_kept(tmp_path, listing):
    missing = str(tmp_path / "missing.jpg")
    inputs = listing(6, extra=(missing, str(SAMPLES[0])))
    summary = run_job(JobSettings(sources=(str(inputs),), shard_size=3), tmp_path / "job")
    assert (summary.shards, summary.shards_run, summary.images, summary.failed) == (3, 3, 8, 1)

    paths = [line for line in inputs.read_text().splitlines()]
    with Pipeline(resolve_model_source(None)) as pipe:
        reference = pipe.run(paths)
    got = stored(tmp_path / "job")
    assert sorted(got) == list(range(8))
    for result in reference:
        path, error, boxes, scores, classes = got[result.index]
        assert path == result.source
        if result.error is not None:
            assert boxes is None and "missing.jpg" in error
            continue
        assert error is None and len(boxes) > 0
        np.testing.assert_array_equal(np.array(boxes, np.float32), result.detections.xyxy)
        np.testing.assert_array_equal(np.array(scores, np.float32), result.detections.confidence)
        assert classes == result.detections.class_id.tolist()

    # the JSONL shard files hold the same inputs, one line each, with the input's position
    lines = [
        json.loads(line) for i in range(3) for line in shard_paths(tmp_path / "job", i)[1].read_text().splitlines()
    ]
    assert [line["index"] for line in lines] == list(range(8))
    assert [len(line["detections"]) for line in lines] == [len(v[2] or []) for _, v in sorted(got.items())]
    assert lines[6]["error"] and lines[6]["detections"] == []
    assert summary.detections == sum(len(v[2] or []) for v in got.values())


def test_two_worker_processes_write_what_one_process_writes(tmp_path, listing):
    inputs = listing(10)
    settings = JobSettings(sources=(str(inputs),), shard_size=2)
    run_job(settings, tmp_path / "one")
    summary = run_job(settings, tmp_path / "two", workers=2)
    assert summary.shards_run == 5
    assert stored(tmp_path / "one") == stored(tmp_path / "two")
    assert sorted(manifest_shards(tmp_path / "two")) == [0, 1, 2, 3, 4]
    formats = ["coco-results", "jsonl", "parquet", "coco", "csv"]
    merge_job(tmp_path / "one", formats)
    merge_job(tmp_path / "two", formats)
    for name in ("detections.json", "coco.json", "detections.csv"):
        assert (tmp_path / "one/merged" / name).read_bytes() == (tmp_path / "two/merged" / name).read_bytes(), name
    one, two = (pq.read_table(tmp_path / f"{k}/merged/detections.parquet") for k in ("one", "two"))
    assert one.num_rows == 10 and one.equals(two)
    lines = (tmp_path / "two/merged/detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(10))
    dataset = json.loads((tmp_path / "two/merged/coco.json").read_text())
    assert len(dataset["images"]) == 10 and len(dataset["annotations"]) == sum(
        len(v[2]) for v in stored(tmp_path / "two").values()
    )


def test_sigkill_mid_job_then_resume_equals_an_uninterrupted_run(tmp_path, listing):
    inputs = listing(48)
    job = tmp_path / "killed"
    command = [sys.executable, "-m", "visionpipe", "detect", str(inputs), "--out", str(job), "--shard-size", "2"]
    proc = subprocess.Popen(
        [*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (job / MANIFEST_FILE).exists() and len(manifest_shards(job)) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = manifest_shards(job)
    assert 3 <= len(done_before) < 24, done_before
    assert Manifest(job).read()[1] is None  # not complete

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} finished before" in resumed.stderr
    shards = manifest_shards(job)
    assert sorted(shards) == list(range(24)), "every shard recorded exactly once"
    assert not list((job / "shards").glob(".*.part")), "no temporary file left"

    reference = tmp_path / "uninterrupted"
    run_job(JobSettings(sources=(str(inputs),), shard_size=2), reference)
    assert stored(job) == stored(reference)
    assert sorted(stored(job)) == list(range(48))
    merge_job(job, ["coco-results"])
    merge_job(reference, ["coco-results"])
    key = lambda r: (r["image_id"], r["category_id"], r["bbox"], r["score"])  # noqa: E731
    merged = sorted(json.loads((job / "merged/detections.json").read_text()), key=key)
    assert merged and merged == sorted(json.loads((reference / "merged/detections.json").read_text()), key=key)


def test_sigterm_stops_the_job_and_its_workers_cleanly(tmp_path, listing):
    inputs = listing(40)
    job = tmp_path / "job"
    command = [sys.executable, "-m", "visionpipe", "detect", str(inputs), "--out", str(job), "--shard-size", "2"]
    proc = subprocess.Popen(
        [*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (job / MANIFEST_FILE).exists() and manifest_shards(job):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before the signal: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
        assert "stopped by SIGTERM" in stderr.decode() and "--resume" in stderr.decode()
        assert "Traceback" not in stderr.decode()
        # the workers went with it, and what it left is whole
        time.sleep(1)
        left = subprocess.run(["ps", "-o", "stat=,cmd=", "-g", str(proc.pid)], capture_output=True, text=True)
        alive = [line for line in left.stdout.splitlines() if not line.strip().startswith("Z")]  # zombies: gone
        assert not alive, left.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert Manifest(job).read()[1] is None
    assert not list((job / "shards").glob(".*.part"))
    finished = manifest_shards(job)
    assert len(finished) == len(set(finished)) >= 1
    for index in finished:
        assert len(shard_paths(job, index)[1].read_text().splitlines()) == 2


def test_resume_cuts_a_torn_manifest_line_and_redoes_that_shard(tmp_path, listing):
    inputs = listing(4)
    settings = JobSettings(sources=(str(inputs),), shard_size=2)
    job = tmp_path / "job"
    run_job(settings, job)
    before = stored(job)
    # as if killed while appending shard 1's line (and before the completion line)
    lines = (job / MANIFEST_FILE).read_text().splitlines()
    first = next(line for line in lines if json.loads(line).get("shard") == 0)
    (job / MANIFEST_FILE).write_text(first + "\n" + '{"shard": 1, "sta')
    (job / "shards" / ".shard-000001.parquet.x.part").write_bytes(b"half")
    summary = run_job(settings, job, resume=True)
    assert (summary.shards_skipped, summary.shards_run) == (1, 1)
    assert manifest_shards(job) == [0, 1]
    assert stored(job) == before
    assert not list((job / "shards").glob(".*.part"))


def test_folder_guards(tmp_path, listing):
    inputs = listing(2)
    settings = JobSettings(sources=(str(inputs),), shard_size=1)
    job = tmp_path / "job"
    run_job(settings, job)
    with pytest.raises(JobError, match="already holds a job: pass --resume"):
        run_job(settings, job)
    with pytest.raises(JobError, match=r"other settings \(shard_size 1 there, 2 now\)"):
        run_job(JobSettings(sources=(str(inputs),), shard_size=2), job, resume=True)
    with pytest.raises(JobError, match="other settings"):
        run_job(JobSettings(sources=(str(inputs),), shard_size=1, conf=0.9), job, resume=True)
    # same settings, but the list now names other files: the finished shards no longer match
    inputs.write_text(f"{SAMPLES[3]}\n{SAMPLES[2]}\n")
    with pytest.raises(JobError, match="input listing changed since shard-000000"):
        run_job(settings, job, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(JobError, match="not empty and holds no job"):
        run_job(settings, other)
    assert (other / "keep.txt").read_text() == "mine"


def test_merge_refuses_an_unfinished_job_unless_partial(tmp_path, listing):
    inputs = listing(4)
    job = tmp_path / "job"
    run_job(JobSettings(sources=(str(inputs),), shard_size=2), job)
    lines = (job / MANIFEST_FILE).read_text().splitlines()
    (job / MANIFEST_FILE).write_text(lines[0] + "\n")
    with pytest.raises(JobError, match="not finished .1 shards done.*--partial"):
        merge_job(job, ["jsonl"])
    summary = merge_job(job, ["jsonl"], partial=True)
    assert (summary.shards, summary.images, summary.complete) == (1, 2, False)
    assert len((job / "merged/detections.jsonl").read_text().splitlines()) == 2
    with pytest.raises(JobError, match="holds no job"):
        merge_job(tmp_path, ["coco"])
    with pytest.raises(JobError, match="unknown merge format 'xml'"):
        merge_job(job, ["xml"])
