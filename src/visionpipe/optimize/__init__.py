"""Model optimization: post-training int8 quantization (ONNX Runtime tooling), validated fp32 vs int8."""

from visionpipe.optimize.quantize import (
    AccuracyAwareResult,
    Attempt,
    ImageCalibrationReader,
    OptimizationError,
    StaticQuantization,
    head_nodes,
    quantize_accuracy_aware,
    quantize_dynamic_int8,
    quantize_static_int8,
    stem_nodes,
    write_sidecar_spec,
)

__all__ = [
    "AccuracyAwareResult",
    "Attempt",
    "ImageCalibrationReader",
    "OptimizationError",
    "StaticQuantization",
    "head_nodes",
    "quantize_accuracy_aware",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "stem_nodes",
    "write_sidecar_spec",
]
