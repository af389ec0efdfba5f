"""`visionpipe serve` as a process: refusing an unsafe bind, SIGTERM under load, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.serve.conftest import free_port, write_version


def start(args: list[str], port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "visionpipe", "serve", *args, "--port", str(port), "--poll-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def wait_ready(process: subprocess.Popen, url: str, seconds: float = 90) -> None:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("server not ready in time")


def test_refuses_a_non_loopback_bind_without_keys(tmp_path, yolox_model):
    write_version(tmp_path, "yolox", "1", yolox_model, "yolox")
    # nothing is ever sent to 0.0.0.0: the process must refuse before it binds anything
    result = subprocess.run(
        [sys.executable, "-m", "visionpipe", "serve", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
    assert "Traceback" not in result.stderr


def inferred(url: str) -> float:
    """Images the server has run through its model so far, read from its metrics."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("visionpipe_inference_count_total{")
    )


def test_sigterm_under_load_finishes_in_flight_requests_and_exits_zero(tmp_path, yolox_model, photos):
    write_version(tmp_path, "yolox", "1", yolox_model, "yolox")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start([str(tmp_path)], port)
    try:
        wait_ready(process, url)
        statuses: list[int | str] = []
        lock = threading.Lock()
        per_request = 16  # each request carries 16 photos: two batches of eight, seconds of work in all
        files = [p.read_bytes() for p in photos[: 4 * per_request]]

        def call(k: int) -> None:
            client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
            tensor = triton.InferInput("encoded", [per_request], "BYTES")
            tensor.set_data_from_numpy(np.array(files[k * per_request : (k + 1) * per_request], dtype=object))
            try:
                result = client.infer("yolox", [tensor])
                outcome: int | str = 200 if len(result.as_numpy("num_detections")) == per_request else "short"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                statuses.append(outcome)

        threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        give_up = time.monotonic() + 60
        while inferred(url) == 0 and time.monotonic() < give_up:  # the first batch has run: all are in flight
            time.sleep(0.005)
        assert 0 < inferred(url) < 4 * per_request
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        assert process.wait(60) == 0
        assert statuses == [200] * 4, statuses
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/v2/health/live", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    logs = process.stderr.read().decode()
    assert '"msg": "request"' in logs and '"request_id"' in logs  # JSON lines with request ids


def test_worker_processes_share_one_port_and_sum_their_metrics(tmp_path, yolox_model, photos):
    write_version(tmp_path / "models", "yolox", "1", yolox_model, "yolox")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start([str(tmp_path / "models"), "--workers", "2"], port)
    try:
        wait_ready(process, url)
        with httpx.Client(base_url=url, timeout=60) as client:
            data = photos[0].read_bytes()
            answered = 0
            for k in range(12):  # new connections spread over both workers
                response = httpx.post(url + "/v1/models/yolox/detect", content=data + b"\0" * k, timeout=60)
                answered += response.status_code == 200
            assert answered == 12
            # every worker writes its samples to the shared folder, and any worker's scrape sums them
            text = client.get("/metrics").text
            line = next(
                ln
                for ln in text.splitlines()
                if ln.startswith('visionpipe_requests_total{model="yolox",route="detect"')
            )
            assert float(line.split()[-1]) == 12.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_missing_sources_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "visionpipe", "serve", str(Path("no/such/folder")), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr
