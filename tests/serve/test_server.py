"""Every route of a real server, through httpx and tritonclient, against the in-process Pipeline."""

from __future__ import annotations

import base64

import cv2
import httpx
import numpy as np
import pytest
import supervision as sv
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.serve.conftest import free_port, running, write_version
from visionpipe import Pipeline
from visionpipe.serve import BatchingConfig, ServeConfig

PHOTOS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory, yolox_model, nanodet_model):
    root = tmp_path_factory.mktemp("repository")
    write_version(root, "yolox", "1", yolox_model, "yolox")
    write_version(root, "nanodet", "1", nanodet_model, "nanodet")
    config = ServeConfig(
        sources=(root,),
        port=free_port(),
        max_body_bytes=2_000_000,
        max_pixels=1_000_000,
        poll_seconds=0,
        batching=BatchingConfig(max_batch_size=4, max_queue_delay_ms=5),
    )
    with running(config) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def reference(yolox_model, photos):
    """The in-process pipeline's detections at conf 0.25 for the first photos."""
    with Pipeline({"model": yolox_model, "family": "yolox"}, conf=0.25) as pipe:
        return [pipe(p) for p in photos[:PHOTOS]]


def assert_same(xyxy, confidence, class_id, expected) -> None:
    assert len(confidence) == len(expected), (len(confidence), len(expected))
    np.testing.assert_allclose(np.asarray(xyxy, np.float32).reshape(-1, 4), expected.xyxy, atol=1e-4)
    np.testing.assert_allclose(confidence, expected.confidence, atol=1e-4)
    np.testing.assert_array_equal(class_id, expected.class_id)


def test_health_metadata_and_config(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "visionpipe" and "binary_tensor_data" in meta["extensions"]
    model = client.get("/v2/models/yolox").json()
    assert model["name"] == "yolox" and model["versions"] == ["1"]
    assert {i["datatype"] for i in model["inputs"]} == {"UINT8", "BYTES"}
    assert client.get("/v2/models/yolox/versions/1").json()["name"] == "yolox"
    assert client.get("/v2/models/yolox/ready").status_code == 200
    assert client.get("/v2/models/yolox/versions/1/ready").status_code == 200
    assert client.get("/v2/models/yolox/versions/7/ready").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    config = client.get("/v2/models/yolox/config").json()
    assert config["max_batch_size"] == 4 and len(config["parameters"]["class_names"]) == 80
    assert "/v1/models/{name}/detect" in client.get("/openapi.json").json()["paths"]


def test_image_route_equals_pipeline_raw_multipart_and_json(client, photos, reference):
    for photo, expected in zip(photos[:PHOTOS], reference):
        data = photo.read_bytes()
        raw = client.post("/v1/models/yolox/detect", content=data, headers={"content-type": "image/jpeg"})
        assert raw.status_code == 200, raw.text
        body = raw.json()
        d = body["detections"]
        assert_same(d["xyxy"], d["confidence"], d["class_id"], expected)
        assert d["class_name"] == [expected.class_names[c] for c in expected.class_id]
        assert body["image"] == {"width": cv2.imread(str(photo)).shape[1], "height": cv2.imread(str(photo)).shape[0]}
        # the same through supervision's reader of Roboflow responses
        parsed = sv.Detections.from_inference(body)
        np.testing.assert_allclose(parsed.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_array_equal(parsed.class_id, expected.class_id)
    photo, expected = photos[0], reference[0]
    multipart = client.post("/v1/models/yolox/detect", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    d = multipart.json()["detections"]
    assert_same(d["xyxy"], d["confidence"], d["class_id"], expected)
    encoded = base64.b64encode(photo.read_bytes()).decode()
    as_json = client.post("/v1/models/yolox/detect", json={"image": {"type": "base64", "value": encoded}})
    d = as_json.json()["detections"]
    assert_same(d["xyxy"], d["confidence"], d["class_id"], expected)


def test_image_route_parameters(client, photos, yolox_model):
    data = photos[1].read_bytes()
    with Pipeline({"model": yolox_model, "family": "yolox"}, conf=0.4, iou=0.5, max_det=3, classes=["person"]) as pipe:
        expected = pipe(photos[1])
    response = client.post(
        "/v1/models/yolox/detect",
        content=data,
        params={"conf": 0.4, "iou": 0.5, "max_det": 3, "classes": "person"},
    )
    d = response.json()["detections"]
    assert_same(d["xyxy"], d["confidence"], d["class_id"], expected)
    assert client.post("/v1/models/yolox/detect", content=data, params={"classes": "unicorn"}).status_code == 400
    assert client.post("/v1/models/yolox/detect", content=data, params={"conf": 2}).status_code == 400


def test_tritonclient_uint8_and_bytes_inputs(server, photos, reference):
    url = server[0].removeprefix("http://")
    client = triton.InferenceServerClient(url, network_timeout=30)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("yolox")
    assert client.get_model_metadata("yolox")["name"] == "yolox"
    assert client.get_model_config("yolox")["max_batch_size"] == 4
    # decoded BGR images, one per request (binary tensor data both ways, tritonclient's default)
    for photo, expected in zip(photos[:3], reference[:3]):
        image = cv2.imread(str(photo))
        tensor = triton.InferInput("images", [1, *image.shape], "UINT8")
        tensor.set_data_from_numpy(image[None])
        result = client.infer("yolox", [tensor], parameters={"conf": 0.25})
        n = int(result.as_numpy("num_detections")[0])
        assert_same(
            result.as_numpy("detection_boxes")[0, :n],
            result.as_numpy("detection_scores")[0, :n],
            result.as_numpy("detection_classes")[0, :n],
            expected,
        )
    # a batch of two in one request (a tensor batch holds images of one size)
    image = cv2.imread(str(photos[0]))
    batch = np.stack([image, image])
    tensor = triton.InferInput("images", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    result = client.infer("yolox", [tensor], parameters={"conf": 0.25})
    counts = result.as_numpy("num_detections")
    assert list(counts) == [len(reference[0])] * 2
    # encoded files as BYTES, JSON outputs requested explicitly
    files = np.array([p.read_bytes() for p in photos[:2]], dtype=object)
    tensor = triton.InferInput("encoded", [2], "BYTES")
    tensor.set_data_from_numpy(files)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("num_detections", "detection_scores")]
    result = client.infer("yolox", [tensor], outputs=outputs, parameters={"conf": 0.25})
    for row, expected in enumerate(reference[:2]):
        n = int(result.as_numpy("num_detections")[row])
        np.testing.assert_allclose(result.as_numpy("detection_scores")[row, :n], expected.confidence, atol=1e-4)
    assert result.as_numpy("detection_boxes") is None
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [tensor])
    # the version routes, the server metadata and the repository extension
    pinned = client.infer("yolox", [tensor], model_version="1", parameters={"conf": 0.25})
    assert pinned.get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException, match="no loaded version"):
        client.infer("yolox", [tensor], model_version="9")
    assert client.is_model_ready("yolox", "1") and not client.is_model_ready("yolox", "9")
    assert client.get_model_metadata("yolox", "1")["versions"] == ["1"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert {"name": "yolox", "version": "1", "state": "READY"} in client.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="disabled"):
        client.load_model("yolox")
    with pytest.raises(InferenceServerException, match="disabled"):
        client.unload_model("yolox")
    client.close()


def test_infer_json_tensors_and_rgb(client, photos, reference):
    image = cv2.imread(str(photos[2]))
    small = cv2.resize(image, (64, 48))
    request = {
        "id": "abc",
        "inputs": [{"name": "images", "shape": list(small.shape), "datatype": "UINT8", "data": small.tolist()}],
        "parameters": {"conf": 0.01},
    }
    bgr = client.post("/v2/models/yolox/versions/1/infer", json=request)
    assert bgr.status_code == 200, bgr.text
    body = bgr.json()
    assert body["id"] == "abc" and body["model_name"] == "yolox"
    request["inputs"][0]["data"] = small[:, :, ::-1].tolist()
    request["parameters"]["color_order"] = "rgb"
    rgb = client.post("/v2/models/yolox/infer", json=request).json()
    assert rgb["outputs"] == body["outputs"]
    # BYTES in JSON are base64
    encoded = base64.b64encode(photos[2].read_bytes()).decode()
    request = {
        "inputs": [{"name": "encoded", "shape": [1], "datatype": "BYTES", "data": [encoded]}],
        "parameters": {"conf": 0.25},
    }
    outputs = {o["name"]: o for o in client.post("/v2/models/yolox/infer", json=request).json()["outputs"]}
    assert outputs["num_detections"]["data"] == [len(reference[2])]
    np.testing.assert_allclose(outputs["detection_scores"]["data"], reference[2].confidence, atol=1e-4)


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "x", "shape": [2, 2, 3], "datatype": "UINT8", "data": [1, 2]}]}, "12 numbers"),
        ({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2, 300]}]}, "range"),
        ({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": ["a", "b", "c"]}]}, "numbers"),
        ({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "UINT8"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}, "base64"),
        ({"inputs": [{"name": "x", "shape": [2000, 2000, 3], "datatype": "UINT8", "data": []}]}, "MP"),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}],
                "outputs": [{"name": "nope"}],
            },
            "unknown outputs",
        ),
    ],
)
def test_infer_rejects_bad_tensors(client, request_body, fragment):
    response = client.post("/v2/models/yolox/infer", json=request_body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_limits_and_refusals(client, photos):
    # body over the limit: refused from the declared length, and when streamed without one
    big = b"\xff" * 2_000_001
    assert client.post("/v1/models/yolox/detect", content=big).status_code == 413
    streamed = client.post("/v1/models/yolox/detect", content=iter([big[:1_000_000], big[1_000_000:]]))
    assert streamed.status_code == 413
    # an image over the pixel limit (1.2 MP > 1 MP), small as a file
    _, png = cv2.imencode(".png", np.zeros((1000, 1200, 3), np.uint8))
    response = client.post("/v1/models/yolox/detect", content=png.tobytes(), headers={"content-type": "image/png"})
    assert response.status_code == 413 and "MP" in response.json()["error"]
    # not an image
    response = client.post("/v1/models/yolox/detect", content=b"hello", headers={"content-type": "image/jpeg"})
    assert response.status_code == 400 and "decode" in response.json()["error"]
    # no URL fetching, no pickles
    url = client.post("/v1/models/yolox/detect", json={"image": {"type": "url", "value": "http://169.254.169.254/"}})
    assert url.status_code == 400 and "not fetched" in url.json()["error"]
    pickled = client.post("/v1/models/yolox/detect", json={"image": {"type": "numpy", "value": "gASV"}})
    assert pickled.status_code == 400 and "pickle" in pickled.json()["error"]
    assert client.post("/v1/models/nope/detect", content=photos[0].read_bytes()).status_code == 404
    # CORS is off: a preflight gets no allow-origin header
    preflight = client.options(
        "/v1/models/yolox/detect",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    # model control is off by default
    assert client.post("/v2/repository/models/yolox/unload").status_code == 403
    assert client.post("/v2/repository/models/yolox/load").status_code == 403
    index = client.post("/v2/repository/index").json()
    assert {"name": "yolox", "version": "1", "state": "READY"} in index


def test_request_ids_cache_and_metrics(client, photos):
    data = photos[3].read_bytes()
    first = client.post(
        "/v1/models/yolox/detect", content=data, params={"conf": 0.33}, headers={"x-request-id": "req-42"}
    )
    assert first.headers["x-request-id"] == "req-42" and first.json()["request_id"] == "req-42"
    assert first.json()["cached"] is False
    second = client.post("/v1/models/yolox/detect", content=data, params={"conf": 0.33})
    assert second.json()["cached"] is True
    assert second.json()["detections"] == first.json()["detections"]
    # a different parameter is a different entry
    assert client.post("/v1/models/yolox/detect", content=data, params={"conf": 0.34}).json()["cached"] is False
    bad_id = client.get("/v2/health/live", headers={"x-request-id": "has spaces\tand tabs"})
    assert bad_id.headers["x-request-id"] != "has spaces\tand tabs" and len(bad_id.headers["x-request-id"]) == 32
    metrics = client.get("/metrics").text
    for name in (
        'visionpipe_requests_total{model="yolox",route="detect",status="200",version="1"}',
        'visionpipe_stage_duration_seconds_count{model="yolox",stage="decode"}',
        'visionpipe_stage_duration_seconds_count{model="yolox",stage="queue"}',
        'visionpipe_stage_duration_seconds_count{model="yolox",stage="inference"}',
        'visionpipe_stage_duration_seconds_count{model="yolox",stage="postprocess"}',
        'visionpipe_batch_size_bucket{le="1.0",model="yolox"}',
        'visionpipe_queue_depth{model="yolox",version="1"}',
        'visionpipe_inference_count_total{model="yolox",version="1"}',
        'visionpipe_execution_count_total{model="yolox",version="1"}',
        'visionpipe_cache_requests_total{result="hit"}',
        'visionpipe_rejected_requests_total{reason="too_large"}',
    ):
        assert name in metrics, name


def test_concurrent_requests_are_batched(server, client, photos, reference):
    """Eight clients at once: every answer right whichever batches they shared (batch formation
    itself is tested with a fake clock in test_batcher.py: timing here depends on the machine)."""
    from concurrent.futures import ThreadPoolExecutor

    state = server[1]
    with state.repository.lease("yolox") as loaded:
        runner = loaded.runner
    before = (runner.executions, runner.inferences)
    datas = [photos[i % PHOTOS].read_bytes() + b"\0" * (i // PHOTOS + 1) for i in range(24)]  # defeat the cache

    def call(data):
        return client.post("/v1/models/yolox/detect", content=data).json()

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(call, datas))
    for i, body in enumerate(bodies):
        d = body["detections"]
        assert_same(d["xyxy"], d["confidence"], d["class_id"], reference[i % PHOTOS])
    executions = runner.executions - before[0]
    inferences = runner.inferences - before[1]
    assert inferences == 24 and 1 <= executions <= 24


def test_full_queue_answers_503_with_retry_after_before_any_work(server, client, photos):
    state = server[1]
    with state.repository.lease("yolox") as loaded:
        batcher = loaded.batcher
    batcher.expect(batcher.max_queue)  # the queue's whole room taken by requests "being decoded"
    try:
        fresh = photos[0].read_bytes() + b"fresh"  # not in the response cache
        refused = client.post("/v1/models/yolox/detect", content=fresh)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "queue full" in refused.json()["error"]
        tensor = {"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}
        assert client.post("/v2/models/yolox/infer", json=tensor).status_code == 503
    finally:
        batcher.withdraw(batcher.max_queue)
    assert client.post("/v1/models/yolox/detect", content=fresh).status_code == 200
    assert 'visionpipe_rejected_requests_total{reason="queue_full"} 2.0' in client.get("/metrics").text
