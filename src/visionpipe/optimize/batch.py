"""A fixed batch made dynamic (``make_batch_dynamic``), checked as a batch of N against N single
runs; when the graph itself pins the batch, the nodes that do are named.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionpipe.errors import (
    FixedBatchError,
    OptimizationError,
    first_line,
)
from visionpipe.optimize.checks import (
    BATCH_DIM,
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ORT_NODE,
    PathResult,
    compare_outputs,
    made_up_inputs,
    numpy_dtype,
    ort_message,
    ort_session,
)
from visionpipe.optimize.graph import check_out_path, load_onnx, save_onnx, staged_file


@dataclass
class DynamicBatchResult(PathResult):
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
        session = ort_session(path)
    except Exception as exc:
        raise _fixed_batch_error(
            source,
            model,
            fixed_batch,
            f"the rewritten model does not load ({first_line(exc)})",
        ) from exc
    feed = made_up_inputs(session, n, batched, np.random.default_rng(0))
    if samples is not None:
        first = session.get_inputs()[0]
        if samples.shape[0] != n or first.name not in batched:
            raise ValueError(
                f"samples must be a batch of verify_batch={n} for input {first.name!r}, got shape {samples.shape}"
            )
        feed[first.name] = samples.astype(numpy_dtype(first.type), copy=False)
    names = [o.name for o in session.get_outputs()]
    try:
        together = session.run(names, feed)
    except Exception as exc:
        raise _fixed_batch_error(
            source,
            model,
            fixed_batch,
            f"a batch of {n} fails: {ort_message(exc)}",
            exc,
        ) from exc
    try:
        singles = [
            session.run(names, {k: v[i : i + 1] if k in batched else v for k, v in feed.items()}) for i in range(n)
        ]
    except Exception as exc:  # a source fixed at a batch above 1
        raise _fixed_batch_error(source, model, fixed_batch, f"a batch of 1 fails: {ort_message(exc)}", exc) from exc
    want = [np.concatenate([run[k] for run in singles]) for k in range(len(names))]
    diff, problem = compare_outputs(names, together, want, atol, rtol)
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
    match = ORT_NODE.search(error)
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
