"""OpenVINO backend: the IR that ``visionpipe optimize`` writes (``.xml`` + ``.bin``), or an ONNX file.

Needs ``pip install 'visionpipe[openvino]'``. Inference precision is pinned to fp32: on CPUs with
bf16 units OpenVINO would otherwise compute in bf16 by default and score differently from the
ONNX Runtime run of the same model (a quantized or fp16 IR still runs as it was written). Each
thread gets its own infer request, as the pipeline runs inference lanes side by side.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError, first_line
from visionpipe.models.backend import Backend, Dim, TensorInfo

DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}


class OpenVinoBackend(Backend):
    """An OpenVINO compiled model behind the :class:`Backend` interface."""

    runtime = "openvino"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", intra_op_threads: int = 0) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise MissingExtraError("openvino", "openvino", "the OpenVINO runtime") from exc

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        if device.lower() not in DEVICES:
            raise BackendUnavailableError(f"unknown OpenVINO device {device!r}; choose one of {sorted(DEVICES)}")
        core = ov.Core()
        target = DEVICES[device.lower()]
        if target != "AUTO" and target not in core.available_devices:
            raise BackendUnavailableError(f"OpenVINO offers {core.available_devices} here, not {target}")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"} if target == "CPU" else {}
        if intra_op_threads and target == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(intra_op_threads)
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, target, config)
        except Exception as exc:  # OpenVINO raises RuntimeError with pages of C++ context
            raise ModelLoadError(f"cannot load model {self.path} with OpenVINO: {first_line(exc)}") from exc
        self.device = target
        self.inputs = [_info(port) for port in model.inputs]
        self.outputs = [_info(port) for port in model.outputs]
        self.metadata = _onnx_metadata(self.path) if self.path.suffix.lower() == ".onnx" else {}
        self._local = threading.local()

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        tensor = np.ascontiguousarray(tensor, dtype=self.image_input.dtype)
        results = request.infer({0: tensor})
        # copies: the request reuses its output buffers on the next call
        return [np.array(results[port]) for port in self.compiled.outputs]

    def __repr__(self) -> str:
        return f"OpenVinoBackend({self.path.name}, device={self.device})"


def _info(port) -> TensorInfo:
    shape: tuple[Dim, ...] = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    try:
        name = port.get_any_name()
    except RuntimeError:  # an unnamed port
        name = f"port{port.get_index()}"
    return TensorInfo(name, shape, np.dtype(port.get_element_type().to_dtype()))


def _onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (Ultralytics names/imgsz/task), which OpenVINO does not expose."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # OpenVINO read it; metadata is a nicety
        return {}
    return {p.key: p.value for p in model.metadata_props}
