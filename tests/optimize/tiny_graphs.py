"""Tiny YOLOv8-layout ONNX graphs for the optimization tests: what every test file builds alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HW = 32  # input height and width
NUM_CLASSES = 60  # 4 box rows + 60 classes = 64 channels, the YOLOv8 layout
ULTRALYTICS_META = {
    "names": str({i: f"class{i}" for i in range(NUM_CLASSES)}),
    "task": "detect",
    "imgsz": f"[{HW}, {HW}]",
    "stride": "32",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conv_relu_conv() -> list:
    """conv1 (images, w1, b1 -> c1, 3x3 same), relu1 (-> r1), conv2 (r1, w2, b2 -> c2, 3x3 same)."""
    return [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
    ]


def save_graph(
    path: Path,
    nodes: list,
    initializers: list,
    out_shape,
    metadata: dict[str, str] | None = ULTRALYTICS_META,
    batch: int | str = 1,
) -> Path:
    """Check and save a graph reading ``images`` (batch, 3, HW, HW) and writing ``output0``."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, HW, HW])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out_shape))],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
