"""Cost of monitoring: pipeline throughput with a Monitor attached vs without, in the same run.

(a) ``Pipeline.run`` over the COCO photos (JPEG files: decode, preprocess, YOLOX-Nano, NMS);
(b) the same with a ``Monitor`` writing to SQLite (image statistics in the decode threads; the
    prediction statistics and batched commits on the writer thread).
Each round runs (a) and (b) once, in alternating order (ab, ba, ab, ...), over every photo
``--passes`` times; the figure is the median over rounds of the round's ratio b/a (goal >= 0.97),
with the lowest and highest round beside it: pairing within a round cancels the machine's slow
drifts, which on a shared machine are larger than the cost being measured. Also the cost per
image of each part, on one core: image statistics of a 640x480 frame, the ``observe`` call, and
the writer's work per record.

    python benchmarks/monitor_overhead.py [--rounds 15] [--passes 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from _common import ASSETS, header
from visionpipe import Pipeline
from visionpipe.monitor import Monitor
from visionpipe.monitor.features import image_features
from visionpipe.monitor.monitor import Observation


def per_call_ms(function, repeat: int, rounds: int = 5) -> float:
    """Median over rounds of the mean CPU milliseconds per call on this thread (CPU time, not wall
    time: on a shared machine, waiting for a core is not the function's cost)."""
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(repeat):
            function()
        times.append((time.thread_time() - start) / repeat * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--passes", type=int, default=2, help="times each photo is processed per run")
    args = parser.parse_args()
    photos = sorted((ASSETS / "coco/images/val2017").glob("*.jpg")) + sorted(
        (ASSETS / "coco/images/train2017").glob("*.jpg")
    )
    photos = photos * args.passes
    print(header("Monitoring overhead", {"rounds": args.rounds, "images per run": len(photos), "conf": 0.3}))

    with tempfile.TemporaryDirectory() as folder:
        pipeline = Pipeline({"model": ASSETS / "models/yolox_nano_416_coco.onnx", "family": "yolox"}, conf=0.3)
        monitor = Monitor(Path(folder) / "monitor.db", class_names=pipeline.class_names)

        def plain() -> int:
            pipeline.monitor = None
            return sum(r.ok for r in pipeline.run(photos))

        def monitored() -> int:
            pipeline.monitor = monitor
            done = sum(r.ok for r in pipeline.run(photos))
            monitor.flush()  # the writer's work belongs to this pass
            return done

        plain()  # warm-up: model sessions, page cache
        # wall-clock rates, and the process's CPU seconds per image (all threads): on a machine
        # shared with other work the second is the steadier measure of what monitoring costs
        cpu: dict[str, list[float]] = {"plain": [], "monitored": []}

        def on_cpu(name, run):
            def measured() -> int:
                start = time.process_time()
                done = run()
                cpu[name].append((time.process_time() - start) / done)
                return done

            return measured

        contenders = {"plain": on_cpu("plain", plain), "monitored": on_cpu("monitored", monitored)}
        rates: dict[str, list[float]] = {"plain": [], "monitored": []}
        for round_ in range(args.rounds):
            order = ["plain", "monitored"] if round_ % 2 == 0 else ["monitored", "plain"]
            for name in order:
                start = time.perf_counter()
                done = contenders[name]()
                rates[name].append(done / (time.perf_counter() - start))
        rate_ratios = sorted(m / p for m, p in zip(rates["monitored"], rates["plain"]))
        cpu_ratios = sorted(p / m for p, m in zip(cpu["plain"], cpu["monitored"]))
        cpu_plain, cpu_monitored = (statistics.median(cpu[k]) * 1000 for k in ("plain", "monitored"))

        frame = cv2.resize(cv2.imread(str(photos[0])), (640, 480))
        features_ms = per_call_ms(lambda: image_features(frame), 200)
        result = pipeline.run(photos[:1])[0]
        values = dict(result.image_features or image_features(frame))
        observe_ms = per_call_ms(lambda: monitor.observe(result), 200)
        monitor.flush()
        batch = [
            Observation(1.8e9 + i, "bench", str(i), None, dict(values), {}, result.detections, result.image_size)
            for i in range(2000)
        ]
        start = time.thread_time()
        monitor._commit([monitor._summarise(o) for o in batch])
        writer_ms = (time.thread_time() - start) / len(batch) * 1000
        records = monitor.written
        monitor.close()
        pipeline.close()

    print()
    print("| path | images/s |")
    print("|---|---:|")
    print(f"| (a) Pipeline.run, no monitor (median) | {statistics.median(rates['plain']):.1f} |")
    print(f"| (b) Pipeline.run with Monitor (SQLite) (median) | {statistics.median(rates['monitored']):.1f} |")
    print(
        f"| **b/a**, median of {args.rounds} paired rounds (lowest, highest) | "
        f"**{statistics.median(rate_ratios):.3f}** ({rate_ratios[0]:.3f}, {rate_ratios[-1]:.3f}) |"
    )
    print()
    print("| CPU ms per image (process time, all threads) | ms |")
    print("|---|---:|")
    print(f"| (a) no monitor | {cpu_plain:.2f} |")
    print(f"| (b) with Monitor | {cpu_monitored:.2f} |")
    print(
        f"| **a/b** (throughput ratio when CPU-bound), median of paired rounds (lowest, highest) | "
        f"**{statistics.median(cpu_ratios):.3f}** ({cpu_ratios[0]:.3f}, {cpu_ratios[-1]:.3f}) |"
    )
    print()
    print("| per image, CPU time on one core | ms |")
    print("|---|---:|")
    print(f"| image statistics of a 640x480 frame (budget 2 ms) | {features_ms:.3f} |")
    print(f"| Monitor.observe (caller's thread) | {observe_ms:.3f} |")
    print(
        f"| writer thread per record (prediction statistics, JSON, window stats, batched SQLite commit) "
        f"| {writer_ms:.3f} |"
    )
    print(f"\n{records} records written; the CPU is shared with other work, so absolute rates move between runs.")


if __name__ == "__main__":
    main()
