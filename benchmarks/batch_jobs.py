"""Throughput of sharded jobs: one ``Pipeline.run``, the local engine with K processes, and the Ray
engine on this one machine, over the same list of paths (the 64 val2017 photos repeated), with the
built-in YOLOX-Nano. Ratios are measured in this one run; the outputs of the two engines are
compared input by input (boxes, scores and classes must be identical).

    python benchmarks/batch_jobs.py [--count 20000] [--shard-size 500] [--workers 2]

Ray starts inside the script (its start-up is timed apart, not counted in the job's time). Ray
runs its workers at nice 15 so that its own services stay responsive; beside other work that makes
the comparison one of priorities rather than engines, so this script starts Ray's workers at the
local engine's priority (``RAY_worker_niceness=0``) unless the variable is already set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import ASSETS, header
from visionpipe.distributed import JobSettings, run_job
from visionpipe.distributed.storage import read_shard
from visionpipe.models.zoo import resolve_model_source
from visionpipe.pipeline import Pipeline


def stored(folder: Path) -> dict[int, tuple]:
    out = {}
    for parquet in sorted((folder / "shards").glob("shard-*.parquet")):
        for image in read_shard(parquet):
            dets = image.detections
            out[image.index] = (
                image.path,
                None if dets is None else (dets.xyxy.tobytes(), dets.confidence.tobytes(), dets.class_id.tolist()),
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(header("Sharded jobs: throughput by engine", vars(args)))
    photos = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "paths.txt"
        listing.write_text("".join(f"{photos[i % len(photos)]}\n" for i in range(args.count)))
        paths = listing.read_text().splitlines()

        start = time.perf_counter()
        with Pipeline(resolve_model_source(None)) as pipe:
            done = sum(1 for r in pipe.stream(paths) if r.ok)
        single = time.perf_counter() - start
        assert done == args.count
        rows.append(("one Pipeline.run (this process)", single))

        settings = JobSettings(sources=(str(listing),), shard_size=args.shard_size)
        local = run_job(settings, Path(tmp) / "local", workers=args.workers)
        rows.append((f"local engine, --workers {args.workers}", local.seconds))

        import ray

        start = time.perf_counter()
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            on_ray = run_job(settings, Path(tmp) / "ray", engine="ray")
        finally:
            ray.shutdown()
        rows.append(("Ray engine, one node (default pool)", on_ray.seconds))
        identical = stored(Path(tmp) / "local") == stored(Path(tmp) / "ray")

    print()
    print("| path | images | seconds | images/s | × one Pipeline.run | × local engine |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(
            f"| {name} | {args.count:,} | {seconds:.1f} | {args.count / seconds:.1f} | "
            f"{single / seconds:.2f} | {local.seconds / seconds:.2f} |"
        )
    print(f"\nRay start-up (not counted above): {ray_start:.1f} s")
    print(f"identical detections per input, local vs Ray: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
