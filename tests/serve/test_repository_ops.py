"""Versions swapped under load, A/B routing, fallback, API keys and the monitor, on real servers."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.serve.conftest import free_port, running, write_version
from visionpipe.serve import BatchingConfig, ServeConfig
from visionpipe.serve.auth import new_key


def test_new_version_swapped_in_under_load_without_a_failed_request(tmp_path, yolox_model, nanodet_model, photos):
    write_version(tmp_path, "detector", "1", yolox_model, "yolox")
    config = ServeConfig(
        sources=(tmp_path,), port=free_port(), poll_seconds=0, allow_model_control=True, cache_entries=0
    )
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()
    lock = threading.Lock()
    with running(config) as (url, state):

        def client_loop(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for k in range(400):  # bounded; the test stops it much earlier
                    if stop.is_set():
                        return
                    data = photos[(worker + k) % 8].read_bytes()
                    response = client.post("/v1/models/detector/detect", content=data)
                    with lock:
                        statuses[response.status_code] += 1
                        if response.status_code == 200:
                            versions[response.json()["model"]["version"]] += 1

        threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # traffic on version 1
        write_version(tmp_path, "detector", "2", nanodet_model, "nanodet")
        with httpx.Client(base_url=url, timeout=60) as control:
            assert control.post("/v2/repository/models/detector/load").status_code == 200
        give_up = time.monotonic() + 60
        while versions["2"] < 10 and time.monotonic() < give_up:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(60)
        endpoint = state.repository.endpoint("detector")
        assert list(endpoint.versions) == ["2"]  # only the newest is kept loaded
    assert versions["1"] > 0 and versions["2"] >= 10
    assert set(statuses) == {200}, statuses


def test_ab_traffic_is_weighted_sticky_and_counted_per_variant(tmp_path, yolox_model, nanodet_model, photos):
    write_version(tmp_path, "detector", "1", yolox_model, "yolox")
    write_version(tmp_path, "detector", "2", nanodet_model, "nanodet")
    (tmp_path / "detector" / "serve.yaml").write_text('traffic: {"1": 1, "2": 1}\n')
    config = ServeConfig(sources=(tmp_path,), port=free_port(), poll_seconds=0)
    data = photos[0].read_bytes()
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:

        def version_for(client_id: str) -> str:
            response = client.post("/v1/models/detector/detect", content=data, headers={"x-client-id": client_id})
            return response.json()["model"]["version"]

        for client_id in ("alice", "bob", "carol"):
            assert len({version_for(client_id) for _ in range(4)}) == 1  # sticky
        split = Counter(version_for(f"client-{i}") for i in range(40))
        assert set(split) == {"1", "2"} and min(split.values()) >= 8  # about half each (binomial, 40 draws)
        # an explicit version bypasses the split
        pinned = client.post("/v1/models/detector/detect", content=data, params={"version": "1"})
        assert pinned.json()["model"]["version"] == "1"
        metrics = client.get("/metrics").text
        for version in ("1", "2"):
            assert (
                f'visionpipe_requests_total{{model="detector",route="detect",status="200",version="{version}"}}'
                in metrics
            )


def test_fallback_answers_when_the_primary_misses_its_deadline_or_fails(tmp_path, yolox_model, nanodet_model, photos):
    write_version(tmp_path, "backup", "1", nanodet_model, "nanodet")
    # one microsecond: no request can make it, so every request to these misses its deadline
    write_version(tmp_path, "slow", "1", yolox_model, "yolox")
    (tmp_path / "slow" / "serve.yaml").write_text("fallback: backup\ndeadline_ms: 0.001\n")
    write_version(tmp_path, "strict", "1", yolox_model, "yolox")
    (tmp_path / "strict" / "serve.yaml").write_text("deadline_ms: 0.001\n")
    write_version(tmp_path, "flaky", "1", yolox_model, "yolox")
    (tmp_path / "flaky" / "serve.yaml").write_text("fallback: backup\n")
    config = ServeConfig(sources=(tmp_path,), port=free_port(), poll_seconds=0, cache_entries=0)
    data = photos[0].read_bytes()
    with running(config) as (url, state), httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/v1/models/slow/detect", content=data)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == {"name": "backup", "version": "1", "fallback_from": "slow"}
        # without a fallback, a missed deadline is a 504
        assert client.post("/v1/models/strict/detect", content=data).status_code == 504

        # a model whose runtime starts failing after it was loaded (a lost device, say)
        def broken(batch):
            raise RuntimeError("device lost")

        flaky = state.repository.endpoint("flaky").versions["1"]
        flaky.runner.model.backend.run = broken
        answered = client.post("/v1/models/flaky/detect", content=data)
        assert answered.status_code == 200, answered.text
        assert answered.json()["model"]["fallback_from"] == "flaky"
        # asking for the version by name means that version: no fallback, the error is a clean 500
        pinned = client.post("/v1/models/flaky/detect", content=data, params={"version": "1"})
        assert pinned.status_code == 500 and "request_id" in pinned.json()
        assert "device lost" not in pinned.text and "Traceback" not in pinned.text
        assert 'visionpipe_fallbacks_total{model="flaky"} 1.0' in client.get("/metrics").text


def test_api_keys_and_rate_limits_on_a_real_server(tmp_path, yolox_model, photos):
    key, line = new_key("alice")
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(line + "\n")
    write_version(tmp_path / "models", "yolox", "1", yolox_model, "yolox")
    config = ServeConfig(
        sources=(tmp_path / "models",), port=free_port(), poll_seconds=0, api_keys_file=keys_file, rate_limit=1
    )
    data = photos[0].read_bytes()
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v2/health/live").status_code == 200  # probes need no key
        assert client.get("/v2/health/ready").status_code == 200
        missing = client.post("/v1/models/yolox/detect", content=data)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/models/yolox/detect", content=data, headers={"x-api-key": key + "x"}).status_code == 401
        assert client.get("/v2/models/yolox", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        good = client.post("/v1/models/yolox/detect", content=data, headers={"authorization": f"Bearer {key}"})
        assert good.status_code == 200
        # one request per second for this key: a quick burst is limited, with Retry-After
        burst = [client.get("/v2/models/yolox", headers={"x-api-key": key}) for _ in range(5)]
        limited = [r for r in burst if r.status_code == 429]
        assert limited and int(limited[0].headers["retry-after"]) >= 1


def test_monitor_records_each_answered_image(tmp_path, yolox_model, photos):
    from visionpipe.monitor import Store

    write_version(tmp_path / "models", "yolox", "1", yolox_model, "yolox")
    store = tmp_path / "monitor.db"
    config = ServeConfig(sources=(tmp_path / "models",), port=free_port(), poll_seconds=0, monitor=str(store))
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        for photo in photos[:3]:
            assert client.post("/v1/models/yolox/detect", content=photo.read_bytes()).status_code == 200
    # the server's shutdown committed everything it observed
    opened = Store.open(store)
    try:
        assert opened.count_records() == 3
        assert len(opened.records(tag="yolox/1")) == 3
    finally:
        opened.close()


@pytest.mark.parametrize("bad", ["traffic: 3\n", "surprise: 1\n", "traffic: {'1': -1}\n"])
def test_bad_model_settings_are_reported_not_served(tmp_path, yolox_model, bad):
    from visionpipe.serve.repository import ModelRepository

    write_version(tmp_path, "yolox", "1", yolox_model, "yolox")
    (tmp_path / "yolox" / "serve.yaml").write_text(bad)
    repository = ModelRepository(ServeConfig(sources=(tmp_path,), batching=BatchingConfig()))
    report = repository.refresh()
    assert not repository.ready and report["failed"] and "serve.yaml" in report["failed"][0]


def make_bundle(folder, model) -> None:
    """A minimal deployment bundle: the model and a sealed manifest listing its checksum and spec."""
    import json
    import shutil

    from visionpipe.models.bundle import seal_manifest, sha256_file

    (folder / "model").mkdir(parents=True)
    shutil.copyfile(model, folder / "model" / "yolox.onnx")
    manifest = {
        "format": 1,
        "manifest_sha256": "0" * 64,
        "files": {"model/yolox.onnx": {"sha256": sha256_file(folder / "model" / "yolox.onnx")}},
        "spec": {"model": "model/yolox.onnx", "family": "yolox"},
    }
    (folder / "manifest.json").write_bytes(seal_manifest(json.dumps(manifest, indent=1)))


def test_a_deployment_bundle_serves_as_a_version_and_a_tampered_one_is_refused(tmp_path, yolox_model, photos):
    write_version(tmp_path, "detector", "1", yolox_model, "yolox")
    config = ServeConfig(
        sources=(tmp_path,), port=free_port(), poll_seconds=0, allow_model_control=True, cache_entries=0
    )
    data = photos[0].read_bytes()
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        before = client.post("/v1/models/detector/detect", content=data).json()
        make_bundle(tmp_path / "detector" / "2", yolox_model)
        assert client.post("/v2/repository/models/detector/load").status_code == 200
        after = client.post("/v1/models/detector/detect", content=data).json()
        assert after["model"]["version"] == "2" and after["detections"] == before["detections"]
        # one changed byte in the bundled model: version 3 is refused, version 2 keeps serving
        make_bundle(tmp_path / "detector" / "3", yolox_model)
        weights = tmp_path / "detector" / "3" / "model" / "yolox.onnx"
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 1
        weights.write_bytes(bytes(raw))
        refused = client.post("/v2/repository/models/detector/load")
        assert refused.status_code == 400 and "not intact" in refused.json()["error"]
        assert client.post("/v1/models/detector/detect", content=data).json()["model"]["version"] == "2"
        assert client.post("/v2/repository/models/detector/load").status_code == 400  # still refused
        index = client.post("/v2/repository/index").json()
        assert any(row["version"] == "3" and row["state"] == "UNAVAILABLE" for row in index)
