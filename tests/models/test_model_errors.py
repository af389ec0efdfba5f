"""Loading and running models fails with clear, typed errors."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import (
    BackendUnavailableError,
    InputShapeError,
    ModelLoadError,
    Pipeline,
    UnknownOutputLayoutError,
    VisionpipeError,
)

FAMILIES = ["dbnet", "end2end", "fastestdet", "nanodet", "yolov5", "yolov8", "yolox"]


def yolov8_graph(path, **kwargs):
    values = np.zeros((7, 16), np.float32)  # (4 + 3 classes, 16 boxes)
    return constant_model(path, values, **kwargs)


# -- backend input checks ----------------------------------------------------------------------------


@pytest.fixture
def fixed_size_model(tmp_path):
    return visionpipe.load_model(yolov8_graph(tmp_path / "v8.onnx", input_hw=(64, 96)))


@pytest.mark.parametrize(
    "shape",
    [(3, 64, 96), (64, 96), (1, 1, 3, 64, 96)],  # wrong rank
)
def test_wrong_input_rank(fixed_size_model, shape):
    with pytest.raises(InputShapeError, match="rank"):
        fixed_size_model.backend.run(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 64, 96), (1, 3, 96, 64), (2, 3, 64, 95)])
def test_wrong_channel_or_size(fixed_size_model, shape):
    with pytest.raises(InputShapeError):
        fixed_size_model.backend.run(np.zeros(shape, np.float32))


def test_right_shape_runs(fixed_size_model):
    outputs = fixed_size_model.backend.run(np.zeros((2, 3, 64, 96), np.float32))
    assert [o.shape for o in outputs] == [(2, 7, 16)]


# -- outputs that fit no decoder, or not the one named -----------------------------------------------


def test_output_fitting_no_family(tmp_path):
    path = constant_model(tmp_path / "odd.onnx", np.zeros(7, np.float32), batch=1)
    with pytest.raises(UnknownOutputLayoutError) as info:
        visionpipe.load_model(path)
    message = str(info.value)
    assert "(1, 7)" in message
    for family in FAMILIES:
        assert family in message
    assert [tuple(s) for s in info.value.output_shapes] == [(1, 7)]
    assert sorted(info.value.families) == FAMILIES


@pytest.mark.parametrize("family", ["end2end", "yolox", "nanodet", "fastestdet", "yolov5"])
def test_family_that_does_not_fit(tmp_path, family):
    path = yolov8_graph(tmp_path / "v8.onnx")
    with pytest.raises(UnknownOutputLayoutError) as info:
        visionpipe.load_model(path, family=family)
    assert family in str(info.value)
    assert "7, 16" in str(info.value)  # the offending output shape is named


def test_unknown_family_name(tmp_path):
    path = yolov8_graph(tmp_path / "v8.onnx")
    with pytest.raises(UnknownOutputLayoutError, match="yolov99"):
        visionpipe.load_model(path, family="yolov99")


def test_ambiguous_layout_asks_for_a_family(tmp_path):
    # (1, 3549, 6) at 416x416 is both a one-class YOLOX grid (52^2 + 26^2 + 13^2 cells) and an
    # end-to-end output of 3549 boxes: nothing makes one narrower than the other
    path = constant_model(tmp_path / "amb.onnx", np.zeros((3549, 6), np.float32), input_hw=(416, 416))
    with pytest.raises(UnknownOutputLayoutError, match="several families"):
        visionpipe.load_model(path)
    assert visionpipe.load_model(path, family="end2end").family == "end2end"


def test_narrowest_family_wins_over_a_catch_all_layout(tmp_path):
    # (B, 8, 6) fits end2end exactly and YOLOv5's any-row-count layout loosely
    path = constant_model(tmp_path / "e2e.onnx", np.zeros((8, 6), np.float32))
    assert visionpipe.load_model(path).family == "end2end"
    # a YOLOX grid of exactly the right cell count is YOLOX, not a decoded YOLOv5 head
    grid = constant_model(tmp_path / "yolox.onnx", np.zeros((3549, 85), np.float32), input_hw=(416, 416))
    assert visionpipe.load_model(grid).family == "yolox"
    # the same rows at another input size no longer fit the YOLOX grid: only YOLOv5 is left
    other = constant_model(tmp_path / "v5.onnx", np.zeros((3549, 85), np.float32), input_hw=(320, 320))
    assert visionpipe.load_model(other).family == "yolov5"


# -- unreadable model files --------------------------------------------------------------------------


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError):
        visionpipe.load_model(tmp_path / "absent.onnx", family="yolox")
    with pytest.raises(ModelLoadError):
        Pipeline(tmp_path / "absent.onnx")


def test_directory_instead_of_model(tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ModelLoadError):
        visionpipe.load_model(tmp_path / "dir.onnx")


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"this is not a model\n" * 10])
def test_corrupt_model_file(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        visionpipe.load_model(path, family="yolov8")


@pytest.mark.real
def test_truncated_real_model(asset, tmp_path):
    data = asset("models/yolox_nano_416_coco.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        visionpipe.load_model(path, family="yolox")


def test_errors_share_the_base_class(tmp_path):
    with pytest.raises(VisionpipeError):
        visionpipe.load_model(tmp_path / "absent.onnx")


# -- devices -------------------------------------------------------------------------------------------


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_without_cuda_provider(tmp_path):
    path = yolov8_graph(tmp_path / "v8.onnx")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        visionpipe.load_model(path, device="cuda")
    with pytest.raises(BackendUnavailableError):
        Pipeline(path, device="cuda")


def test_unknown_device(tmp_path):
    path = yolov8_graph(tmp_path / "v8.onnx")
    with pytest.raises(BackendUnavailableError, match="tpu"):
        visionpipe.load_model(path, device="tpu")


def test_tensorrt_provider_listed_without_tensorrt_runtime_is_refused(monkeypatch):
    # onnxruntime-gpu lists TensorrtExecutionProvider even where libnvinfer is missing (seen on an
    # H200 machine), then runs everything on CUDA: refusing keeps a "tensorrt" benchmark honest
    from visionpipe.models.backends import onnxruntime as backend

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(backend, "tensorrt_runtime_present", lambda: False)
    with pytest.raises(BackendUnavailableError, match="libnvinfer"):
        backend._providers_for("tensorrt", listed)
    assert backend._providers_for("cuda", listed) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(backend, "tensorrt_runtime_present", lambda: True)
    assert backend._providers_for("tensorrt", listed) == listed
