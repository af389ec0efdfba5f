"""Which parts of a network lose accuracy when quantized, found by measuring rather than guessing.

The graph is cut, in topological order, into *units*: one convolution with the nodes that follow it
up to the next convolution (activations, adds, concats, pooling). Contiguous units form *segments*.
A segment's sensitivity is the mAP lost when that segment alone is int8 and everything else stays
float. Segments that lose more than a threshold are halved and measured again, so the search ends on
small culprits after a logarithmic number of quantizations rather than one per layer::

    units = conv_units(prepared_model_path)
    leaves = bisect_sensitivity(units, measure_drop, threshold=0.005)
    leaves[0].nodes  # the most sensitive segment's node names, to keep in float

This module only does the bookkeeping; ``measure_drop(node_names) -> float`` (quantize those nodes
alone, evaluate, return fp32 mAP minus int8 mAP) is supplied by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

CONV_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Segment:
    """Contiguous units, in topological order."""

    units: tuple[tuple[str, ...], ...]

    @property
    def nodes(self) -> list[str]:
        return [name for unit in self.units for name in unit]

    @property
    def label(self) -> str:
        first, last = self.units[0][0], self.units[-1][0]
        return first if first == last else f"{first} .. {last}"

    def halves(self) -> tuple[Segment, Segment]:
        middle = len(self.units) // 2
        return Segment(self.units[:middle]), Segment(self.units[middle:])


@dataclass(frozen=True)
class SegmentDrop:
    """A measured segment: mAP@.5:.95 lost when only it is int8."""

    segment: Segment
    map_drop: float

    @property
    def nodes(self) -> list[str]:
        return self.segment.nodes


def conv_units(model_path: str | os.PathLike) -> list[tuple[str, ...]]:
    """Named nodes grouped into units that each start at a weighted op (Conv, Gemm, MatMul).

    Nodes before the first weighted op join the first unit. Unnamed nodes are left out, since the
    quantizer can only exclude nodes by name.
    """
    import onnx

    from visionpipe.errors import OptimizationError
    from visionpipe.optimize.graph import topological

    graph = onnx.load(str(model_path), load_external_data=False).graph
    nodes = topological(list(graph.node), {i.name for i in graph.input} | {t.name for t in graph.initializer})
    units: list[list[str]] = []
    leading: list[str] = []
    for node in nodes:
        if node.op_type in CONV_OPS:
            units.append([])
        target = units[-1] if units else leading
        if node.name:
            target.append(node.name)
    if not units:
        raise OptimizationError(f"{model_path} has no Conv/Gemm/MatMul nodes to measure")
    units[0] = leading + units[0]
    return [tuple(unit) for unit in units if unit]


def split_even(units: Sequence[tuple[str, ...]], parts: int) -> list[Segment]:
    """``units`` cut into at most ``parts`` contiguous segments of near-equal unit counts."""
    parts = max(1, min(parts, len(units)))
    bounds = [round(i * len(units) / parts) for i in range(parts + 1)]
    return [Segment(tuple(units[a:b])) for a, b in pairwise(bounds) if b > a]


def bisect_sensitivity(
    units: Sequence[tuple[str, ...]],
    measure_drop: Callable[[list[str]], float],
    *,
    threshold: float,
    initial_segments: int = 8,
    max_measurements: int = 40,
    on_measure: Callable[[Segment, float], None] | None = None,
) -> list[SegmentDrop]:
    """Leaf segments with their measured drops, most sensitive first.

    A segment whose drop exceeds ``threshold`` is halved while it has more than one unit and the
    budget of ``max_measurements`` quantizations lasts. When neither half exceeds the threshold the
    loss comes from the two together, and the parent is kept as the leaf.
    """
    if not units:
        return []
    budget = [max_measurements]

    def measure(segment: Segment) -> float:
        budget[0] -= 1
        drop = float(measure_drop(segment.nodes))
        if on_measure is not None:
            on_measure(segment, drop)
        return drop

    def refine(segment: Segment, drop: float) -> list[SegmentDrop]:
        if drop <= threshold or len(segment.units) == 1 or budget[0] < 2:
            return [SegmentDrop(segment, drop)]
        halves = segment.halves()
        drops = [measure(half) for half in halves]
        if all(d <= threshold for d in drops):
            return [SegmentDrop(segment, drop)]
        return [leaf for half, d in zip(halves, drops) for leaf in refine(half, d)]

    leaves: list[SegmentDrop] = []
    for segment in split_even(units, initial_segments):
        if budget[0] <= 0:
            break
        leaves.extend(refine(segment, measure(segment)))
    return sorted(leaves, key=lambda leaf: -leaf.map_drop)
