"""Export and graph tools: PyTorch to ONNX, dynamic batch, simplification, OpenVINO IR, NCNN, TensorRT.

Every function writes a new file and checks it before handing it over::

    export_torch(net, "net.onnx", (1, 3, 640, 640))        # torch vs onnxruntime at batch 1 and 3
    make_batch_dynamic("yolox_nano_416_coco.onnx", "yolox_dyn.onnx")   # batch of 8 vs 8 single runs
    simplify("yolox_dyn.onnx", "yolox_slim.onnx")           # onnxslim, outputs compared on one input
    to_openvino("yolox_slim.onnx", "ir/")                   # needs visionpipe[openvino]
    to_ncnn("yolox_slim.onnx", "ncnn/")                     # pnnx, needs visionpipe[ncnn-export]
    build_tensorrt_engine("yolox_slim.onnx", "yolox.engine", fp16=True)  # visionpipe[tensorrt] + GPU

* The source model is never written: an ``out_path`` naming the source is refused.
* A result that fails its check is not left at ``out_path``: the file is written beside it under a
  temporary name, checked, and only then moved into place, so a failed run keeps what was there.
* ``metadata_props`` (e.g. Ultralytics ``names``/``imgsz``/``task``) are carried over, so the new
  file configures itself in :func:`~visionpipe.models.loader.load_model` as the source did.

Measured on the shared assets (onnxruntime 1.32 CPU): YOLOX-Nano's batch can be made dynamic (a
batch of 8 equals 8 single runs exactly); NanoDet-m and FastestDet cannot, their graphs fix the
batch in channel-shuffle Reshapes with constant shapes ([1, 2, 58, 40, 40] in NanoDet's
``Reshape_13``, [24, 2, 1936] = batch x channels / 2 in FastestDet's ``Reshape_13``), and NanoDet's
outputs ([1600, 80], ...) have no batch axis at all.
"""

from __future__ import annotations

# One module per job since the split; this one keeps every former import working.
from visionpipe.errors import FixedBatchError
from visionpipe.optimize.batch import DynamicBatchResult, batch_pinning_reshapes, make_batch_dynamic
from visionpipe.optimize.checks import BATCH_DIM, DEFAULT_ATOL, DEFAULT_RTOL, SYMBOLIC_SIZE
from visionpipe.optimize.convert import OpenVinoResult, TensorRtResult, build_tensorrt_engine, to_openvino
from visionpipe.optimize.ncnn_export import NcnnResult, to_ncnn
from visionpipe.optimize.simplify import SimplifyResult, simplify
from visionpipe.optimize.torch_export import ExportResult, export_torch

__all__ = [
    "BATCH_DIM",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "SYMBOLIC_SIZE",
    "DynamicBatchResult",
    "ExportResult",
    "FixedBatchError",
    "NcnnResult",
    "OpenVinoResult",
    "SimplifyResult",
    "TensorRtResult",
    "batch_pinning_reshapes",
    "build_tensorrt_engine",
    "export_torch",
    "make_batch_dynamic",
    "simplify",
    "to_ncnn",
    "to_openvino",
]
