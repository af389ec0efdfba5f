"""``simplify``: onnxslim on a copy, outputs compared on one made-up input before it is kept."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionpipe.errors import (
    OptimizationError,
    first_line,
)
from visionpipe.optimize.checks import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    PathResult,
    compare_outputs,
    made_up_inputs,
    ort_session,
)
from visionpipe.optimize.graph import check_out_path, copy_metadata, load_onnx, save_onnx, staged_file


@dataclass
class SimplifyResult(PathResult):
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
    reference = ort_session(source)
    try:
        simplified = ort_session(candidate)
    except Exception as exc:
        raise OptimizationError(f"the simplified model of {source} does not load: {first_line(exc)}") from exc
    names = [o.name for o in reference.get_outputs()]
    if [o.name for o in simplified.get_outputs()] != names:
        raise OptimizationError(
            f"simplifying {source} changed its outputs to {[o.name for o in simplified.get_outputs()]}"
        )
    batched = {i.name for i in reference.get_inputs()}
    feed = made_up_inputs(reference, 1, batched, np.random.default_rng(0))
    diff, problem = compare_outputs(names, simplified.run(names, feed), reference.run(names, feed), atol, rtol)
    if problem:
        raise OptimizationError(f"the simplified model of {source} computes something else: {problem}")
    return diff
