"""Backend.run: any batch size, whatever batch the model is fixed at, rows kept in image order."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.onnx_graphs import channel_means_model, constant_model
from visionpipe.models import OnnxRuntimeBackend


def distinct_batch(n: int) -> np.ndarray:
    # image i has channel means (i, 10 + i, 20 + i): every row of the output names its image
    base = np.array([0.0, 10.0, 20.0], np.float32)
    return np.stack([np.broadcast_to((base + i)[:, None, None], (3, 32, 32)) for i in range(n)]).astype(np.float32)


def recording(backend: OnnxRuntimeBackend) -> list[int]:
    sizes: list[int] = []
    original = backend.forward

    def forward(tensor):
        sizes.append(int(tensor.shape[0]))
        return original(tensor)

    backend.forward = forward  # type: ignore[method-assign]
    return sizes


@pytest.mark.parametrize(
    ("fixed", "n", "forwards"),
    [
        (None, 5, [5]),
        (None, 1, [1]),
        (1, 3, [1, 1, 1]),
        (2, 5, [2, 2, 2]),  # last run padded
        (2, 2, [2]),
        (4, 3, [4]),  # one padded run
        (3, 7, [3, 3, 3]),
    ],
)
def test_run_splits_pads_and_joins(tmp_path, fixed, n, forwards):
    backend = OnnxRuntimeBackend(channel_means_model(tmp_path / "means.onnx", batch=fixed))
    assert backend.fixed_batch == fixed
    sizes = recording(backend)
    batch = distinct_batch(n)
    (means,) = backend.run(batch)
    assert sizes == forwards
    expected = np.array([[i, 10 + i, 20 + i] for i in range(n)], np.float32)
    np.testing.assert_allclose(means, expected, atol=1e-4)


def test_backend_reports_tensors_and_metadata(tmp_path):
    path = constant_model(
        tmp_path / "c.onnx", np.zeros((7, 16), np.float32), input_hw=(64, 96), metadata={"task": "detect", "x": "1"}
    )
    backend = OnnxRuntimeBackend(path)
    assert backend.image_input.name == "images"
    assert backend.input_hw == (64, 96)
    assert backend.fixed_batch is None
    assert [o.shape[1:] for o in backend.outputs] == [(7, 16)]
    assert backend.metadata == {"task": "detect", "x": "1"}
    assert backend.image_input.dtype == np.float32


def test_dynamic_input_size(tmp_path):
    backend = OnnxRuntimeBackend(channel_means_model(tmp_path / "means.onnx", input_hw=None))
    assert backend.input_hw == (None, None)
    (means,) = backend.run(np.ones((2, 3, 17, 23), np.float32))
    np.testing.assert_allclose(means, np.ones((2, 3)))


def test_float64_input_is_converted(tmp_path):
    backend = OnnxRuntimeBackend(channel_means_model(tmp_path / "means.onnx"))
    (means,) = backend.run(distinct_batch(2).astype(np.float64))
    np.testing.assert_allclose(means, [[0, 10, 20], [1, 11, 21]], atol=1e-4)
