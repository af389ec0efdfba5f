"""ONNX Runtime backend: the default runtime, CPU by default, CUDA/TensorRT when asked for."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from visionpipe.errors import BackendUnavailableError, ModelLoadError, first_line
from visionpipe.models.backend import Backend, TensorInfo

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` behind the :class:`Backend` interface.

    ``intra_op_threads=0`` lets ONNX Runtime pick (one per physical core). ``spinning=False`` stops
    idle worker threads from busy-waiting, which otherwise steals CPU from image decoding running
    beside inference.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        self.providers = _providers_for(device, ort.get_available_providers())

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # ORT raises several unrelated types for unreadable graphs
            raise ModelLoadError(f"cannot load model {self.path}: {first_line(exc)}") from exc

        self.inputs = [_info(i) for i in self.session.get_inputs()]
        self.outputs = [_info(o) for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._output_names = [o.name for o in self.outputs]

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        tensor = tensor.astype(self.image_input.dtype, copy=False)
        return self.session.run(self._output_names, {self.image_input.name: tensor})

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.path.name}, providers={self.providers})"


def _providers_for(device: str, available: list[str]) -> list[str]:
    if device not in PROVIDERS:
        raise BackendUnavailableError(f"unknown device {device!r}; choose one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[device]
    if wanted[0] not in available:
        hint = " (pip install 'visionpipe[gpu]' on a machine with CUDA)" if device != "cpu" else ""
        raise BackendUnavailableError(
            f"device {device!r} needs {wanted[0]}, but this onnxruntime offers only {available}{hint}"
        )
    if device == "tensorrt" and not tensorrt_runtime_present():
        # onnxruntime-gpu lists TensorrtExecutionProvider whether or not TensorRT is installed, and
        # without libnvinfer it quietly runs everything on CUDA: a "TensorRT" figure would be a lie
        raise BackendUnavailableError(
            "device 'tensorrt' needs the TensorRT runtime (libnvinfer), which was not found: "
            "pip install 'visionpipe[tensorrt]' or add TensorRT's lib folder to LD_LIBRARY_PATH"
        )
    return [p for p in wanted if p in available]


def tensorrt_runtime_present() -> bool:
    """Whether TensorRT's runtime library can be loaded (from the tensorrt wheel or the system)."""
    import ctypes

    try:  # the pip wheels (tensorrt / tensorrt-libs) put the library next to their package
        import tensorrt_libs  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _info(node) -> TensorInfo:
    return TensorInfo(node.name, tuple(node.shape), np.dtype(_ORT_TYPES.get(node.type, np.float32)))
