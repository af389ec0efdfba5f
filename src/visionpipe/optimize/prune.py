"""Pruning: unstructured magnitude pruning of ONNX weights, structured channel pruning of PyTorch modules.

::

    result = prune_magnitude(load_model("yolox_nano_416_coco.onnx", family="yolox"), "yolox_p30.onnx", 0.3)
    result.sparsity, result.layers[0], result.compressed_bytes / result.source_compressed_bytes
    Pipeline(result.path)                       # no flags: a sidecar spec is written

    pruned, report = prune_torch_channels(net, torch.randn(1, 3, 320, 320), 0.5)   # visionpipe[torch]
    report.params_before, report.params_after, report.macs_after

Magnitude pruning sets the smallest-magnitude weights of Conv/Gemm/MatMul layers to zero:

* The weights are the initializers feeding input 1 of those nodes. Biases and other 1-D tensors,
  tensors below ``min_elements``, non-float tensors and tensors also used elsewhere (by another
  op, as another input, inside a subgraph, or as a graph output) are left alone and listed in
  :attr:`PruneResult.skipped` with the reason.
* ``scope="global"``: one threshold over the magnitudes of all prunable weights together, so layers
  with small weights lose more; ``scope="layer"``: every layer gets its own threshold. Either way the
  threshold is the ``sparsity`` quantile of the magnitudes (the smallest magnitude m with at least
  ``ceil(sparsity * n)`` of the n magnitudes <= m, numpy's ``inverted_cdf``) and every weight with
  ``|w| <= threshold`` becomes zero: ``ceil(sparsity * n)`` weights, more only on ties.
* ONNX stores tensors densely, so the file is as large as before: the zeros pay off once the
  file is compressed (downloads, storage; :attr:`PruneResult.compressed_bytes` is the size after
  zlib deflate at level 6, the gzip/zip default) or on runtimes with sparse kernels. ONNX
  Runtime's CPU provider has none: YOLOX-Nano 30% pruned runs at the same 23-26 ms as the source.
  At 30% YOLOX-Nano and NanoDet-m both compress to 0.77x of the source's compressed size (the
  dense float32 source itself deflates to only 0.91x).
* Magnitude pruning without fine-tuning costs accuracy, and how much depends on the network.
  mAP@.5:.95 at 30% (global; layer scope within 0.003 of it), on the first 16 val2017 photos:
  YOLOX-Nano 0.41 -> 0.26, NanoDet-m 0.35 -> 0.34; at 20% YOLOX-Nano keeps 0.34-0.35. Validate on your
  own images before shipping (tests/optimize/test_prune.py shows how).
* The source file is never written (``out_path`` equal to it is refused) and its
  ``metadata_props`` are kept; a sidecar spec ``<out>.yaml`` makes the result load with no flags.

Structured channel pruning (:func:`prune_torch_channels`) removes whole channels through
`torch-pruning <https://github.com/VainF/Torch-Pruning>`_, so the network really gets smaller and
faster; it needs retraining to recover accuracy. Layers whose outputs are the network's outputs
are never pruned (the output shape must not change).
"""

from __future__ import annotations

import copy
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import MissingExtraError
from visionpipe.models.loader import DetectionModel
from visionpipe.models.spec import write_sidecar_spec
from visionpipe.optimize.fp16 import _source_model
from visionpipe.optimize.graph import check_out_path, copy_metadata, load_onnx, save_onnx, staged_file

SCOPES = ("global", "layer")
PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")
# Tensors smaller than this are left dense: they hold few of the weights and carry much of the
# accuracy. On YOLOX-Nano the 54 tensors below 4096 elements (the stem, depthwise 3x3 kernels,
# small 1x1s) hold 4% of the weights; pruning them too takes 30% pruning from 0.26 to 0.06
# mAP@.5:.95 (layer scope) and global scope empties the stem (its weights are ~1/255 of the
# others, as it reads raw 0..255 pixels), 0.00 mAP. Measured on 16 val2017 photos, fp32 0.41.
MIN_ELEMENTS = 4096
COMPRESSION = "zlib deflate, level 6 (the gzip/zip default)"
COMPRESSION_LEVEL = 6
# a layer above this in global scope is reported: the one threshold nearly emptied it
NEARLY_EMPTY = 0.9

# importance name -> how to build it from the torch_pruning module
IMPORTANCES = {
    "l1": lambda tp: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda tp: tp.importance.MagnitudeImportance(p=2),
    "lamp": lambda tp: tp.importance.LAMPImportance(p=2),
    "fpgm": lambda tp: tp.importance.FPGMImportance(p=2),
    "bn_scale": lambda tp: tp.importance.BNScaleImportance(),
}


# --------------------------------------------------------------------------------------------
# results


@dataclass
class LayerSparsity:
    """One pruned weight tensor. ``node`` is its (first) consumer."""

    weight: str
    node: str
    op: str
    shape: tuple[int, ...]
    elements: int
    zeros: int  # after pruning, including zeros that were already there

    @property
    def sparsity(self) -> float:
        return self.zeros / self.elements if self.elements else 0.0


@dataclass
class PruneResult:
    """What :func:`prune_magnitude` wrote. ``os.fspath(result)`` / ``str(result)`` is the path."""

    path: Path
    scope: str
    target_sparsity: float
    sparsity: float  # zeros / elements over the pruned tensors, as achieved
    layers: list[LayerSparsity]
    threshold: float | None  # the global magnitude threshold; None for scope="layer" or nothing pruned
    size_bytes: int
    source_size_bytes: int
    compressed_bytes: int  # of the written file, see ``compression``
    source_compressed_bytes: int
    compression: str = COMPRESSION
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (weight, why it was left dense)
    spec_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pruned_weights(self) -> int:
        return sum(layer.elements for layer in self.layers)

    @property
    def compressed_ratio(self) -> float:
        if not self.source_compressed_bytes:
            return float("nan")
        return self.compressed_bytes / self.source_compressed_bytes

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass
class ChannelPruneReport:
    """What :func:`prune_torch_channels` removed. MACs are torch-pruning's count for ``example_inputs``."""

    ratio: float
    importance: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    protected_layers: list[str]  # output layers kept whole so the output shape stays
    ignored_layers: list[str]  # protected plus the caller's ignored_layers

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else float("nan")

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else float("nan")


# --------------------------------------------------------------------------------------------
# magnitude pruning of ONNX weights


@dataclass
class _Weight:
    name: str
    node: str
    op: str
    values: np.ndarray


def prune_magnitude(
    model: DetectionModel | str | os.PathLike,
    out_path: str | os.PathLike,
    sparsity: float = 0.3,
    *,
    scope: str = "global",
    op_types: Sequence[str] = PRUNABLE_OPS,
    min_elements: int = MIN_ELEMENTS,
) -> PruneResult:
    """Zero the smallest-magnitude weights of ``model`` and write the result (with a sidecar spec).

    ``model`` is a :class:`~visionpipe.models.loader.DetectionModel`, an ONNX file or its spec; a
    file that does not configure as a detector is still pruned, without a sidecar spec (see notes). ``sparsity`` is the
    fraction of each pruned set's weights to zero, ``0 <= sparsity < 1``. Raises ``ValueError`` for
    bad arguments and :class:`~visionpipe.optimize.quantize.OptimizationError` when the source is
    not a readable ONNX model or ``out_path`` is the source.
    """
    _validate(sparsity, scope, min_elements)
    source_path, detection_model, notes = _source_model(model, "prune {}")
    action = f"prune {source_path}"
    source = load_onnx(source_path, action)
    out = check_out_path(source_path, out_path)

    weights, skipped = _prunable_weights(source.graph, op_types, min_elements)
    threshold = _apply(weights, sparsity, scope)
    _write_back(source.graph, weights)
    layers = [_layer(w) for w in weights]
    if not weights:
        notes.append(f"nothing pruned: no {'/'.join(op_types)} weight qualifies")
    if scope == "global":
        notes += [
            f"{layer.weight} ({layer.op}) is {layer.sparsity:.0%} zeros: the global threshold nearly emptied it"
            for layer in layers
            if layer.sparsity > NEARLY_EMPTY
        ]

    with staged_file(out) as staging:
        save_onnx(source, staging, action)
        copy_metadata(source, staging)
    spec_path = None
    if detection_model is not None:
        spec_path = write_sidecar_spec(detection_model, out)

    elements = sum(layer.elements for layer in layers)
    return PruneResult(
        path=out,
        scope=scope,
        target_sparsity=sparsity,
        sparsity=sum(layer.zeros for layer in layers) / elements if elements else 0.0,
        layers=layers,
        threshold=threshold,
        size_bytes=out.stat().st_size,
        source_size_bytes=source_path.stat().st_size,
        compressed_bytes=compressed_size(out),
        source_compressed_bytes=compressed_size(source_path),
        skipped=skipped,
        spec_path=spec_path,
        notes=notes,
    )


def _prunable_weights(graph, op_types: Sequence[str], min_elements: int) -> tuple[list[_Weight], list[tuple[str, str]]]:
    """The weights to prune (in graph order), and the skipped ones with why."""
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    uses = _uses(graph)
    outputs = {output.name for output in graph.output}
    weights: list[_Weight] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for node in graph.node:
        if node.op_type not in op_types or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in seen or name not in initializers:
            continue  # computed weights (e.g. DequantizeLinear outputs) are not initializers
        seen.add(name)
        tensor = initializers[name]
        reason = _skip_reason(tensor, uses[name], name in outputs, op_types, min_elements)
        if reason:
            skipped.append((name, reason))
        else:
            values = numpy_helper.to_array(tensor).copy()
            weights.append(_Weight(name, node.name, node.op_type, values))
    return weights, skipped


def _skip_reason(
    tensor,
    uses: list[tuple[str, int]],
    is_output: bool,
    op_types: Sequence[str],
    min_elements: int,
) -> str | None:
    """Why a weight initializer must stay as it is, or None when it can be pruned."""
    from onnx import TensorProto

    others = sorted({f"{op} input {i}" for op, i in uses if op not in op_types or i != 1})
    if others or is_output:
        return f"also used as {', '.join(others) or 'a graph output'}"
    if tensor.data_type not in (
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.DOUBLE,
    ):
        return f"not a float tensor ({TensorProto.DataType.Name(tensor.data_type)})"
    if len(tensor.dims) < 2:
        return f"{len(tensor.dims)}-D"
    elements = math.prod(tensor.dims)
    if elements < min_elements:
        return f"{elements} elements < min_elements {min_elements}"
    return None


def _magnitude_threshold(magnitudes: np.ndarray, sparsity: float) -> float | None:
    """The smallest m with at least ``ceil(sparsity * n)`` magnitudes <= m (None when that is 0)."""
    count = _zero_count(magnitudes.size, sparsity)
    if count == 0:
        return None
    return float(np.partition(magnitudes.ravel(), count - 1)[count - 1])


def compressed_size(path: str | os.PathLike, level: int = COMPRESSION_LEVEL) -> int:
    """Bytes of ``path`` after zlib deflate (streamed, so large files need little memory)."""
    compressor = zlib.compressobj(level)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            size += len(compressor.compress(chunk))
    return size + len(compressor.flush())


def _validate(sparsity: float, scope: str, min_elements: int) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if min_elements < 0:
        raise ValueError(f"min_elements must not be negative, got {min_elements}")


def _zero_count(size: int, sparsity: float) -> int:
    # rounded first so 0.3 * 10 (= 3.0000000000000004 in floating point) asks for 3, not 4
    return min(size, math.ceil(round(sparsity * size, 9)))


def _apply(weights: list[_Weight], sparsity: float, scope: str) -> float | None:
    """Zero weights in place; returns the global threshold (None for layer scope)."""
    if not weights:
        return None
    if scope == "layer":
        for weight in weights:
            _zero_below(weight, _magnitude_threshold(np.abs(weight.values), sparsity))
        return None
    magnitudes = np.concatenate([np.abs(w.values).ravel() for w in weights])
    threshold = _magnitude_threshold(magnitudes, sparsity)
    for weight in weights:
        _zero_below(weight, threshold)
    return threshold


def _zero_below(weight: _Weight, threshold: float | None) -> None:
    if threshold is not None:
        weight.values[np.abs(weight.values) <= threshold] = 0


def _write_back(graph, weights: list[_Weight]) -> None:
    from onnx import numpy_helper

    pruned = {w.name: w for w in weights}
    for tensor in graph.initializer:
        if tensor.name in pruned:
            tensor.CopyFrom(numpy_helper.from_array(pruned[tensor.name].values, tensor.name))


def _layer(weight: _Weight) -> LayerSparsity:
    return LayerSparsity(
        weight=weight.name,
        node=weight.node,
        op=weight.op,
        shape=tuple(int(d) for d in weight.values.shape),
        elements=int(weight.values.size),
        zeros=int(weight.values.size - np.count_nonzero(weight.values)),
    )


def _uses(graph) -> dict[str, list[tuple[str, int]]]:
    """Tensor name -> every (op type, input index) reading it, subgraphs included.

    A subgraph node can read an outer tensor by name; such uses count, so a weight shared with an
    If/Loop body is not pruned behind its back.
    """
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in _all_nodes(graph):
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    return uses


def _all_nodes(graph) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


# --------------------------------------------------------------------------------------------
# structured channel pruning of PyTorch modules


def prune_torch_channels(
    module,
    example_inputs,
    ratio: float,
    *,
    ignored_layers: Iterable[Any] | None = None,
    importance: str = "l2",
) -> tuple[Any, ChannelPruneReport]:
    """Remove ``ratio`` of the channels of every prunable layer of a copy of ``module``.

    Returns ``(pruned module, ChannelPruneReport)``; ``module`` itself is not changed. Layers whose
    outputs reach the network's outputs are added to ``ignored_layers`` so the output shape stays.
    ``importance`` ranks channels: "l1"/"l2" (weight magnitude), "lamp", "fpgm" or "bn_scale".
    Needs ``visionpipe[torch]`` (torch and torch-pruning), else :class:`MissingExtraError`.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {sorted(IMPORTANCES)}, got {importance!r}")
    _, tp = _import_torch_pruning()

    pruned = copy.deepcopy(module)
    was_training = pruned.training
    # tracing runs forward passes: in train mode they would move BatchNorm running statistics
    pruned.eval()
    macs_before, params_before = tp.utils.count_ops_and_params(pruned, example_inputs)
    protected = _output_layers(tp, pruned, example_inputs)
    ignored = [*protected, *_same_layers(module, pruned, ignored_layers or [])]
    pruner = tp.pruner.BasePruner(
        pruned,
        example_inputs,
        importance=IMPORTANCES[importance](tp),
        pruning_ratio=ratio,
        ignored_layers=ignored,
    )
    pruner.step()
    macs_after, params_after = tp.utils.count_ops_and_params(pruned, example_inputs)
    pruned.train(was_training)
    names = {layer: name for name, layer in pruned.named_modules()}
    report = ChannelPruneReport(
        ratio=ratio,
        importance=importance,
        params_before=int(params_before),
        params_after=int(params_after),
        macs_before=int(macs_before),
        macs_after=int(macs_after),
        protected_layers=[names.get(layer, repr(layer)) for layer in protected],
        ignored_layers=[names.get(layer, repr(layer)) for layer in ignored],
    )
    return pruned, report


def _import_torch_pruning():
    try:
        import torch
        import torch_pruning
    except ImportError as exc:
        raise MissingExtraError("torch-pruning", "torch", "structured channel pruning") from exc
    return torch, torch_pruning


def _output_layers(tp, module, example_inputs) -> list[Any]:
    """The conv/linear layers whose output channels are the network's output channels.

    Walks torch-pruning's dependency graph back from its sinks (nodes nothing reads) through every
    other op (activations, BatchNorm, reshapes, concatenations) until a conv or linear layer.
    """
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example_inputs)
    layer_types = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)
    frontier = [node for node in graph.module2node.values() if not node.outputs]
    seen: set[int] = set()
    found: list[Any] = []
    while frontier:
        node = frontier.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, layer_types):
            found.append(node.module)
        else:
            frontier.extend(node.inputs)
    return found


def _same_layers(original, copied, layers: Iterable[Any]) -> list[Any]:
    """The copies of ``layers`` (modules of ``original``) in ``copied``.

    A module that is not part of ``original`` is an error: ignoring it would silently ignore nothing.
    """
    name_of = {id(layer): name for name, layer in original.named_modules()}
    copied_by_name = dict(copied.named_modules())
    copies = []
    for layer in layers:
        if id(layer) not in name_of:
            raise ValueError(f"ignored_layers holds {layer!r}, which is not a submodule of the module being pruned")
        copies.append(copied_by_name[name_of[id(layer)]])
    return copies
