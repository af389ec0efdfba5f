"""Peak memory (VmHWM) of a sharded job as its input list grows: it should not grow with the list.

Each configuration runs in a fresh subprocess that reports its own peak resident set size:

- ``machinery``: the real job driver, listing, shard plan, fingerprints, Parquet + JSONL shard files
  and fsynced manifest, with the detector replaced by a stand-in that returns one fixed box per
  input without reading the file (so 1M inputs cost minutes, not hours of inference);
- ``yolox``: the whole job with the built-in YOLOX-Nano on the real photos (local engine, one
  process).

The list files repeat the 64 val2017 photos.

    python benchmarks/job_memory.py [--machinery 1000,1000000] [--yolox 1000,4000] [--shard-size 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ASSETS, header


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


class StandInPipeline:
    """What ``run_shard`` needs of a pipeline (``stream`` and ``class_names``), without inference."""

    class_names = ("person", "car")

    def stream(self, paths):
        from visionpipe.detections import Detections
        from visionpipe.results import Result

        box = Detections(
            xyxy=np.array([[10, 20, 110, 220]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([1]),
            class_names=self.class_names,
        )
        for i, path in enumerate(paths):
            yield Result(index=i, image_id=Path(path).name, source=path, image_size=(480, 640), detections=box)


def child(mode: str, listing: str, out: str, shard_size: int) -> None:
    from visionpipe.distributed import JobSettings, run_job
    from visionpipe.distributed.work import run_shard

    settings = JobSettings(sources=(listing,), shard_size=shard_size)
    if mode == "machinery":
        stand_in = StandInPipeline()
        summary = run_job(settings, out, engine=lambda shards, folder: (run_shard(stand_in, s, folder) for s in shards))
    else:
        summary = run_job(settings, out)
    print(json.dumps({"peak_rss_mb": peak_rss_kb() / 1024, "images": summary.images, "seconds": summary.seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machinery", default="1000,1000000", help="list lengths for the stand-in detector")
    parser.add_argument("--yolox", default="1000,4000", help="list lengths for the real detector ('' for none)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.shard_size)
        return

    photos = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    runs = [("machinery", int(n)) for n in args.machinery.split(",") if n] + [
        ("yolox", int(n)) for n in args.yolox.split(",") if n
    ]
    print(header("Sharded job: peak RSS vs input list length", {"shard_size": args.shard_size}))
    print()
    print("| detector | input lines | peak RSS MB | seconds |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, count in runs:
            listing = Path(tmp) / f"list-{count}.txt"
            if not listing.exists():
                with open(listing, "w", encoding="utf-8") as handle:
                    for i in range(count):
                        handle.write(f"{photos[i % len(photos)]}\n")
            out = Path(tmp) / f"job-{mode}-{count}"
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--shard-size",
                    str(args.shard_size),
                    "--child",
                    mode,
                    str(listing),
                    str(out),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(done.stdout.strip().splitlines()[-1])
            assert report["images"] == count, report
            wall = time.perf_counter() - start
            print(f"| {mode} | {count:,} | {report['peak_rss_mb']:.0f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
