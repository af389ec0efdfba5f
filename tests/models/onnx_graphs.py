"""Tiny hand-built ONNX graphs for decoder, loader and backend tests.

Every graph takes an image input ``images`` float32 (batch, 3, H, W). The "constant" graphs output a
tensor the test chose, broadcast to a real batch dimension by adding ``0 * mean(images)`` reshaped to
(batch, 1, ..., 1), so the runtime really produces one row per image. Boxes are encoded by the tests
themselves (inverting each family's formula); nothing here knows about decoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # opset 17 needs IR >= 8; every onnxruntime >= 1.14 reads it


def _dims(batch: int | None, rest: Sequence[int | str | None]) -> list[int | str]:
    dims: list[int | str] = [batch if batch is not None else "batch"]
    for i, d in enumerate(rest):
        dims.append(d if d is not None else f"d{i}")
    return dims


def _image_input(batch: int | None, input_hw: tuple[int, int] | None) -> onnx.ValueInfoProto:
    hw: list[int | str] = list(input_hw) if input_hw is not None else ["height", "width"]
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch if batch is not None else "batch", 3, *hw])


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    metadata: Mapping[str, str] | None,
) -> Path:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="visionpipe-tests")
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def constant_model(
    path: str | Path,
    values: np.ndarray,
    *,
    batch: int | None = None,
    input_hw: tuple[int, int] | None = (320, 320),
    output_dims: Sequence[int | str | None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A model whose single output ``output0`` is ``values`` (shape without batch) for every image.

    ``batch`` None makes the batch dimension dynamic; ``input_hw`` None makes height/width dynamic.
    ``output_dims`` overrides the declared output shape after the batch axis (None = dynamic).
    """
    values = np.asarray(values, dtype=np.float32)
    rest = values.shape
    declared = _dims(batch, output_dims if output_dims is not None else rest)
    ones = [1] * len(rest)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["mean_r"]),
        helper.make_node("Mul", ["mean_r", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "values"], ["output0"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([-1, *ones], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(values[None], "values"),
    ]
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, declared)
    return _save(Path(path), nodes, [_image_input(batch, input_hw)], [output], initializers, metadata)


def channel_means_model(
    path: str | Path, *, batch: int | None = None, input_hw: tuple[int, int] | None = (32, 32)
) -> Path:
    """A model whose output ``means`` (batch, 3) is each image's per-channel mean: rows follow images."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["means"], axes=[2, 3], keepdims=0)]
    output = helper.make_tensor_value_info("means", TensorProto.FLOAT, [batch if batch is not None else "batch", 3])
    return _save(Path(path), nodes, [_image_input(batch, input_hw)], [output], [], None)
