"""ONNX to NCNN with pnnx: ``<out_dir>/<stem>.ncnn.param`` + ``.ncnn.bin``, checked against ONNX Runtime.

Needs ``pip install 'visionpipe[ncnn-export]'`` (the ``ncnn`` runtime and the ``pnnx`` converter, whose
command-line tool reads ONNX files directly; its package requires torch)::

    to_ncnn("yolox_nano_416_coco.onnx", "ncnn/")             # fp32 weights
    to_ncnn("yolox_nano_416_coco.onnx", "ncnn/", fp16=True)  # fp16 weights (computed in fp32 on load)

Before pnnx sees the graph, strided slices over height or width (YOLOX's ``Focus`` stem:
``x[..., ::2, ::2]`` and friends) are rewritten as depthwise convolutions with one-hot 2-pixel
kernels: pnnx keeps such slices as ``Tensor.slice``, a layer NCNN does not have, while a convolution
that multiplies one pixel by 1 and the other by 0 is the same selection, exactly. The rewritten
graph is compared with the source in ONNX Runtime (bit-identical), the NCNN model with the source
on a seeded random input, and only then are the files moved into place.

The written ``.param`` records the input's width, height and channels in its ``Input`` layer (NCNN
reads them as shape hints), so the file says which image size it takes; the source's resolved spec
is written beside it (``<stem>.ncnn.yaml``) when the source loads as a detector, so
``Pipeline("<out_dir>/<stem>.ncnn.param")`` runs it on NCNN with no flags.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visionpipe.errors import MissingExtraError, OptimizationError, VisionpipeError, first_line
from visionpipe.optimize.checks import PathResult, ort_session
from visionpipe.optimize.graph import check_out_path, load_onnx

# How far fp32 NCNN may stray from ONNX Runtime on the check input, as a fraction of each output's
# largest magnitude: the runtimes' kernels differ in summation order only (measured: YOLOX-Nano
# 1.3e-5, NanoDet-m 1.1e-5). fp16 weights are not held to it: they move YOLOX-Nano's outputs by up
# to a third of their range on noise and cost 0.0085 mAP@.5:.95 on the 64 val2017 photos (fp32 NCNN:
# 0.3648, as ONNX Runtime), so their accuracy is for the planner or benchmark to measure; the check
# only refuses outputs that are not finite.
FP32_TOLERANCE = 1e-3
PNNX_TIMEOUT_S = 600
# pnnx reads ONNX through the ONNX Runtime it embeds (1.30 in pnnx 20261020), which refuses newer
# IR versions ("Unsupported model IR version: 14, max supported IR version: 13") and then crashes;
# the graph is handed over at this IR version when the opsets allow it.
PNNX_MAX_IR_VERSION = 13


@dataclass
class NcnnResult(PathResult):
    """The NCNN pair :func:`to_ncnn` wrote (``path`` is the .param)."""

    path: Path
    bin_path: Path
    fp16: bool
    input_shape: tuple[int, int, int, int]
    input_name: str
    output_names: list[str]
    layer_types: list[str]  # every NCNN layer type the model uses (what a reduced NCNN build needs)
    rewritten_slices: int  # strided slices turned into convolutions before conversion
    max_relative_error: list[float] = field(default_factory=list)  # per output, against ONNX Runtime
    spec_path: Path | None = None  # the sidecar spec (None when the source is not a known detector)


def pnnx_executable() -> Path:
    """The pnnx command-line tool the ``pnnx`` package ships (found without importing the package,
    whose ``__init__`` imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("pnnx", "ncnn-export", "NCNN conversion")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pnnx", "pnnx.exe"):
        if (folder / name).is_file():
            return folder / name
    raise MissingExtraError(
        "pnnx", "ncnn-export", "NCNN conversion (the pnnx package has no pnnx tool for this platform)"
    )


def to_ncnn(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fp16: bool = False,
    input_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> NcnnResult:
    """Convert an ONNX detector to NCNN: ``<out_dir>/<source stem>.ncnn.param`` and ``.ncnn.bin``.

    NCNN runs one image at a time at a fixed size: the source's input size is used, or
    ``input_size`` (height, width) when the source's height/width are dynamic. ``fp16`` stores the
    weights in half precision (visionpipe's NCNN runtime computes in fp32 either way; only fp32
    weights are held to ONNX Runtime's outputs, see ``FP32_TOLERANCE``). ``seed`` makes the check
    input.
    """
    try:
        import ncnn  # noqa: F401  (the check runs the converted model)
    except ImportError as exc:
        raise MissingExtraError("ncnn", "ncnn-export", "NCNN conversion") from exc
    tool = pnnx_executable()
    source = Path(source)
    model = load_onnx(source, f"convert {source} to NCNN")
    param = check_out_path(source, Path(out_dir) / f"{source.stem}.ncnn.param")
    shape = _input_shape(model, source, input_size)
    rewritten, count = rewrite_strided_slices(model, shape)

    staging = Path(tempfile.mkdtemp(prefix=f".{source.stem}-ncnn-", dir=param.parent))
    try:
        graph = staging / "model.onnx"
        import onnx

        lowest = onnx.helper.find_min_ir_version_for(list(rewritten.opset_import), ignore_unknown=True)
        rewritten.ir_version = min(rewritten.ir_version, max(PNNX_MAX_IR_VERSION, lowest))
        onnx.save(rewritten, str(graph))
        feed = np.random.default_rng(seed).random(shape, dtype=np.float32) * 255.0
        reference = _ort_outputs(source, feed)
        if count:  # the rewrite is an exact selection: anything but identical outputs is a bug
            moved = [float(np.abs(a - b).max()) for a, b in zip(_ort_outputs(graph, feed), reference)]
            if any(moved):
                raise OptimizationError(f"NCNN conversion of {source}: rewriting strided slices changed outputs")
        staged_param, staged_bin = staging / "model.ncnn.param", staging / "model.ncnn.bin"
        _run_pnnx(tool, graph, shape, fp16, staged_param, staged_bin, staging, source)
        layer_types = _check_layers(staged_param, source)
        input_name = _record_input_shape(staged_param, shape)
        outputs, output_names = _ncnn_outputs(staged_param, staged_bin, feed, input_name)
        errors = _relative_errors(outputs, reference, source)
        if not all(np.isfinite(o).all() for o in outputs):
            raise OptimizationError(f"NCNN conversion of {source}: the NCNN model gives non-finite outputs")
        if not fp16 and max(errors, default=0.0) > FP32_TOLERANCE:
            raise OptimizationError(
                f"NCNN conversion of {source}: outputs differ from ONNX Runtime by up to "
                f"{max(errors):.3g} of their range (tolerance {FP32_TOLERANCE:g})"
            )
        bin_path = param.with_suffix(".bin")
        os.replace(staged_bin, bin_path)
        os.replace(staged_param, param)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return NcnnResult(
        path=param,
        bin_path=bin_path,
        fp16=fp16,
        input_shape=shape,
        input_name=input_name,
        output_names=output_names,
        layer_types=layer_types,
        rewritten_slices=count,
        max_relative_error=errors,
        spec_path=_spec_beside(source, param, input_size),
    )


# --------------------------------------------------------------------------------------------
# the graph rewrite


def rewrite_strided_slices(model, shape: tuple[int, int, int, int]):
    """A copy of ``model`` whose single-axis strided Slices over height or width are depthwise
    convolutions picking the same pixels, and how many were rewritten.

    Only slices that select every k-th pixel from offset s < k through the end of an axis whose
    length is a multiple of k are rewritten (then the convolution's output length is the slice's);
    the others are left for pnnx, which reports them.
    """
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    fixed = onnx.ModelProto.FromString(model.SerializeToString())
    for dim, value in zip(fixed.graph.input[0].type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(fixed)
    except Exception:  # shape inference is an aid: without shapes nothing is rewritten
        return model, 0
    shapes: dict[str, list[int | None]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    nodes = []
    count = 0
    for node in model.graph.node:
        picked = _strided_pick(node, shapes, constants)
        if picked is None:
            nodes.append(node)
            continue
        axis, step, start, channels = picked
        kernel = (step, 1) if axis == 2 else (1, step)
        weights = np.zeros((channels, 1, *kernel), np.float32)
        weights[(slice(None), 0, start, 0) if axis == 2 else (slice(None), 0, 0, start)] = 1.0
        name = f"{node.output[0]}_pick_weights"
        model.graph.initializer.append(numpy_helper.from_array(weights, name))
        nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], name],
                [node.output[0]],
                name=f"{node.name or node.output[0]}_as_conv",
                group=channels,
                kernel_shape=list(kernel),
                strides=list(kernel),
            )
        )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, count


def _strided_pick(node, shapes, constants) -> tuple[int, int, int, int] | None:
    """(axis, step, start, channels) when ``node`` is a Slice the rewrite can replace exactly."""
    if node.op_type != "Slice" or len(node.input) < 5:
        return None
    values = [constants.get(name) for name in node.input[1:5]]
    if any(v is None or v.size != 1 for v in values):
        return None
    starts, ends, axes, steps = (int(v.reshape(-1)[0]) for v in values)
    dims = shapes.get(node.input[0])
    if not dims or len(dims) != 4 or any(d is None for d in dims):
        return None
    axis = axes % 4
    length = dims[axis]
    if axis not in (2, 3) or steps < 2 or not 0 <= starts < steps or ends < length or length % steps:
        return None
    return axis, steps, starts, int(dims[1])


# --------------------------------------------------------------------------------------------
# conversion and checks


def _input_shape(model, source: Path, input_size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    if len(model.graph.input) != 1:
        raise OptimizationError(
            f"cannot convert {source} to NCNN: it has {len(model.graph.input)} inputs, not one image"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise OptimizationError(f"cannot convert {source} to NCNN: its input has rank {len(dims)}, not (N, C, H, W)")
    channels = dims[1] or 3
    height, width = dims[2], dims[3]
    if input_size is not None:
        if (height and height != input_size[0]) or (width and width != input_size[1]):
            raise OptimizationError(f"{source}'s input is fixed at {(height, width)}, not {tuple(input_size)}")
        height, width = input_size
    if not height or not width:
        raise OptimizationError(f"{source} has a dynamic height/width: give input_size=(height, width) for NCNN")
    return (1, int(channels), int(height), int(width))


def _ort_outputs(path: Path, feed: np.ndarray) -> list[np.ndarray]:
    try:
        session = ort_session(path)
        return [np.asarray(o) for o in session.run(None, {session.get_inputs()[0].name: feed})]
    except Exception as exc:  # the reference run: a graph ONNX Runtime cannot run is not converted
        raise OptimizationError(
            f"cannot convert {path} to NCNN: ONNX Runtime cannot run it ({first_line(exc)})"
        ) from exc


def _run_pnnx(tool, graph, shape, fp16, param, weights, folder, source) -> None:
    command = [
        str(tool),
        str(graph),
        f"inputshape=[{','.join(map(str, shape))}]f32",
        f"fp16={int(fp16)}",
        f"ncnnparam={param}",
        f"ncnnbin={weights}",
        # pnnx writes its own intermediate files too: keep them in the staging folder
        f"pnnxparam={folder / 'model.pnnx.param'}",
        f"pnnxbin={folder / 'model.pnnx.bin'}",
        f"pnnxpy={folder / 'model_pnnx.py'}",
        f"pnnxonnx={folder / 'model.pnnx.onnx'}",
        f"ncnnpy={folder / 'model_ncnn.py'}",
    ]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OptimizationError(f"pnnx could not convert {source}: {first_line(exc)}") from exc
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        cause = next((line for line in lines if "error" in line.lower() or "not supported" in line), None)
        raise OptimizationError(
            f"pnnx could not convert {source} (exit status {done.returncode}): "
            f"{cause or (lines[-1] if lines else 'no output')}"
        )


def read_layers(param: Path) -> list[tuple[str, str, list[str]]]:
    """(type, name, rest of the line) for each layer of an NCNN text ``.param``."""
    lines = param.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "7767517":
        raise OptimizationError(f"{param} is not an NCNN text param file (no 7767517 magic)")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) >= 4:
            layers.append((parts[0], parts[1], parts[2:]))
    return layers


def _check_layers(param: Path, source: Path) -> list[str]:
    types = sorted({layer_type for layer_type, _, _ in read_layers(param)})
    # NCNN's own layers are plain names (Convolution, Swish); pnnx keeps operators it could not
    # map under their PyTorch names (Tensor.slice, F.grid_sample, torch.einsum), which NCNN lacks
    foreign = [t for t in types if "." in t]
    if foreign:
        raise OptimizationError(
            f"cannot convert {source} to NCNN: pnnx left operators NCNN has no layer for: {', '.join(foreign)}"
        )
    return types


def _record_input_shape(param: Path, shape: tuple[int, int, int, int]) -> str:
    """Write the input's w/h/c into the ``Input`` layer (NCNN's own shape-hint params 0, 1, 2)."""
    lines = param.read_text(encoding="utf-8").splitlines()
    name = None
    for index, line in enumerate(lines):
        parts = line.split()
        if parts and parts[0] == "Input":
            name = parts[4] if len(parts) > 4 else parts[1]
            kept = [p for p in parts[5:] if not re.match(r"^[0-2]=", p)]
            lines[index] = " ".join([*parts[:5], f"0={shape[3]}", f"1={shape[2]}", f"2={shape[1]}", *kept])
            break
    if name is None:
        raise OptimizationError(f"{param} has no Input layer")
    param.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def _ncnn_outputs(param: Path, weights: Path, feed: np.ndarray, input_name: str) -> tuple[list[np.ndarray], list[str]]:
    from visionpipe.models.backends.ncnn import open_net, ordered_output_names, run_net

    net = open_net(param, weights, threads=1)
    names = ordered_output_names(net)
    return run_net(net, feed, input_name, names), names


def _relative_errors(outputs: list[np.ndarray], reference: list[np.ndarray], source: Path) -> list[float]:
    if len(outputs) != len(reference):
        raise OptimizationError(
            f"NCNN conversion of {source}: {len(outputs)} outputs, ONNX Runtime has {len(reference)}"
        )
    errors = []
    for got, want in zip(outputs, reference):
        if got.size != want.size:
            raise OptimizationError(
                f"NCNN conversion of {source}: an output of shape {got.shape} where ONNX Runtime gives {want.shape}"
            )
        scale = float(np.abs(want).max()) or 1.0
        errors.append(float(np.abs(got.reshape(want.shape) - want).max()) / scale)
    return errors


def _spec_beside(source: Path, written: Path, input_size: tuple[int, int] | None) -> Path | None:
    """Write the source detector's resolved spec beside the .param, if the source is one."""
    from visionpipe.models.loader import load_model
    from visionpipe.models.spec import write_sidecar_spec

    try:
        model = load_model(source, input_size=input_size)
    except VisionpipeError:  # not a detector visionpipe can configure: the files alone are still useful
        return None
    return write_sidecar_spec(model, written)


__all__ = ["NcnnResult", "pnnx_executable", "read_layers", "rewrite_strided_slices", "to_ncnn"]
