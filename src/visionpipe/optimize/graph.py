"""The floor of ``visionpipe.optimize``: what every optimization shares, and nothing else.

Loading and saving ONNX graphs with errors that name the action, staging an output beside its
final path so a failed job leaves nothing behind, refusing to overwrite the source, carrying the
source's metadata over, topological order, and scoring a model (or the same model with other
weights) through the pipeline. Every optimize module builds on this one; it imports no other
optimize module, so the package has no import cycles (tests/test_layering.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from visionpipe.errors import ModelLoadError, OptimizationError, first_line
from visionpipe.models.loader import DetectionModel


def load_onnx(path: str | os.PathLike, action: str | None = None):
    """The ModelProto at ``path``; a missing or unreadable file is an OptimizationError worded
    "cannot <action>: ..." (``action`` names the path, default "quantize <path>")."""
    import onnx

    path = Path(path)
    action = action or f"quantize {path}"
    if not path.is_file():
        raise OptimizationError(f"cannot {action}: file not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise OptimizationError(f"cannot {action}: not a readable ONNX model ({first_line(exc)})") from exc


@contextlib.contextmanager
def staged_file(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out``; moved onto ``out`` when the block succeeds, removed if not,
    so a failed optimization leaves nothing behind. Beside, not in /tmp, so the final move is an
    atomic rename on the same file system; the pid keeps two runs writing one name apart."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.stem}.{os.getpid()}.partial{out.suffix}")
    try:
        yield temp
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)


def save_onnx(model, path: Path, action: str) -> None:
    import onnx

    try:
        onnx.save(model, str(path))
    except Exception as exc:  # protobuf's 2 GB limit, a full disk, ...
        raise OptimizationError(f"cannot {action}: writing {path} failed ({first_line(exc)})") from exc


def check_out_path(model_path: Path, out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    if out.resolve() == model_path.resolve() or (
        out.exists() and model_path.exists() and os.path.samefile(out, model_path)
    ):
        raise OptimizationError(f"refusing to overwrite the original model {model_path}: give another out_path")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def onnx_path_of(model: DetectionModel) -> Path:
    path = getattr(model.backend, "path", None)
    if path is None or Path(path).suffix.lower() != ".onnx":
        raise OptimizationError(f"model {model.name!r} is not backed by an ONNX file ({model.backend!r})")
    return Path(path)


def copy_metadata(source, out_path: Path) -> None:
    """Copy ``metadata_props`` the quantizer dropped (Ultralytics names/imgsz/task, ...)."""
    import onnx

    wanted = {p.key: p.value for p in source.metadata_props}
    if not wanted:
        return
    quantized = onnx.load(str(out_path))
    have = {p.key: p.value for p in quantized.metadata_props}
    if all(have.get(k) == v for k, v in wanted.items()):
        return
    merged = {**have, **wanted}
    del quantized.metadata_props[:]
    for key, value in merged.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(quantized, str(out_path))


def topological(nodes: list, available: set[str]) -> list:
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output}
    if all(all(not x or x in available or produced_by.get(x, -1) < i for x in n.input) for i, n in enumerate(nodes)):
        return nodes
    done: list = []
    ready = set(available)
    remaining = list(nodes)
    while remaining:
        progress = [n for n in remaining if all(not x or x in ready or x not in produced_by for x in n.input)]
        if not progress:
            return nodes  # a cycle or unknown inputs: keep the file's order
        for n in progress:
            done.append(n)
            ready.update(n.output)
        remaining = [n for n in remaining if n not in progress]
    return done


def evaluate_model(
    model: DetectionModel,
    images: Sequence[str],
    annotations: Any,
    conf: float,
    batch_size: int,
):
    from visionpipe.evaluation import evaluate_coco
    from visionpipe.pipeline import Pipeline

    with Pipeline(model, conf=conf) as pipe:
        results = pipe.run(images, batch_size=batch_size)
    return evaluate_coco(results, annotations, model.class_names)


def with_weights(model: DetectionModel, path: Path) -> DetectionModel:
    """``model`` with its weights swapped for ``path`` (same inputs/outputs, so the same decoder)."""
    from visionpipe.models.backends.onnxruntime import OnnxRuntimeBackend

    backend = model.backend
    try:
        new = OnnxRuntimeBackend(path, intra_op_threads=getattr(backend, "intra_op_threads", 0) or 0)
    except ModelLoadError as exc:
        raise OptimizationError(f"the quantized model {path} does not load: {exc}") from exc
    if [o.name for o in new.outputs] != [o.name for o in backend.outputs]:
        raise OptimizationError(f"quantization changed the outputs of {path}")
    return dataclasses.replace(model, backend=new)
