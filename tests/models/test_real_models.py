"""The real asset models: configuration from Ultralytics metadata, real batches, fixed-batch splitting."""

from __future__ import annotations

import ast

import cv2
import numpy as np
import onnx
import pytest

import visionpipe
from visionpipe import Pipeline

pytestmark = pytest.mark.real

PHOTOS = [
    "000000000139.jpg",
    "000000000285.jpg",
    "000000000632.jpg",
    "000000000724.jpg",
    "000000000776.jpg",
    "000000000785.jpg",
    "000000000802.jpg",
    "000000000872.jpg",
]


@pytest.fixture(scope="module")
def photos(asset):
    return [asset(f"coco/images/val2017/{name}") for name in PHOTOS]


@pytest.fixture(scope="module")
def yolov8n(asset):
    return visionpipe.load_model(asset("models/yolov8n_random_dynamic.onnx"))


@pytest.fixture(scope="module")
def yolox(asset):
    return visionpipe.load_model(asset("models/yolox_nano_416_coco.onnx"), family="yolox")


def record_batches(monkeypatch, model):
    shapes: list[tuple[int, ...]] = []
    original = model.backend.forward

    def forward(tensor):
        shapes.append(tuple(tensor.shape))
        return original(tensor)

    monkeypatch.setattr(model.backend, "forward", forward)
    return shapes


def test_yolov8n_configures_itself_from_metadata(asset, yolov8n):
    # the model's own metadata, read with onnx, independently of the loader
    props = {p.key: p.value for p in onnx.load(str(asset("models/yolov8n_random_dynamic.onnx"))).metadata_props}
    names = ast.literal_eval(props["names"])
    assert len(names) == 80
    assert yolov8n.family == "yolov8"
    assert yolov8n.class_names == tuple(str(names[i]) for i in range(80))
    assert yolov8n.input_hw == (640, 640)
    assert yolov8n.backend.fixed_batch is None  # dynamic batch
    assert yolov8n.decoder.num_classes == 80


def test_yolov8n_runs_a_real_batch_of_eight(monkeypatch, yolov8n, photos):
    shapes = record_batches(monkeypatch, yolov8n)
    with Pipeline(yolov8n, max_det=50) as pipe:
        results = pipe.run(photos, batch_size=8)
    assert shapes == [(8, 3, 640, 640)]
    assert [r.index for r in results] == list(range(8))
    for photo, result in zip(photos, results):
        assert result.error is None, result.error
        h, w = cv2.imread(str(photo)).shape[:2]
        assert result.image_size == (h, w)
        dets = result.detections
        n = len(dets)
        assert n <= 50
        assert dets.xyxy.shape == (n, 4) and dets.confidence.shape == (n,) and dets.class_id.shape == (n,)
        assert ((dets.class_id >= 0) & (dets.class_id < 80)).all()
        assert (dets.confidence > 0.25).all()
        assert (dets.xyxy[:, 0] >= 0).all() and (dets.xyxy[:, 2] <= w).all()
        assert (dets.xyxy[:, 1] >= 0).all() and (dets.xyxy[:, 3] <= h).all()


def test_fixed_batch_model_splits_batches_transparently(monkeypatch, yolox, photos):
    assert yolox.backend.fixed_batch == 1
    with Pipeline(yolox) as pipe:
        alone = [pipe(photo) for photo in photos[:4]]
        shapes = record_batches(monkeypatch, yolox)
        batched = pipe.run(photos[:4], batch_size=4)
    assert shapes == [(1, 3, 416, 416)] * 4
    assert sum(len(d) for d in alone) > 0  # real photos: the real model finds things
    for one, result in zip(alone, batched):
        assert result.error is None
        assert result.detections == one


def test_backend_run_splits_and_pads_for_fixed_batch(monkeypatch, yolox, photos):
    from visionpipe.preprocess import preprocess

    tensors = np.stack([preprocess(cv2.imread(str(p)), yolox.input_hw, yolox.preprocess)[0] for p in photos[:3]])
    shapes = record_batches(monkeypatch, yolox)
    together = yolox.backend.run(tensors)
    assert shapes == [(1, 3, 416, 416)] * 3
    assert together[0].shape == (3, 3549, 85)
    for i in range(3):
        np.testing.assert_array_equal(together[0][i : i + 1], yolox.backend.run(tensors[i : i + 1])[0])


def test_nanodet_outputs_without_batch_axis_get_one(asset):
    model = visionpipe.load_model(asset("models/nanodet_m_320_coco.onnx"), family="nanodet")
    # the file declares its outputs without a batch axis, e.g. [1600, 80]
    assert all(len(o.shape) == 2 for o in model.backend.outputs)
    for batch in (1, 2):
        outputs = model.backend.run(np.zeros((batch, 3, 320, 320), np.float32))
        cells = sorted((o.shape[1], o.shape[2]) for o in outputs)
        assert all(o.shape[0] == batch for o in outputs)
        assert cells == sorted([(1600, 80), (400, 80), (100, 80), (1600, 32), (400, 32), (100, 32)])
