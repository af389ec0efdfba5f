"""Float16 conversion with onnxconverter-common, float32 inputs and outputs kept::

    result = convert_fp16(load_model("yolox_nano_416_coco.onnx", family="yolox"), "yolox_fp16.onnx")
    result.path, result.size_bytes / result.source_size_bytes   # about 0.5
    result.blocked_op_types, result.float_nodes, result.notes
    Pipeline(result.path)                                         # no flags: a sidecar spec is written

* Weights and activations become float16 except in the ops of :func:`default_op_block_list`,
  which run in float32 behind Cast nodes. The model keeps float32 inputs and outputs
  (``keep_io_types``), so callers, preprocessing and decoders are unchanged.
* The original model file is never written: ``out_path`` equal to the source is refused, and the
  result is written under a temporary name beside ``out_path``, checked, and only then moved into
  place, so a failed conversion leaves nothing behind.
* ``check`` runs on one input (``check_image`` through the model's preprocessing, else a smooth
  synthetic image) and raises :class:`OptimizationError` when the result does not load or run in
  onnxruntime, gives a non-finite output, or when a tensor it computes in float16 exceeds
  float16's range (65504) in the float32 source. That last one is measured on the source because
  onnxruntime's CPU provider computes most float16 ops in float32, so the result itself shows no
  overflow on CPU that a GPU would. Reported: :attr:`Fp16Conversion.max_relative_error` (result vs
  source over every output element; on YOLOX-Nano 0.19, from box logits of empty cells, while
  detections agree to IoU > 0.98) and :attr:`Fp16Conversion.max_activation` (YOLOX-Nano: 211).
* ``model`` may be a :class:`~visionpipe.models.loader.DetectionModel` or a path. A path is
  configured with :func:`~visionpipe.models.loader.load_model` (sidecar spec, embedded metadata,
  or the one decoder family its outputs fit); when that fails (no family fits, inconsistent
  metadata) the model is still converted, no sidecar spec is written and
  :attr:`Fp16Conversion.notes` says why.
* Speed: ONNX Runtime's CPU provider has float16 kernels for few ops and runs the rest in float32
  behind inserted Casts, so on CPU expect the same latency (YOLOX-Nano, NanoDet-m, FastestDet on
  onnxruntime 1.32, 2 cores: within 10% of float32 either way); float16 pays off in file size and
  on GPUs (CUDA, TensorRT, DirectML).

Two shortcomings of onnxconverter-common 1.16 are worked around (both found on the shared
YOLOv8n export; YOLOX-Nano and NanoDet-m convert without them):

* value_info already in the file (Ultralytics exports carry ~1100 entries) ends up duplicated
  beside the converter's own, with the stale float32 entry winning; the file's value_info is
  dropped before converting (the converter's shape inference rebuilds it).
* ``Cast(to=FLOAT)`` nodes keep ``to=FLOAT`` while their outputs are declared float16, which
  onnxruntime rejects ("Type (tensor(float16)) of output arg ... does not match expected type");
  such casts are retargeted to float16 (:attr:`Fp16Conversion.retargeted_casts`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visionpipe.errors import (
    ModelLoadError,
    OptimizationError,
    SpecError,
    UnknownOutputLayoutError,
    first_line,
)
from visionpipe.io.images import ImageInput, decode_image
from visionpipe.models.loader import SPEC_SUFFIXES, DetectionModel, load_model
from visionpipe.models.spec import write_sidecar_spec
from visionpipe.optimize.graph import check_out_path, copy_metadata, load_onnx, onnx_path_of, save_onnx, staged_file
from visionpipe.preprocess import preprocess as preprocess_image

# Ops kept in float32 on top of onnxconverter-common's DEFAULT_OP_BLOCK_LIST, with why.
FP16_UNSAFE_OPS: dict[str, str] = {
    # Also upstream's default; named here so an upstream change cannot drop it. Converting it
    # turns its scales/roi inputs into float16, which ONNX Resize does not accept: YOLOX-Nano,
    # NanoDet-m and FastestDet all fail to load ("Type 'tensor(float16)' ... of operator (Resize)").
    "Resize": "its scales/roi inputs must stay float32 (onnxruntime refuses the graph otherwise)",
    "Upsample": "opset < 10 Resize; same scales input as Resize",
    # float16's largest finite value is 65504: exp(x) overflows to inf above x = 11.09, x**2 above
    # 256; exported YOLO/anchor-free decoders exponentiate box logits inside the graph.
    "Exp": "overflows float16 (max 65504) above x = 11.09",
    "Pow": "overflows float16 quickly (x**2 above 256)",
    # float16 has an 11-bit significand: a running sum stops growing once it reaches 2048 times
    # the addend, so reductions over many elements lose precision.
    "ReduceMean": "accumulates many values; float16 sums lose precision",
    "ReduceSum": "accumulates many values; float16 sums lose precision",
    "ReduceSumSquare": "accumulates many values and overflows easily",
}

# Providers with float16 kernels worth converting for; anything else runs float16 graphs in float32.
FP16_ACCELERATED_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "DmlExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "CoreMLExecutionProvider",
    }
)

FP16_MAX = 65504.0  # the largest finite float16
# tensors fetched per run of the activation check: bounds memory to a few dozen activations
ACTIVATION_CHUNK = 64

# The converter clamps initializer values outside this range; fp16's own limit is 65504, but the
# converter's default leaves headroom for the arithmetic that follows (kept as upstream has it).
MAX_FINITE_VALUE = 1e4


def default_op_block_list() -> list[str]:
    """onnxconverter-common's DEFAULT_OP_BLOCK_LIST plus :data:`FP16_UNSAFE_OPS`, sorted."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_UNSAFE_OPS))


def fp16_speed_note(providers: Iterable[str] | None = None) -> str | None:
    """A warning that float16 brings no speed here, or None when a provider has float16 kernels.

    ``providers`` defaults to what this onnxruntime offers (``get_available_providers()``).
    """
    if providers is None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    providers = list(providers)
    if FP16_ACCELERATED_PROVIDERS & set(providers):
        return None
    return (
        f"this onnxruntime offers only {providers}: the CPU provider has no float16 kernels for "
        "most ops and runs them in float32 behind Casts, so expect no speed-up on CPU; float16 "
        "halves the file and is for GPUs (CUDA, TensorRT, DirectML)"
    )


@dataclass
class Fp16Conversion:
    """What :func:`convert_fp16` wrote. ``os.fspath(result)`` / ``str(result)`` is the path."""

    path: Path
    size_bytes: int
    source_size_bytes: int
    op_block_list: list[str]  # every op type asked to stay in float32
    blocked_op_types: list[str]  # those of them present in this model
    float_nodes: int  # nodes of the source graph left computing in float32 (their op is blocked)
    casts_added: int  # Cast nodes the conversion inserted around blocked ops and the I/O
    retargeted_casts: int  # Cast(to=FLOAT) nodes fixed to float16 (see the module docstring)
    spec_path: Path | None = None
    # max over outputs of max|fp16 - fp32| / max|fp32| on the check input; None when not checked
    max_relative_error: float | None = None
    # largest |value| a tensor that is float16 in the result takes in float32 on the check input
    # (float16 ends at 65504); None when not checked
    max_activation: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.source_size_bytes if self.source_size_bytes else float("nan")

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def convert_fp16(
    model: DetectionModel | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    keep_io_types: bool = True,
    op_block_list: Iterable[str] | None = None,
    check: bool = True,
    check_image: ImageInput | None = None,
) -> Fp16Conversion:
    """Write a float16 copy of ``model`` to ``out_path`` (with a sidecar spec) and check it runs.

    ``op_block_list`` replaces :func:`default_op_block_list` (pass ``[*default_op_block_list(),
    "Softmax"]`` to add to it). ``check_image`` (a path, encoded bytes or a BGR array) is the input
    the check runs on. Raises :class:`OptimizationError` naming the cause when the source is not a
    readable ONNX model, the converter fails, or the check fails.
    """
    source_path, detection_model, notes = _source_model(model, "convert {} to fp16")
    action = f"convert {source_path} to fp16"
    source = load_onnx(source_path, action)
    out = check_out_path(source_path, out_path)
    blocked = sorted(set(op_block_list)) if op_block_list is not None else default_op_block_list()

    converted, retargeted = _convert(source, keep_io_types, blocked, action)
    source_ops = [node.op_type for node in source.graph.node]
    casts = sum(node.op_type == "Cast" for node in converted.graph.node)
    casts_added = casts - source_ops.count("Cast")
    notes += _clamped_weights_note(source)

    with staged_file(out) as staging:
        save_onnx(converted, staging, action)
        copy_metadata(source, staging)
        error = activation = None
        if check:
            tensor = _check_input(source, detection_model, check_image, action)
            error, activation = _check(staging, source, converted, tensor, action, notes)

    spec_path = None
    if detection_model is not None:
        spec_path = write_sidecar_spec(detection_model, out)
    speed = fp16_speed_note()
    if speed:
        notes.append(speed)
    present = set(source_ops)
    return Fp16Conversion(
        path=out,
        size_bytes=out.stat().st_size,
        source_size_bytes=source_path.stat().st_size,
        op_block_list=blocked,
        blocked_op_types=[op for op in blocked if op in present],
        float_nodes=sum(op in blocked for op in source_ops),
        casts_added=casts_added,
        retargeted_casts=retargeted,
        spec_path=spec_path,
        max_relative_error=error,
        max_activation=activation,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# source handling, shared with prune.py


def _source_model(
    model: DetectionModel | str | os.PathLike, action: str
) -> tuple[Path, DetectionModel | None, list[str]]:
    """(ONNX file, configured model or None, notes) for a model object, a model file or its spec.

    ``action`` words errors, with ``{}`` for the path ("convert {} to fp16"). A bare file that does
    not configure as a detector (no family fits, or its metadata contradicts itself) is still
    optimized; only its sidecar spec is skipped, with a note saying why.
    """
    if isinstance(model, DetectionModel):
        return onnx_path_of(model), model, []
    path = Path(model)
    if path.suffix.lower() in SPEC_SUFFIXES:
        try:
            configured = load_model(path)
        except (ModelLoadError, SpecError, UnknownOutputLayoutError) as exc:
            raise OptimizationError(f"cannot {action.format(path)}: {exc}") from exc
        return onnx_path_of(configured), configured, []
    try:
        return path, load_model(path), []
    except (UnknownOutputLayoutError, SpecError) as exc:
        cause = first_line(exc)
        return path, None, [f"no sidecar spec written: not a detector ({cause})"]
    except ModelLoadError:
        # missing, or not a file onnxruntime opens: load_onnx says why in the caller's words
        return path, None, []


# --------------------------------------------------------------------------------------------
# conversion


def _convert(source, keep_io_types: bool, blocked: list[str], action: str):
    """The converted model and how many Casts needed retargeting."""
    from onnx import ModelProto
    from onnxconverter_common.float16 import convert_float_to_float16

    # the converter edits in place; the source is still needed afterwards
    model = ModelProto()
    model.CopyFrom(source)
    # stale exporter value_info ends up duplicated (see the module docstring)
    del model.graph.value_info[:]
    try:
        with warnings.catch_warnings():
            # one "the float32 number ... will be truncated" per tensor holding values below 1e-7;
            # _clamped_weights_note reports the clamping that matters (large values)
            warnings.filterwarnings("ignore", message="the float32 number")
            converted = convert_float_to_float16(
                model,
                keep_io_types=keep_io_types,
                op_block_list=blocked,
                max_finite_val=MAX_FINITE_VALUE,
            )
    except Exception as exc:  # the converter raises ValueError, AttributeError, KeyError, ...
        raise OptimizationError(f"cannot {action}: {first_line(exc)}") from exc
    return converted, _retarget_float_casts(converted.graph)


def _retarget_float_casts(graph) -> int:
    """Point ``Cast(to=FLOAT)`` nodes whose output the converter declared float16 at float16."""
    from onnx import TensorProto

    declared = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    retargeted = 0
    for node in graph.node:
        if node.op_type != "Cast" or declared.get(node.output[0]) != TensorProto.FLOAT16:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
                retargeted += 1
    return retargeted


def _clamped_weights_note(source) -> list[str]:
    from onnx import TensorProto, numpy_helper

    clamped = 0
    for tensor in source.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor)
            clamped += int(np.count_nonzero(np.abs(values[np.isfinite(values)]) > MAX_FINITE_VALUE))
    if not clamped:
        return []
    return [f"{clamped} weight values beyond ±{MAX_FINITE_VALUE:g} were clamped to it"]


# --------------------------------------------------------------------------------------------
# check


def _check_input(source, model: DetectionModel | None, image: ImageInput | None, action: str) -> np.ndarray:
    """A batch-1 input: ``image`` (or a synthetic one) through the model's preprocessing, or, for a
    model without a known configuration, the raw 0..255 pixels at the input's size."""
    if model is not None:
        height, width = model.input_hw
        picture = decode_image(image) if image is not None else _synthetic_image(height, width)
        tensor, _ = preprocess_image(picture, model.input_hw, model.preprocess)
        return tensor[None]
    from visionpipe.models.presets import DEFAULT_INPUT_SIZE

    dims = source.graph.input[0].type.tensor_type.shape.dim
    shape = [max(0, d.dim_value) for d in dims]  # 0: symbolic
    if len(shape) != 4:
        raise OptimizationError(
            f"cannot {action}: the check feeds an image, but input {source.graph.input[0].name!r} has "
            f"shape {shape}, not (batch, 3, height, width); pass check=False"
        )
    height = shape[2] or DEFAULT_INPUT_SIZE[0]
    width = shape[3] or DEFAULT_INPUT_SIZE[1]
    picture = decode_image(image) if image is not None else _synthetic_image(height, width)
    import cv2

    picture = cv2.resize(picture, (width, height))
    return np.ascontiguousarray(picture.transpose(2, 0, 1)[None], dtype=np.float32)


def _synthetic_image(height: int, width: int) -> np.ndarray:
    """Blurred seeded noise: smooth regions and edges, closer to a photo than white noise."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), sigmaX=max(2.0, min(height, width) / 64))


def _check(staging: Path, source, converted, tensor: np.ndarray, action: str, notes: list[str]):
    """(max relative error, max activation) of the result on ``tensor``; raises when it fails.

    The result must load, run and give finite outputs. Whether a float16 tensor overflows is
    measured on the float32 source instead: onnxruntime's CPU provider computes most float16 ops
    in float32 behind its own Casts, so a tensor past 65504 that a GPU turns into inf can come out
    finite here.
    """
    if len(source.graph.input) != 1:
        notes.append(f"not checked: the model has {len(source.graph.input)} inputs, the check feeds one image")
        return None, None
    got = _run_result(staging, tensor, action)
    probed = _probe_source(source, _float16_tensors(converted.graph), tensor, notes)
    if probed is None:
        return None, None
    want, (largest, where, op) = probed
    if largest > FP16_MAX:
        raise OptimizationError(
            f"cannot {action}: tensor {where!r} ({op}) reaches {largest:.4g} in float32 on the check input, "
            f"beyond float16's {FP16_MAX:g}: it overflows in float16; keep the ops around it in float32 "
            "(op_block_list) or pass check=False"
        )
    return _max_relative_error(got, want), largest


def _as_input(tensor: np.ndarray, node_arg) -> np.ndarray:
    """``tensor`` in the element type onnxruntime declares for the input (float32 if unknown)."""
    dtypes = {
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(uint8)": np.uint8,
    }
    return tensor.astype(dtypes.get(node_arg.type, np.float32), copy=False)


def _cpu_session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _run_result(path: Path, tensor: np.ndarray, action: str) -> list[np.ndarray]:
    try:
        session = _cpu_session(str(path))
    except Exception as exc:  # ORT raises several unrelated types for invalid graphs
        raise OptimizationError(
            f"cannot {action}: the converted model does not load in onnxruntime ({first_line(exc)})"
        ) from exc
    image_input = session.get_inputs()[0]
    try:
        outputs = session.run(None, {image_input.name: _as_input(tensor, image_input)})
    except Exception as exc:
        raise OptimizationError(f"cannot {action}: the converted model fails to run ({first_line(exc)})") from exc
    for info, value in zip(session.get_outputs(), outputs):
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise OptimizationError(
                f"cannot {action}: output {info.name!r} of the converted model is not finite "
                f"({np.count_nonzero(~np.isfinite(value))} inf/nan values); block the op that overflows"
            )
    return outputs


def _probe_source(source, half: set[str], tensor: np.ndarray, notes: list[str]):
    """The source's outputs on ``tensor`` and (largest |value|, tensor, op) over the tensors in
    ``half`` (the input included), or None with a note when the source does not run here."""
    from onnx import ModelProto, TensorProto, helper

    probe = ModelProto()
    probe.CopyFrom(source)
    producers = {
        out: node.op_type
        for node in source.graph.node
        if node.op_type != "Constant"
        for out in node.output
        if out in half
    }
    outputs = [o.name for o in source.graph.output]
    probe.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in producers if name not in outputs
    )
    try:
        session = _cpu_session(probe.SerializeToString())
        image_input = session.get_inputs()[0]
        feed = {image_input.name: _as_input(tensor, image_input)}
        want = session.run(outputs, feed)
        peak = (float(np.abs(tensor).max()), image_input.name, "input")
        names = list(producers)
        for start in range(0, len(names), ACTIVATION_CHUNK):
            chunk = names[start : start + ACTIVATION_CHUNK]
            for name, value in zip(chunk, session.run(chunk, feed)):
                if value.size and float(np.abs(value).max()) > peak[0]:
                    peak = (float(np.abs(value).max()), name, producers[name])
    except Exception as exc:
        notes.append(f"not compared with float32: the source does not run in onnxruntime ({first_line(exc)})")
        return None
    return want, peak


def _float16_tensors(graph) -> set[str]:
    """Names of the tensors the converted graph stores in float16 (they keep their source names)."""
    from onnx import TensorProto

    half = {
        v.name
        for v in (*graph.value_info, *graph.input, *graph.output)
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    # with keep_io_types an output's producer writes a renamed float16 tensor that a final Cast
    # turns back into float32: the output's values pass through float16 all the same
    producers = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        node = producers.get(output.name)
        if node is not None and node.op_type == "Cast" and node.input[0] in half:
            half.add(output.name)
    return half


def _max_relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        if not np.issubdtype(b.dtype, np.floating) or b.size == 0:
            continue
        scale = float(np.abs(b).max()) or 1.0
        worst = max(worst, float(np.abs(a.astype(np.float32) - b).max()) / scale)
    return worst
