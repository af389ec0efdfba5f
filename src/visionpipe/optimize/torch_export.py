"""PyTorch -> ONNX: ``export_torch`` writes the graph with a dynamic batch and checks it against
torch at two batch sizes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.errors import (
    MissingExtraError,
    OptimizationError,
    first_line,
)
from visionpipe.optimize.checks import (
    BATCH_DIM,
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    PathResult,
    compare_outputs,
    ort_message,
    ort_session,
)
from visionpipe.optimize.graph import staged_file


@dataclass
class ExportResult(PathResult):
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
        session = ort_session(path)
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
                f"the exported model fails at batch {batch} in onnxruntime ({ort_message(exc)}); "
                f"{_batch_hint(shape[0], batch)}"
            ) from exc
        diffs[batch], problem = compare_outputs(names, got, want, atol, rtol)
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
