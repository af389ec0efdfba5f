"""`visionpipe serve --engine ray`: the server's own app as Ray Serve replicas, on a Ray started in
the test session, answers what the plain server answers, over real sockets on 127.0.0.1."""

from __future__ import annotations

import time

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from visionpipe.distributed.ray_serve import APP_NAME, start_ray_serve, stop_ray_serve
from visionpipe.serve import ServeConfig

from ..serve.conftest import free_port, running, write_version

STARTUP_S = 240


@pytest.fixture(scope="module")
def repository(tmp_path_factory, asset):
    root = tmp_path_factory.mktemp("repository")
    write_version(root, "yolox", "1", asset("models/yolox_nano_416_coco.onnx"), "yolox")
    return root


def detect_requests(exposition: str, status: str) -> float:
    """The image route's request count with ``status`` in a Prometheus text exposition."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (
                sample.name.endswith("_total")
                and sample.labels.get("route") == "detect"
                and sample.labels.get("status") == status
            ):
                total += sample.value
    return total


def test_ray_serve_replicas_answer_like_the_plain_server(repository, asset):
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:3]
    plain_config = ServeConfig(sources=(repository,), port=free_port(), poll_seconds=0)
    ray_config = ServeConfig(sources=(repository,), port=free_port(), poll_seconds=0)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        start_ray_serve(ray_config, replicas=2)
        url = f"http://127.0.0.1:{ray_config.port}"
        give_up = time.monotonic() + STARTUP_S
        with httpx.Client(base_url=url, timeout=30) as on_ray:
            while True:
                try:
                    if on_ray.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < give_up, "Ray Serve did not become ready"
                time.sleep(0.5)
            deployment = serve.status().applications[APP_NAME].deployments[APP_NAME]
            assert deployment.replica_states.get("RUNNING") == 2

            with running(plain_config) as (plain_url, _), httpx.Client(base_url=plain_url, timeout=30) as plain:
                assert on_ray.get("/v2/models/yolox").json() == plain.get("/v2/models/yolox").json()
                for photo in photos:
                    body = photo.read_bytes()
                    headers = {"content-type": "image/jpeg"}
                    got = on_ray.post("/v1/models/yolox/detect", content=body, headers=headers)
                    expected = plain.post("/v1/models/yolox/detect", content=body, headers=headers)
                    assert got.status_code == expected.status_code == 200, got.text
                    assert got.json()["detections"] == expected.json()["detections"]
                    assert len(expected.json()["detections"]["class_id"]) > 0
                # the same limits: a body that is no image is refused the same way
                bad = {"content": b"not an image", "headers": {"content-type": "image/jpeg"}}
                assert on_ray.post("/v1/models/yolox/detect", **bad).status_code == (
                    plain.post("/v1/models/yolox/detect", **bad).status_code
                )
                # metrics are summed over both replicas: every scrape, whichever replica answers it,
                # counts all the detections answered so far (3 photos, twice more below)
                for photo in photos[:2]:
                    assert on_ray.post("/v1/models/yolox/detect", content=photo.read_bytes(), headers=headers)
                for _ in range(4):
                    metrics = on_ray.get("/metrics")
                    assert metrics.status_code == 200
                    assert detect_requests(metrics.text, "200") == len(photos) + 2, metrics.text
    finally:
        stop_ray_serve()
        ray.shutdown()
