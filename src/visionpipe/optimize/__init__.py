"""Model optimization: int8 quantization (ONNX Runtime tooling), fp16, pruning, export and graph
tools, and a benchmark that measures every variant's size, speed and accuracy side by side.

The fp16, pruning, export and benchmark modules are imported on first use, so ``import
visionpipe.optimize`` stays cheap: ``from visionpipe.optimize.fp16 import convert_fp16``.
"""

from visionpipe.optimize.quantize import (
    AccuracyAwareResult,
    Attempt,
    ImageCalibrationReader,
    OptimizationError,
    StaticQuantization,
    compact_names,
    head_nodes,
    quantize_accuracy_aware,
    quantize_dynamic_int8,
    quantize_static_int8,
    write_sidecar_spec,
)

__all__ = [
    "AccuracyAwareResult",
    "Attempt",
    "ImageCalibrationReader",
    "OptimizationError",
    "StaticQuantization",
    "compact_names",
    "head_nodes",
    "quantize_accuracy_aware",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "write_sidecar_spec",
]
