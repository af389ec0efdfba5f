"""The server under load, against the in-process Pipeline on the same photos.

Two servers run as separate processes (`visionpipe serve`, cache off, YOLOX-Nano 416): one with
dynamic batching (max batch 8, max queue delay 2 ms) and one at batch 1. Clients are threads with
keep-alive connections (``http.client``) in this process, sending the 64 val2017 JPEGs as raw bodies.

1. Throughput at concurrency 8: batched server, batch-1 server, and in-process ``Pipeline.run`` on
   the same JPEG bytes (batch 1 and batch 8), in interleaved rounds; the ratio server / best
   in-process is the goal (>= 0.85).
2. Latency at concurrency 1: server p50 minus in-process p50 (``pipe(jpeg_bytes)``), same photos.
3. Overload: an open-loop generator offers twice the measured saturated throughput (requests at a
   fixed rate, whatever the answers) for ``--overload-requests`` requests; the accepted requests'
   p99 latency is compared with the bound the queue implies, the refused ones must be 503 answered
   at once, and the server's RSS is compared between the first tenth and the end.

The client shares the CPU with the servers (and, on a shared machine, with anything else running),
so the absolute figures move between runs; ratios measured in the same run move less.

    python benchmarks/serve_load.py [--rounds 3] [--requests 256] [--overload-requests 20000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from _common import ASSETS, header
from visionpipe import Pipeline

MODEL = ASSETS / "models" / "yolox_nano_416_coco.onnx"
PHOTOS = sorted((ASSETS / "coco" / "images" / "val2017").glob("*.jpg"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`visionpipe serve` in its own process."""

    def __init__(self, spec: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "visionpipe", "serve", str(spec), "--port", str(self.port)]
        command += ["--poll-seconds", "0", "--cache-entries", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


class Client:
    """A keep-alive HTTP/1.1 connection from the standard library: the lightest client at hand, since
    it shares the CPU with the server it measures."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", "/v1/models/model/detect", body=body, headers={"Content-Type": "image/jpeg"})
        response = self.connection.getresponse()
        return response.status, response.read()


def closed_loop(url: str, bodies: list[bytes], concurrency: int, requests: int) -> tuple[float, list[float]]:
    """``concurrency`` clients, each sending its next request when the last is answered.

    Returns (requests/s, latencies in seconds)."""
    latencies: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        http = Client(url)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            start = time.perf_counter()
            status, body = http.post(bodies[k % len(bodies)])
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:200]!r}")
            with lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    return requests / (time.perf_counter() - start), latencies


def open_loop(server: Server, bodies: list[bytes], rate: float, requests: int, clients: int) -> dict:
    """Requests offered at ``rate`` per second regardless of answers; status and latency of each."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()
    rss_early = None
    counter = iter(range(requests))

    def client() -> None:
        nonlocal rss_early
        http = Client(server.url)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            due = start + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            status, _ = http.post(bodies[k % len(bodies)])
            with lock:
                results.append((status, time.perf_counter() - sent))
                if k == requests // 10:
                    rss_early = server.rss_mb()

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - start
    accepted = sorted(t for s, t in results if s == 200)
    refused = sorted(t for s, t in results if s == 503)
    other = [s for s, _ in results if s not in (200, 503)]
    return {
        "offered_per_s": requests / elapsed,
        "accepted": len(accepted),
        "refused": len(refused),
        "other": other,
        "accepted_p50_ms": 1000 * accepted[len(accepted) // 2],
        "accepted_p99_ms": 1000 * accepted[int(0.99 * (len(accepted) - 1))],
        "refused_p99_ms": 1000 * refused[int(0.99 * (len(refused) - 1))] if refused else float("nan"),
        "accepted_per_s": len(accepted) / elapsed,
        "rss_early_mb": rss_early,
        "rss_end_mb": server.rss_mb(),
    }


def stage_sums(url: str) -> dict[str, float]:
    """Seconds the server has spent per stage and in requests so far (its Prometheus sums)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    sums = {}
    for stage in ("decode", "queue", "inference", "postprocess"):
        prefix = f'visionpipe_stage_duration_seconds_sum{{model="model",stage="{stage}"}}'
        sums[stage] = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix))
    prefix = 'visionpipe_request_duration_seconds_sum{model="model"}'
    sums["request"] = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix))
    return sums


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=256, help="requests per throughput measurement")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--overload-requests", type=int, default=20_000)
    parser.add_argument("--max-queue", type=int, default=16)
    args = parser.parse_args()

    bodies = [p.read_bytes() for p in PHOTOS]
    folder = Path(tempfile.mkdtemp(prefix="serve-load-"))
    spec = folder / "model.yaml"
    spec.write_text(f"model: {MODEL}\nfamily: yolox\n")
    batched = Server(spec, "--max-batch-size", "8", "--max-queue-delay-ms", "2", "--max-queue", str(args.max_queue))
    single = Server(spec, "--max-batch-size", "1", "--max-queue", str(args.max_queue))
    pipe = Pipeline(spec)
    print(
        header(
            "visionpipe serve under load (YOLOX-Nano 416, 64 COCO val2017 JPEGs)",
            {"rounds": args.rounds, "requests": args.requests, "max_queue": args.max_queue, "cache": "off"},
        )
    )
    for server in (batched, single):  # warm the connections and the lanes
        closed_loop(server.url, bodies, 8, 32)
    pipe.run(bodies[:16])

    # 1. throughput at concurrency 8, interleaved rounds
    rates: dict[str, list[float]] = {"server, dynamic batching": [], "server, batch 1": []}
    rates.update({"Pipeline.run, batch 1": [], "Pipeline.run, batch 8": []})
    sequence = [bodies[k % len(bodies)] for k in range(args.requests)]
    for _ in range(args.rounds):
        rates["server, dynamic batching"].append(closed_loop(batched.url, bodies, 8, args.requests)[0])
        rates["server, batch 1"].append(closed_loop(single.url, bodies, 8, args.requests)[0])
        for batch in (1, 8):
            start = time.perf_counter()
            results = pipe.run(sequence, batch_size=batch)
            assert all(r.ok for r in results)
            rates[f"Pipeline.run, batch {batch}"].append(args.requests / (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in rates.items()}
    best_in_process = max(median["Pipeline.run, batch 1"], median["Pipeline.run, batch 8"])
    print("\n## 1. Throughput at concurrency 8 (images/s, median of rounds)\n")
    print("| path | images/s | × best in-process |")
    print("|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {value / best_in_process:.2f} |")
    print(f"\ndynamic batching / batch 1: {median['server, dynamic batching'] / median['server, batch 1']:.2f}×")

    # 2. latency at concurrency 1, with the server's own account of where the time went
    # one server request, then the same photo in process, alternately: drift hits both alike
    before = stage_sums(batched.url)
    client = Client(batched.url)
    server_latencies, local_latencies = [], []
    for k in range(args.latency_requests):
        body = bodies[k % len(bodies)]
        start = time.perf_counter()
        status, _ = client.post(body)
        server_latencies.append(time.perf_counter() - start)
        assert status == 200
        start = time.perf_counter()
        pipe(body)
        local_latencies.append(time.perf_counter() - start)
    after = stage_sums(batched.url)
    inside = {k: 1000 * (after[k] - before[k]) / args.latency_requests for k in after}
    server_p50, local_p50 = percentile(server_latencies, 0.5), percentile(local_latencies, 0.5)
    print("\n## 2. Latency at concurrency 1 (ms)\n")
    print("| path | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| server (HTTP, JPEG body) | {1000 * server_p50:.2f} | {1000 * percentile(server_latencies, 0.99):.2f} |")
    print(
        f"| in-process `pipe(jpeg_bytes)` | {1000 * local_p50:.2f} | {1000 * percentile(local_latencies, 0.99):.2f} |"
    )
    print(f"\nserver p50 - in-process p50: {1000 * (server_p50 - local_p50):.2f} ms")
    print(
        "server-side means per request (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in inside.items())
        + " (request = arrival to response inside the app)"
    )

    # 3. twice the saturated throughput, open loop
    pipe.close()
    saturated = median["server, dynamic batching"]
    rate = 2 * saturated
    overload = open_loop(batched, bodies, rate, args.overload_requests, clients=64)
    # An accepted request waits behind at most max_queue queued images and the batches the lanes
    # (2 on a CPU) are running, so by Little's law its time in the server is at most
    # (max_queue + lanes * max_batch_size) images at the rate the server drains them *during* the
    # overload (it also answers the 503s and shares the CPU with this client), plus the wait before
    # admission, which the refused requests' p99 shows. The hard bound is the deadline (504 after).
    lanes, max_batch = 2, 8
    drained = overload["accepted_per_s"]
    queue_ms = 1000 * (args.max_queue + lanes * max_batch) / drained
    bound_ms = queue_ms + overload["refused_p99_ms"]
    rss_change = overload["rss_end_mb"] / overload["rss_early_mb"] - 1
    print(f"\n## 3. Overload: {args.overload_requests} requests offered at 2 × {saturated:.1f} = {rate:.1f}/s\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| offered (achieved) | {overload['offered_per_s']:.1f}/s |")
    print(f"| accepted (200) | {overload['accepted']} ({overload['accepted_per_s']:.1f}/s) |")
    print(f"| refused (503) | {overload['refused']} |")
    print(f"| other statuses | {len(overload['other'])} |")
    print(f"| accepted p50 / p99 | {overload['accepted_p50_ms']:.1f} / {overload['accepted_p99_ms']:.1f} ms |")
    print(f"| refused p99 (time to the 503) | {overload['refused_p99_ms']:.1f} ms |")
    print(
        f"| bound: (max_queue + lanes x max_batch) / accepted rate + refused p99 "
        f"= ({args.max_queue} + {lanes} x {max_batch}) / {drained:.1f} + {overload['refused_p99_ms']:.0f} "
        f"| {bound_ms:.1f} ms |"
    )
    print(f"| accepted p99 / bound | {overload['accepted_p99_ms'] / bound_ms:.2f} |")
    print("| hard bound: the deadline (504 after) | 10000 ms |")
    print(
        f"| server RSS after 10 % / at the end | {overload['rss_early_mb']:.0f} / {overload['rss_end_mb']:.0f} MB "
        f"({100 * rss_change:+.1f} %) |"
    )
    for server in (batched, single):
        code = server.stop()
        if code != 0:
            print(f"server exited with {code}", file=sys.stderr)
    os.environ.pop("VISIONPIPE_SERVE_CONFIG", None)


if __name__ == "__main__":
    main()
