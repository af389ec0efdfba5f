"""Conversions to other runtimes' formats: OpenVINO IR (``to_openvino``, written with its sidecar
spec) and TensorRT engines (``build_tensorrt_engine``, NVIDIA GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from visionpipe.errors import (
    BackendUnavailableError,
    MissingExtraError,
    OptimizationError,
    VisionpipeError,
    first_line,
)
from visionpipe.optimize.checks import PathResult
from visionpipe.optimize.graph import check_out_path, load_onnx, staged_file

Shape = tuple[int, ...]
ProfileShapes = tuple[Shape, Shape, Shape]


@dataclass
class OpenVinoResult(PathResult):
    """The OpenVINO IR pair :func:`to_openvino` wrote (``path`` is the .xml)."""

    path: Path
    bin_path: Path
    fp16: bool
    # the sidecar spec written beside the .xml (None when the source is not a known detector)
    spec_path: Path | None = None


@dataclass
class TensorRtResult(PathResult):
    """The serialized engine :func:`build_tensorrt_engine` wrote."""

    path: Path
    fp16: bool
    int8: bool
    workspace_gb: float
    size_bytes: int
    # input name -> (min, opt, max) shapes of the optimization profile (dynamic inputs only)
    profile: dict[str, ProfileShapes] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# OpenVINO


def to_openvino(source: str | os.PathLike, out_dir: str | os.PathLike, *, fp16: bool = False) -> OpenVinoResult:
    """Convert an ONNX model to OpenVINO IR: ``<out_dir>/<source stem>.xml`` and ``.bin``.

    ``fp16`` stores the weights in half precision (OpenVINO computes in the device's own precision
    either way). ``openvino.save_model`` compresses to fp16 unless told not to, so the choice is
    always passed explicitly. When the source loads as a detector (a sidecar spec, embedded
    metadata, or a layout only one family fits), its resolved spec is written beside the IR, so
    ``Pipeline("<out_dir>/<stem>.xml")`` runs it on OpenVINO with no flags.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingExtraError("openvino", "openvino", "OpenVINO IR conversion") from exc
    source = Path(source)
    # a clear error for missing/corrupt files before OpenVINO's own
    load_onnx(source, f"convert {source}")
    xml = check_out_path(source, Path(out_dir) / f"{source.stem}.xml")
    try:
        converted = ov.convert_model(str(source))
        ov.save_model(converted, str(xml), compress_to_fp16=fp16)
    except Exception as exc:
        raise OptimizationError(
            f"OpenVINO conversion of {source} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return OpenVinoResult(path=xml, bin_path=xml.with_suffix(".bin"), fp16=fp16, spec_path=_spec_beside(source, xml))


def _spec_beside(source: Path, written: Path) -> Path | None:
    """Write the source detector's resolved spec beside a converted file, if the source is one."""
    from visionpipe.models.loader import load_model
    from visionpipe.models.spec import write_sidecar_spec

    try:
        model = load_model(source)
    except VisionpipeError:  # not a detector visionpipe can configure: the IR alone is still useful
        return None
    return write_sidecar_spec(model, written)


# --------------------------------------------------------------------------------------------
# TensorRT


def build_tensorrt_engine(
    source: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    fp16: bool = False,
    int8: bool = False,
    workspace_gb: float = 4.0,
    max_batch: int = 8,
    opt_batch: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> TensorRtResult:
    """Build a serialized TensorRT 10 engine (parser -> builder config -> build_serialized_network).

    Needs the ``tensorrt`` package (visionpipe[tensorrt]) and an NVIDIA GPU with CUDA: without one,
    :class:`BackendUnavailableError`. An engine is specific to the GPU model and TensorRT version
    that built it. Inputs with a dynamic batch get an optimization profile from batch 1 to
    ``max_batch`` (tuned for ``opt_batch``, default ``max_batch``); dynamic height/width need
    ``image_size``. ``int8`` takes explicitly quantized (QDQ) models, e.g. from
    :func:`~visionpipe.optimize.quantize_static_int8`: TensorRT 10 deprecated calibration of float
    models, so a model without QuantizeLinear nodes is refused.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingExtraError("tensorrt", "tensorrt", "TensorRT engine build") from exc
    if _cuda_device_count() == 0:
        raise BackendUnavailableError(
            "a TensorRT engine build needs an NVIDIA GPU with a CUDA driver; none was found here"
        )
    source = Path(source)
    model = load_onnx(source, f"build a TensorRT engine from {source}")
    out = check_out_path(source, out_path)
    if workspace_gb <= 0 or max_batch < 1:
        raise ValueError(f"workspace_gb must be positive and max_batch at least 1, got {workspace_gb}, {max_batch}")
    if int8 and not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise OptimizationError(
            f"{source} has no QuantizeLinear nodes: int8 engines need a QDQ model (quantize_static_int8), "
            "as TensorRT 10 no longer calibrates float models"
        )

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # explicit batch is the only mode in TensorRT 10
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    # from the file, so external weights are found
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise OptimizationError(f"TensorRT cannot parse {source}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile_shapes = _optimization_profile(network, max_batch, opt_batch or max_batch, image_size, source)
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OptimizationError(f"TensorRT could not build an engine from {source} (see its log above)")
    with staged_file(out) as staged, open(staged, "wb") as handle:
        handle.write(serialized)
    return TensorRtResult(
        path=out,
        fp16=fp16,
        int8=int8,
        workspace_gb=workspace_gb,
        size_bytes=out.stat().st_size,
        profile=profile_shapes,
    )


def _optimization_profile(network, max_batch, opt_batch, image_size, source):
    """(min, opt, max) shapes for inputs with dynamic dims: batch 1..max_batch, height/width fixed."""
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if all(d > 0 for d in dims):
            continue
        fixed = list(dims)
        for axis in range(1, len(dims)):
            if dims[axis] > 0:
                continue
            if image_size is None or axis not in (len(dims) - 2, len(dims) - 1):
                raise OptimizationError(
                    f"{source}: input {tensor.name!r} has dynamic dims {dims}; give image_size=(height, width) "
                    "for a dynamic height/width (other dynamic axes are not supported)"
                )
            fixed[axis] = image_size[axis - (len(dims) - 2)]
        low, opt, high = list(fixed), list(fixed), list(fixed)
        if dims[0] <= 0:
            low[0], opt[0], high[0] = 1, min(opt_batch, max_batch), max_batch
        shapes[tensor.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def _cuda_device_count() -> int:
    """CUDA devices the driver reports (0 without a driver), asked directly of libcuda via ctypes so
    no CUDA Python package is needed."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            driver = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value
