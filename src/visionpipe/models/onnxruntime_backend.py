"""Former home of the ONNX Runtime backend, kept so existing imports work; it lives in
:mod:`visionpipe.models.backends.onnxruntime` now."""

from visionpipe.models.backends.onnxruntime import (
    _ORT_TYPES,
    PROVIDERS,
    OnnxRuntimeBackend,
    _providers_for,
    tensorrt_runtime_present,
)

__all__ = ["PROVIDERS", "_ORT_TYPES", "OnnxRuntimeBackend", "_providers_for", "tensorrt_runtime_present"]
