"""Export and graph tools: PyTorch to ONNX, dynamic batch, simplification, OpenVINO IR, TensorRT.

Every function writes a new file and checks it before handing it over::

    export_torch(net, "net.onnx", (1, 3, 640, 640))        # torch vs onnxruntime at batch 1 and 3
    make_batch_dynamic("yolox_nano_416_coco.onnx", "yolox_dyn.onnx")   # batch of 8 vs 8 single runs
    simplify("yolox_dyn.onnx", "yolox_slim.onnx")           # onnxslim, outputs compared on one input
    to_openvino("yolox_slim.onnx", "ir/")                   # needs visionpipe[openvino]
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

import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import (
    BackendUnavailableError,
    FixedBatchError,
    MissingExtraError,
    OptimizationError,
    VisionpipeError,
    first_line,
)
from visionpipe.optimize.graph import check_out_path, copy_metadata, load_onnx, save_onnx, staged_file

# the symbolic name given to a batch axis made dynamic (Ultralytics uses it too)
BATCH_DIM = "batch"

# Tolerances for "the same outputs": |got - want| <= atol + rtol * |want| elementwise (numpy's
# isclose). ONNX Runtime's CPU kernels block and vectorise differently for other batch sizes and
# after graph rewrites, which moves float32 results by ~1e-6 relative; anything past these bounds
# is a wrong graph, not rounding.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

# Stand-in for symbolic height/width (and other non-batch) dims when inputs are made up for a
# check: a multiple of every detector stride (8..64) and small enough to run quickly.
SYMBOLIC_SIZE = 320

_ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")
_ORT_NOISE = (
    re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : "),  # status prefix
    # the failed C++ check's source location
    re.compile(r"/onnxruntime_src/\S+:\d+ .*? was false\. "),
)


# --------------------------------------------------------------------------------------------
# results

Shape = tuple[int, ...]
ProfileShapes = tuple[Shape, Shape, Shape]


class _PathResult:
    """``os.fspath(result)`` / ``str(result)`` is the file written."""

    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass
class ExportResult(_PathResult):
    """What :func:`export_torch` wrote and how closely onnxruntime reproduces the module."""

    path: Path
    opset: int
    dynamic_batch: bool
    input_name: str
    output_names: list[str]
    # "torchscript": see _torchscript_export for why not the dynamo exporter
    exporter: str
    verified: bool
    # batch size -> max |onnx - torch|
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL


@dataclass
class DynamicBatchResult(_PathResult):
    """What :func:`make_batch_dynamic` wrote.

    ``already_dynamic``: the source's batch axis was symbolic already and it was copied unchanged
    (``source_batch`` is then None). ``max_abs_diff`` is the largest difference between a batch
    of ``verify_batch`` and as many single runs (None when not verified).
    """

    path: Path
    already_dynamic: bool
    source_batch: int | None
    inputs_changed: list[str]
    outputs_changed: list[str]
    value_info_cleared: int
    verified: bool
    verify_batch: int
    max_abs_diff: float | None
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL


@dataclass
class SimplifyResult(_PathResult):
    """What :func:`simplify` wrote: node counts of the main graph and the largest output change."""

    path: Path
    nodes_before: int
    nodes_after: int
    max_abs_diff: float
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    @property
    def nodes_removed(self) -> int:
        return self.nodes_before - self.nodes_after


@dataclass
class OpenVinoResult(_PathResult):
    """The OpenVINO IR pair :func:`to_openvino` wrote (``path`` is the .xml)."""

    path: Path
    bin_path: Path
    fp16: bool
    # the sidecar spec written beside the .xml (None when the source is not a known detector)
    spec_path: Path | None = None


@dataclass
class TensorRtResult(_PathResult):
    """The serialized engine :func:`build_tensorrt_engine` wrote."""

    path: Path
    fp16: bool
    int8: bool
    workspace_gb: float
    size_bytes: int
    # input name -> (min, opt, max) shapes of the optimization profile (dynamic inputs only)
    profile: dict[str, ProfileShapes] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# shared helpers


def _session(path_or_bytes: Path | bytes):
    """A CPU session for checks. Its own logging is silenced: failures come back as our errors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _numpy_dtype(ort_type: str) -> np.dtype:
    from visionpipe.models.backends.onnxruntime import _ORT_TYPES

    return np.dtype(_ORT_TYPES.get(ort_type, np.float32))


def _image_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values in [0, 1) with image-like structure: blocks of colour plus a little noise.

    Smooth regions give a detector's activations realistic ranges, and every sample differs, so a
    graph that mixes samples of a batch changes the result.
    """
    if len(shape) < 3:
        return rng.random(shape, dtype=np.float32)
    *lead, h, w = shape
    block = 16
    coarse = rng.random((*lead, -(-h // block), -(-w // block)), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, block, axis=-2), block, axis=-1)[..., :h, :w]
    noise = rng.random(shape, dtype=np.float32)
    return (0.9 * smooth + 0.1 * noise).astype(np.float32)


def _made_up_inputs(session, batch: int, batched: set[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for ``session``: ``batch`` samples for inputs in ``batched``, symbolic dims at SYMBOLIC_SIZE."""
    feed = {}
    for info in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else SYMBOLIC_SIZE for d in info.shape]
        if info.name in batched and dims:
            dims[0] = batch
        dtype = _numpy_dtype(info.type)
        values = _image_like(rng, tuple(dims))
        if np.issubdtype(dtype, np.floating):
            feed[info.name] = values.astype(dtype)
        elif dtype == np.bool_:
            feed[info.name] = values > 0.5
        else:  # integer inputs: pixel-like values 0..255
            feed[info.name] = (values * 255).astype(dtype)
    return feed


def _ort_message(exc: BaseException) -> str:
    """An onnxruntime error without its status prefix and C++ source locations."""
    text = first_line(exc)
    for noise in _ORT_NOISE:
        text = noise.sub("", text)
    return text


def _max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    if got.size == 0:
        return 0.0
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    diff[np.isnan(got) & np.isnan(want)] = 0.0  # NaN where both are NaN is agreement
    return float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")


def _compare(
    names: Sequence[str],
    got: Sequence[np.ndarray],
    want: Sequence[np.ndarray],
    atol: float,
    rtol: float,
) -> tuple[float, str | None]:
    """(largest |got - want| over all outputs, description of the first mismatch or None)."""
    worst = 0.0
    problem = None
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            problem = problem or f"output {name!r} has shape {g.shape} where {w.shape} was expected"
            worst = float("inf")
            continue
        diff = _max_abs_diff(g, w)
        worst = max(worst, diff)
        if not np.allclose(
            g.astype(np.float64),
            w.astype(np.float64),
            atol=atol,
            rtol=rtol,
            equal_nan=True,
        ):
            problem = problem or f"output {name!r} differs by up to {diff:.3g} (atol {atol}, rtol {rtol})"
    return worst, problem


# --------------------------------------------------------------------------------------------
# PyTorch -> ONNX


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", "PyTorch export") from exc
    return torch


def export_torch(
    module: Any,
    out_path: str | os.PathLike,
    input_shape: Sequence[int] = (1, 3, 640, 640),
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    input_name: str = "images",
    output_names: Sequence[str] | None = None,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Export a ``torch.nn.Module`` with one image input to ONNX and check it in onnxruntime.

    The module is traced in eval mode on a random input of ``input_shape`` (its training mode is
    restored afterwards). With ``dynamic_batch`` the input's and every output's first axis is the
    symbolic ``"batch"``. Outputs may be a tensor or (nested) tuples/lists/dicts of tensors; they
    are named ``output_names`` or ``output0``, ``output1``, ...

    ``verify`` runs the ONNX model in onnxruntime (CPU) on seeded random inputs at batch 1 and 3
    (dynamic) or at the exported batch (fixed) and compares with the module; any output outside
    ``atol + rtol * |torch|`` raises :class:`OptimizationError` and nothing is left at ``out_path``.
    A traced graph that fixes the batch (``x.view(1, -1)``) fails here at batch 3.
    """
    torch = _import_torch()
    shape = _checked_input_shape(input_shape)
    out = Path(out_path)
    if out.is_dir():
        raise OptimizationError(f"out_path {out} is a directory; give a file name such as {out / 'model.onnx'}")
    was_training = module.training
    module.eval()
    try:
        device = _module_device(torch, module)
        dummy = _random_input(torch, shape, seed=0, device=device)
        with torch.no_grad():
            reference = _flat_outputs(torch, module(dummy))
        names = list(output_names) if output_names else [f"output{i}" for i in range(len(reference))]
        if len(names) != len(reference):
            raise OptimizationError(f"{len(names)} output names given for a module with {len(reference)} outputs")
        with staged_file(out) as staged:
            _torchscript_export(torch, module, dummy, staged, opset, input_name, names, dynamic_batch)
            diffs: dict[int, float] = {}
            if verify:
                batches = (1, 3) if dynamic_batch else (shape[0],)
                diffs = _verify_export(
                    torch,
                    module,
                    staged,
                    shape,
                    batches,
                    input_name,
                    names,
                    device,
                    atol,
                    rtol,
                )
    finally:
        module.train(was_training)
    return ExportResult(
        path=out,
        opset=opset,
        dynamic_batch=dynamic_batch,
        input_name=input_name,
        output_names=names,
        exporter="torchscript",
        verified=verify,
        max_abs_diff=diffs,
        atol=atol,
        rtol=rtol,
    )


def _checked_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be (batch, channels, height, width) of positive sizes, got {input_shape}")
    return shape


def _module_device(torch, module):
    parameter = next(iter(module.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _random_input(torch, shape: tuple[int, ...], seed: int, device):
    # seeded on the CPU, then moved: same values on any device
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator).to(device)


def _flat_outputs(torch, outputs) -> list:
    """The module's output tensors in the order the ONNX exporter flattens them."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        return [t for value in outputs.values() for t in _flat_outputs(torch, value)]
    if isinstance(outputs, (list, tuple)):
        return [t for value in outputs for t in _flat_outputs(torch, value)]
    raise OptimizationError(
        f"the module returned {type(outputs).__name__}; ONNX export needs tensors (or tuples of them)"
    )


def _torchscript_export(torch, module, dummy, target: Path, opset, input_name, names, dynamic_batch) -> None:
    """``torch.onnx.export`` with the TorchScript (tracing) exporter.

    Why not the default: since torch 2.9 ``torch.onnx.export`` defaults to ``dynamo=True``, the
    torch.export-based exporter, which needs the ``onnxscript`` package (not a dependency of
    visionpipe[torch]; without it the call fails with ModuleNotFoundError) and always emits opset
    18 or later, converting down afterwards. The TorchScript exporter ships with torch itself,
    works offline with nothing else installed, honours ``opset_version`` directly and
    ``dynamic_axes`` covers the batch. torch 2.13 still provides it (``dynamo=False``) with a
    DeprecationWarning that it "will be removed", silenced here as it is a deliberate choice; torch
    before 2.5 has no ``dynamo`` argument and uses this exporter anyway.
    """
    import inspect

    axes = None
    if dynamic_batch:
        axes = {input_name: {0: BATCH_DIM}, **{name: {0: BATCH_DIM} for name in names}}
    options: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=".*legacy TorchScript-based ONNX export",
                category=DeprecationWarning,
            )
            warnings.filterwarnings(
                "ignore",
                message="The feature will be removed",
                category=DeprecationWarning,
            )
            torch.onnx.export(
                module,
                (dummy,),
                str(target),
                input_names=[input_name],
                output_names=list(names),
                opset_version=opset,
                dynamic_axes=axes,
                do_constant_folding=True,
                **options,
            )
    except Exception as exc:  # tracing errors, unsupported operators at this opset, ...
        raise OptimizationError(f"torch.onnx.export failed: {type(exc).__name__}: {first_line(exc)}") from exc


def _verify_export(
    torch, module, path: Path, shape, batches, input_name, names, device, atol, rtol
) -> dict[int, float]:
    try:
        session = _session(path)
    except Exception as exc:
        raise OptimizationError(f"the exported model does not load in onnxruntime: {first_line(exc)}") from exc
    diffs: dict[int, float] = {}
    for batch in batches:
        sample = _random_input(torch, (batch, *shape[1:]), seed=batch, device=device)
        with torch.no_grad():
            want = [t.detach().cpu().numpy() for t in _flat_outputs(torch, module(sample))]
        try:
            got = session.run(list(names), {input_name: sample.cpu().numpy()})
        except Exception as exc:
            raise OptimizationError(
                f"the exported model fails at batch {batch} in onnxruntime ({_ort_message(exc)}); "
                f"{_batch_hint(shape[0], batch)}"
            ) from exc
        diffs[batch], problem = _compare(names, got, want, atol, rtol)
        # Both agree when the module itself folds the batch (x.view(1, -1)), yet the ONNX file
        # declares a batch axis on every output: it must be there.
        unbatched = [f"{n!r} {tuple(g.shape)}" for n, g in zip(names, got) if g.ndim == 0 or g.shape[0] != batch]
        if unbatched and batch != shape[0]:
            problem = problem or f"outputs without a batch axis of {batch}: {', '.join(unbatched)}"
        if problem:
            hint = _batch_hint(shape[0], batch) if batch != shape[0] else "check for operators exported inexactly"
            raise OptimizationError(f"the exported model does not match the module at batch {batch}: {problem}; {hint}")
    return diffs


def _batch_hint(exported_batch: int, batch: int) -> str:
    if batch == exported_batch:
        return "the graph fails at the batch size it was traced with"
    return (
        f"the trace fixes the batch at {exported_batch} (a reshape/view with a literal batch size in the "
        "module, e.g. x.view(1, -1)): use x.shape[0] or -1 there, or export with dynamic_batch=False"
    )


# --------------------------------------------------------------------------------------------
# dynamic batch


def make_batch_dynamic(
    source: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    verify: bool = True,
    verify_batch: int = 8,
    samples: np.ndarray | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> DynamicBatchResult:
    """Rewrite a model with a fixed batch (e.g. ``[1, 3, 416, 416]``) to a symbolic ``"batch"`` axis.

    The first axis of every input and output whose size is the first input's fixed batch becomes
    ``"batch"``, and the graph's intermediate ``value_info`` shapes are dropped (they were inferred
    with the fixed batch and would pin it; onnxruntime infers shapes itself). Opset, weights and
    ``metadata_props`` are kept. A model whose batch axis is symbolic already is copied unchanged
    (``already_dynamic``).

    ``verify`` runs a batch of ``verify_batch`` inputs and each of them alone, and requires equal
    outputs within ``atol + rtol * |single|`` elementwise. The inputs are ``samples`` (a batch for
    the first input, e.g. preprocessed photos) or made-up image-like values in [0, 1).

    A graph that fixes the batch internally (a Reshape to a constant shape such as
    ``[1, 2, 58, 40, 40]``) fails this check: :class:`FixedBatchError` (an OptimizationError) says
    so and names the node onnxruntime failed on and the Reshapes whose constant shape pins the batch.
    Nothing is written then.
    """
    source = Path(source)
    model = load_onnx(source, f"make the batch dynamic of {source}")
    out = check_out_path(source, out_path)
    if verify_batch < 2:
        raise ValueError(f"verify_batch must be at least 2 to test batching, got {verify_batch}")
    if not model.graph.input:
        raise OptimizationError(f"{source} has no inputs")
    first_dims = model.graph.input[0].type.tensor_type.shape.dim
    if not first_dims:
        raise OptimizationError(
            f"{source}: input {model.graph.input[0].name!r} has no declared shape, so no batch axis"
        )
    batch_dim = first_dims[0]
    fixed_batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else None

    with staged_file(out) as staged:
        if fixed_batch is None:  # symbolic or unknown already: nothing to rewrite
            shutil.copyfile(source, staged)
            changed_inputs, changed_outputs, cleared = [], [], 0
            batched = {i.name for i in model.graph.input if _first_dim_symbolic(i, batch_dim.dim_param)}
        else:
            changed_inputs = _symbolic_batch(model.graph.input, fixed_batch)
            changed_outputs = _symbolic_batch(model.graph.output, fixed_batch)
            cleared = len(model.graph.value_info)
            del model.graph.value_info[:]
            save_onnx(model, staged, f"make the batch dynamic of {source}")
            batched = set(changed_inputs)
        diff = None
        if verify:
            diff = _verify_batching(
                staged,
                source,
                model,
                fixed_batch,
                batched,
                verify_batch,
                samples,
                atol,
                rtol,
            )
        elif fixed_batch is not None and not changed_outputs:
            raise _fixed_batch_error(source, model, fixed_batch, "no output has a leading batch axis")
    return DynamicBatchResult(
        path=out,
        already_dynamic=fixed_batch is None,
        source_batch=fixed_batch,
        inputs_changed=changed_inputs,
        outputs_changed=changed_outputs,
        value_info_cleared=cleared,
        verified=verify,
        verify_batch=verify_batch,
        max_abs_diff=diff,
        atol=atol,
        rtol=rtol,
    )


def _first_dim_symbolic(value_info, name: str) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return bool(dims) and not dims[0].HasField("dim_value") and dims[0].dim_param == name


def _symbolic_batch(values, fixed_batch: int) -> list[str]:
    """Turn a leading dim of ``fixed_batch`` into ``"batch"``; the names changed."""
    changed = []
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == fixed_batch:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
            changed.append(value.name)
    return changed


def _verify_batching(path, source, model, fixed_batch, batched, n, samples, atol, rtol) -> float:
    """Largest |batch of n - n single runs|; FixedBatchError when they differ or the batch fails."""
    try:
        session = _session(path)
    except Exception as exc:
        raise _fixed_batch_error(
            source,
            model,
            fixed_batch,
            f"the rewritten model does not load ({first_line(exc)})",
        ) from exc
    feed = _made_up_inputs(session, n, batched, np.random.default_rng(0))
    if samples is not None:
        first = session.get_inputs()[0]
        if samples.shape[0] != n or first.name not in batched:
            raise ValueError(
                f"samples must be a batch of verify_batch={n} for input {first.name!r}, got shape {samples.shape}"
            )
        feed[first.name] = samples.astype(_numpy_dtype(first.type), copy=False)
    names = [o.name for o in session.get_outputs()]
    try:
        together = session.run(names, feed)
    except Exception as exc:
        raise _fixed_batch_error(
            source,
            model,
            fixed_batch,
            f"a batch of {n} fails: {_ort_message(exc)}",
            exc,
        ) from exc
    try:
        singles = [
            session.run(names, {k: v[i : i + 1] if k in batched else v for k, v in feed.items()}) for i in range(n)
        ]
    except Exception as exc:  # a source fixed at a batch above 1
        raise _fixed_batch_error(source, model, fixed_batch, f"a batch of 1 fails: {_ort_message(exc)}", exc) from exc
    want = [np.concatenate([run[k] for run in singles]) for k in range(len(names))]
    diff, problem = _compare(names, together, want, atol, rtol)
    if problem:
        raise _fixed_batch_error(
            source,
            model,
            fixed_batch,
            f"a batch of {n} differs from {n} single runs: {problem}",
        )
    return diff


def _fixed_batch_error(
    source: Path,
    model,
    fixed_batch: int | None,
    what: str,
    exc: BaseException | None = None,
) -> FixedBatchError:
    nodes: list[tuple[str, str, list[int] | None]] = []
    culprit = _node_named_by_ort(model, str(exc)) if exc is not None else None
    if culprit is not None:
        nodes.append(culprit)
    batch = fixed_batch if fixed_batch is not None else 1
    nodes += [n for n in batch_pinning_reshapes(model, batch) if culprit is None or n[0] != culprit[0]]
    if fixed_batch is None:
        message = f"{source.name} declares a dynamic batch but the graph fixes it: {what}"
    else:
        message = (
            f"{source.name}: the graph fixes the batch size at {fixed_batch}, "
            f"so its batch cannot be made dynamic: {what}"
        )
    unbatched = [o for o in model.graph.output if not _leading_batch(o)]
    if unbatched:
        shapes = ", ".join(f"{o.name} {_dims(o)}" for o in unbatched[:3])
        message += f"; outputs without a batch axis: {shapes}"
    if nodes:
        shown = ", ".join(
            f"{op} {name!r}" + (f" with constant shape {shape}" if shape is not None else "")
            for name, op, shape in nodes[:4]
        )
        more = f" (+{len(nodes) - 4} more)" if len(nodes) > 4 else ""
        message += f"; nodes pinning it: {shown}{more}"
    return FixedBatchError(message, batch, nodes)


def _leading_batch(value) -> bool:
    dims = value.type.tensor_type.shape.dim
    # fixed batches were made symbolic before this
    return not dims or not dims[0].HasField("dim_value")


def _dims(value) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def _node_named_by_ort(model, error: str) -> tuple[str, str, list[int] | None] | None:
    """The graph node an onnxruntime error names. ORT's optimizers rename nodes they rewrite
    (``Reshape_13`` becomes ``Reshape_13_new_reshape``), so the longest graph name it starts with counts."""
    match = _ORT_NODE.search(error)
    if match is None:
        return None
    op_type, ort_name = match.groups()
    candidates = [n for n in model.graph.node if n.name and ort_name.startswith(n.name)]
    if not candidates:
        return (ort_name, op_type, None)
    node = max(candidates, key=lambda n: len(n.name))
    shape = (
        _constant_values(model.graph).get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
    )
    return (node.name, node.op_type, None if shape is None else [int(v) for v in shape])


def batch_pinning_reshapes(model, fixed_batch: int = 1) -> list[tuple[str, str, list[int]]]:
    """Reshape nodes on the data path from the inputs whose constant target shape fixes the batch.

    Two patterns: a shape with no ``-1`` and no ``0`` fixes the element count, so the batch (e.g.
    FastestDet's ``[24, 2, 1936]``, batch x channels / 2 in the first dim); a shape starting with
    the fixed batch (``[1, -1, 40, 40]``) keeps the first axis at that size and folds any other
    batch into the ``-1``. Returns ``(name, "Reshape", shape)`` in graph order. Accepts a
    ModelProto or a path.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model, f"inspect {model}")
    graph = model.graph
    constants = _constant_values(graph)
    on_data_path = _data_path(graph)
    found = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] not in on_data_path:
            continue
        shape = constants.get(node.input[1])
        if shape is None or shape.ndim != 1 or shape.size == 0:
            continue
        values = [int(v) for v in shape]
        fixes_count = -1 not in values and 0 not in values
        if fixes_count or values[0] == fixed_batch:
            found.append((node.name, node.op_type, values))
    return found


def _constant_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    # shape tensors are INT64 (TensorProto.INT64 == 7); other constants are of no interest here
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_type == 7}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == 7:
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _data_path(graph) -> set[str]:
    """Tensors computed from the graph inputs' values (Shape/Size outputs are metadata, not data)."""
    reached = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in reached for name in node.input):
            reached.update(node.output)
    return reached


# --------------------------------------------------------------------------------------------
# simplification


def simplify(
    source: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> SimplifyResult:
    """Simplify a graph with onnxslim (constant folding, dead-node removal, operator fusion).

    Source and result are run in onnxruntime on one made-up image-like input (symbolic dims at
    batch 1 and SYMBOLIC_SIZE) and every output must agree within ``atol + rtol * |source|``;
    otherwise :class:`OptimizationError` and nothing is written. ``metadata_props`` are carried over.
    """
    source = Path(source)
    original = load_onnx(source, f"simplify {source}")
    out = check_out_path(source, out_path)
    # onnxslim is a core dependency, but a broken install should still say what is missing
    try:
        import onnxslim
    except ImportError as exc:
        raise OptimizationError("simplify needs onnxslim (a visionpipe dependency): pip install onnxslim") from exc
    try:
        # from the path: onnxslim may change a ModelProto it is given
        slim = onnxslim.slim(str(source))
    except Exception as exc:
        raise OptimizationError(f"onnxslim failed on {source}: {type(exc).__name__}: {first_line(exc)}") from exc
    if slim is None:
        raise OptimizationError(f"onnxslim returned no model for {source}")
    with staged_file(out) as staged:
        save_onnx(slim, staged, f"simplify {source}")
        copy_metadata(original, staged)
        diff = _verify_same_outputs(source, staged, atol, rtol)
    return SimplifyResult(
        path=out,
        nodes_before=len(original.graph.node),
        nodes_after=len(slim.graph.node),
        max_abs_diff=diff,
        atol=atol,
        rtol=rtol,
    )


def _verify_same_outputs(source: Path, candidate: Path, atol: float, rtol: float) -> float:
    reference = _session(source)
    try:
        simplified = _session(candidate)
    except Exception as exc:
        raise OptimizationError(f"the simplified model of {source} does not load: {first_line(exc)}") from exc
    names = [o.name for o in reference.get_outputs()]
    if [o.name for o in simplified.get_outputs()] != names:
        raise OptimizationError(
            f"simplifying {source} changed its outputs to {[o.name for o in simplified.get_outputs()]}"
        )
    batched = {i.name for i in reference.get_inputs()}
    feed = _made_up_inputs(reference, 1, batched, np.random.default_rng(0))
    diff, problem = _compare(names, simplified.run(names, feed), reference.run(names, feed), atol, rtol)
    if problem:
        raise OptimizationError(f"the simplified model of {source} computes something else: {problem}")
    return diff


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
