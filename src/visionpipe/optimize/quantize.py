"""Post-training int8 quantization with ONNX Runtime's own tooling (no quantizer of our own).

The flow follows NNCF's YOLO example: quantize, validate fp32 against int8 on real images, and keep
the detection head in float when quantizing it costs accuracy::

    model = load_model("yolox_nano_416_coco.yaml")
    quantize_dynamic_int8(model.backend.path, "yolox_dyn.onnx")        # weights only, no data
    static = quantize_static_int8(model, calibration_paths, "yolox_int8.onnx")
    static.path, static.pre_processed, static.skipped_images
    report = quantize_accuracy_aware(model, calibration_paths, val_paths, "gt.json", "yolox_int8.onnx")
    report.fp32_map, report.int8_map, report.excluded_nodes, report.met_tolerance

* The original model file is never written: results go to ``out_path`` and ``out_path`` equal to
  the model's own path is refused.
* Static quantization writes QDQ models (``QuantFormat.QDQ``), uint8 activations and int8
  per-channel weights by default, the combination that measures best on x86 CPUs without VNNI.
* ``quant_pre_process`` (symbolic shape inference + graph optimisation) runs first; when it fails
  the original graph is quantized instead and :attr:`StaticQuantization.pre_processed` is False
  with the cause in :attr:`StaticQuantization.pre_process_error`.
* Graphs below opset 13 (YOLOX-Nano is opset 11) are converted to 13 with onnx's version converter
  first, as per-channel DequantizeLinear needs it (recorded in ``opset_upgraded``).
* On YOLOX-Nano the accuracy is lost at the input end, not in the head: full int8 scores 0.27 mAP
  against 0.41 fp32 on 8 val2017 photos, keeping the head in float changes nothing, keeping the
  first 9 convolutions in float (:func:`stem_nodes`) gives 0.39-0.40.
* The quantized model works through :class:`~visionpipe.pipeline.Pipeline` with no extra flags:
  a sidecar spec ``<out>.yaml`` holding the source model's resolved configuration (family, classes,
  input size, preprocessing, thresholds, decoder options of its own spec) is written beside it, and
  the source's ONNX ``metadata_props`` (e.g. Ultralytics ``names``/``imgsz``/``task``) are copied
  into the quantized file.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import (
    ImageDecodeError,
    InputShapeError,
    ModelLoadError,
    VisionpipeError,
    first_line,
)
from visionpipe.io.images import decode_image
from visionpipe.models.loader import DetectionModel
from visionpipe.preprocess import preprocess as preprocess_image

try:  # the base class ORT's calibrators expect; imported lazily where it matters
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - onnxruntime is a core dependency
    _ReaderBase = object  # type: ignore[assignment,misc]

METHODS = ("minmax", "entropy", "percentile")
QUANT_TYPES = ("uint8", "int8")

# Op types after the last convolutions that do box/score decoding rather than feature extraction.
DECODE_OPS = frozenset(
    {
        "Sigmoid",
        "Exp",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Concat",
        "Reshape",
        "Transpose",
        "Softmax",
        "Slice",
        "Split",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
        "Tanh",
        "Pow",
        "Sqrt",
        "MatMul",
        "Cast",
        "Shape",
        "ConstantOfShape",
        "Constant",
        "Expand",
        "Tile",
        "ReduceMax",
        "ArgMax",
        "Identity",
        "Clip",
        "Relu",
        "LeakyRelu",
        "HardSigmoid",
        "Log",
        "Neg",
    }
)


class OptimizationError(VisionpipeError):
    """A model cannot be optimized (quantized); the message names the cause."""


# --------------------------------------------------------------------------------------------
# results


@dataclass
class StaticQuantization:
    """What :func:`quantize_static_int8` wrote. ``os.fspath(result)`` / ``str(result)`` is the path."""

    path: Path
    method: str
    calibration_images: int
    skipped_images: list[tuple[str, str]] = field(default_factory=list)  # (path, cause)
    pre_processed: bool = False  # a quant_pre_process output was quantized (maybe without symbolic shapes)
    pre_process_error: str | None = (
        None  # what failed on the way (None: full pre-processing worked)
    )
    excluded_nodes: list[str] = field(default_factory=list)
    spec_path: Path | None = None
    opset_upgraded: tuple[int, int] | None = (
        None  # (from, to) when the graph was converted for QDQ
    )

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass
class Attempt:
    """One quantization tried by :func:`quantize_accuracy_aware`."""

    excluded_count: int
    excluded_nodes: list[str]
    map_50_95: float
    map_50: float
    size_bytes: int


@dataclass
class AccuracyAwareResult:
    fp32_map: float  # mAP@.5:.95 of the float model on the validation images
    int8_map: float  # of the chosen attempt
    excluded_nodes: list[str]  # of the chosen attempt (kept in float)
    attempts: list[Attempt]
    path: Path  # the chosen attempt, written to out_path
    fp32_size_bytes: int
    int8_size_bytes: int
    met_tolerance: bool
    max_map_drop: float
    val_images: int
    pre_processed: bool
    pre_process_error: str | None
    skipped_calibration_images: list[tuple[str, str]] = field(default_factory=list)
    spec_path: Path | None = None

    @property
    def map_drop(self) -> float:
        return self.fp32_map - self.int8_map

    @property
    def size_ratio(self) -> float:
        return (
            self.int8_size_bytes / self.fp32_size_bytes
            if self.fp32_size_bytes
            else float("nan")
        )

    def summary(self) -> str:
        verdict = "within" if self.met_tolerance else "NOT within"
        return (
            f"fp32 mAP {self.fp32_map:.4f}, int8 mAP {self.int8_map:.4f} (drop {self.map_drop:+.4f}, {verdict} "
            f"tolerance {self.max_map_drop}); {len(self.excluded_nodes)} nodes kept in float; "
            f"{self.int8_size_bytes} / {self.fp32_size_bytes} bytes ({self.size_ratio:.2f}x) on {self.val_images} images"
        )


# --------------------------------------------------------------------------------------------
# helpers


def _load_onnx(path: str | os.PathLike):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OptimizationError(f"cannot quantize {path}: file not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise OptimizationError(
            f"cannot quantize {path}: not a readable ONNX model ({first_line(exc)})"
        ) from exc


def _check_out_path(model_path: Path, out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    if out.resolve() == model_path.resolve() or (
        out.exists() and model_path.exists() and os.path.samefile(out, model_path)
    ):
        raise OptimizationError(
            f"refusing to overwrite the original model {model_path}: give another out_path"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _model_path(model: DetectionModel) -> Path:
    path = getattr(model.backend, "path", None)
    if path is None or Path(path).suffix.lower() != ".onnx":
        raise OptimizationError(
            f"model {model.name!r} is not backed by an ONNX file ({model.backend!r})"
        )
    return Path(path)


def _copy_metadata(source, out_path: Path) -> None:
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


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    if name not in QUANT_TYPES:
        raise ValueError(
            f"quantization type must be one of {QUANT_TYPES}, got {name!r}"
        )
    return QuantType.QUInt8 if name == "uint8" else QuantType.QInt8


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise ValueError(f"calibration method must be one of {METHODS}, got {name!r}")
    return methods[name]


def spec_dict(model: DetectionModel, model_file: str | os.PathLike) -> dict[str, Any]:
    """A spec (as a dict, paths relative to ``model_file``'s folder) reproducing ``model``'s configuration.

    Taken from the resolved model rather than the file it came from, so it holds whether the model
    was loaded from a spec, a family name or embedded metadata. Decoder options come from the
    source's own sidecar spec when it has one (the loaded model does not keep them).
    """
    from visionpipe.models.spec import ModelSpec, find_sidecar_spec

    pre = model.preprocess
    params = model.params
    spec: dict[str, Any] = {
        "model": Path(model_file).name,
        "family": model.family,
        "name": model.name,
        "input_size": [int(model.input_hw[0]), int(model.input_hw[1])],
        "preprocess": {
            "resize": pre.resize.value,
            "anchor": pre.anchor.value,
            "pad_value": float(pre.pad_value),
            "interpolation": pre.interpolation,
            "channel_order": pre.channel_order.value,
            "scale": float(pre.scale),
            "mean": [float(v) for v in pre.mean],
            "std": [float(v) for v in pre.std],
            "size_divisor": int(pre.size_divisor),
        },
        "classes": list(model.class_names),
        "thresholds": {
            k: v
            for k, v in {
                "score": float(params.score_threshold),
                "iou": float(params.iou_threshold),
                "multi_label": bool(params.multi_label),
                "agnostic": bool(params.agnostic),
                "classes": None
                if params.classes is None
                else [int(c) for c in params.classes],
                "top_k": params.top_k,
                "max_det": params.max_det,
            }.items()
            if v is not None
        },
    }
    sidecar = find_sidecar_spec(getattr(model.backend, "path", ""))
    if sidecar is not None:
        try:
            original = ModelSpec.from_file(sidecar)
            if original.decoder:
                spec["decoder"] = dict(original.decoder)
        except VisionpipeError:
            pass
    ModelSpec.from_dict(spec)  # validate what we are about to write
    return spec


def write_sidecar_spec(model: DetectionModel, out_path: str | os.PathLike) -> Path:
    """Write ``<out>.yaml`` so ``load_model(out_path)`` configures the quantized model like the original."""
    import yaml

    out_path = Path(out_path)
    target = out_path.with_suffix(".yaml")
    target.write_text(
        yaml.safe_dump(spec_dict(model, out_path), sort_keys=False), encoding="utf-8"
    )
    return target


# --------------------------------------------------------------------------------------------
# dynamic


def quantize_dynamic_int8(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    per_channel: bool = False,
) -> Path:
    """Weights-only int8 quantization (activations quantized on the fly); no calibration data needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_path = Path(model_path)
    source = _load_onnx(model_path)
    out = _check_out_path(model_path, out_path)
    try:
        quantize_dynamic(
            str(model_path),
            str(out),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
        )
    except Exception as exc:
        raise OptimizationError(
            f"dynamic quantization of {model_path} failed: {first_line(exc)}"
        ) from exc
    _copy_metadata(source, out)
    return out


# --------------------------------------------------------------------------------------------
# static


class ImageCalibrationReader(_ReaderBase):  # type: ignore[misc,valid-type]
    """Feeds calibration images through the model's own decoding and preprocessing, batch 1.

    Every image is decoded and preprocessed when the reader is built (so failures surface at
    once); images that fail are skipped and listed in ``skipped`` as ``(path, cause)``. If none
    decode, :class:`OptimizationError` says why. ``rewind()`` starts over for another pass.
    Memory: one float32 input tensor per image (2 MB at 416x416).
    """

    def __init__(
        self, model: DetectionModel, images: Iterable[str | os.PathLike]
    ) -> None:
        self.input_name = model.backend.image_input.name
        dtype = model.backend.image_input.dtype
        self.skipped: list[tuple[str, str]] = []
        self.tensors: list[np.ndarray] = []
        paths = [str(p) for p in images]
        for path in paths:
            try:
                image = decode_image(path)
                tensor, _ = preprocess_image(image, model.input_hw, model.preprocess)
            except ImageDecodeError as exc:
                self.skipped.append((path, exc.cause))
                continue
            except InputShapeError as exc:
                self.skipped.append((path, str(exc)))
                continue
            self.tensors.append(tensor[None].astype(dtype, copy=False))
        if not self.tensors:
            if not paths:
                raise OptimizationError("no calibration images were given")
            causes = sorted({cause for _, cause in self.skipped})
            raise OptimizationError(
                f"none of the {len(paths)} calibration images could be decoded: {'; '.join(causes)} "
                f"(first: {self.skipped[0][0]})"
            )
        self._position = 0

    def __len__(self) -> int:
        return len(self.tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.tensors):
            return None
        tensor = self.tensors[self._position]
        self._position += 1
        return {self.input_name: tensor}

    def rewind(self) -> None:
        self._position = 0


def quantize_static_int8(
    model: DetectionModel,
    images: Iterable[str | os.PathLike] | ImageCalibrationReader,
    out_path: str | os.PathLike,
    method: str = "minmax",
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    exclude_nodes: Sequence[str] = (),
    preprocess: bool = True,
    write_spec: bool = True,
    op_types: Sequence[str] | None = None,
    reduce_range: bool = False,
    extra_options: Mapping[str, Any] | None = None,
) -> StaticQuantization:
    """Calibrated QDQ int8 quantization of ``model``'s ONNX file, written to ``out_path``.

    ``images`` are calibration image paths (or a ready :class:`ImageCalibrationReader`).
    ``exclude_nodes`` stay in float (``nodes_to_exclude``). Returns a :class:`StaticQuantization`
    recording whether ``quant_pre_process`` was used or why it fell back, and the skipped images.
    With ``write_spec`` a sidecar ``<out>.yaml`` is written so the output loads like the original.
    """
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method = _calibration_method(method)
    activations, weights = _quant_type(activation_type), _quant_type(weight_type)
    model_path = _model_path(model)
    source = _load_onnx(model_path)
    out = _check_out_path(model_path, out_path)
    reader = (
        images
        if isinstance(images, ImageCalibrationReader)
        else ImageCalibrationReader(model, images)
    )
    reader.rewind()

    with tempfile.TemporaryDirectory(prefix="visionpipe-quant-") as tmp:
        to_quantize, upgraded = _upgrade_opset(
            source, model_path, Path(tmp), per_channel
        )
        pre_processed, pre_error = False, None
        if preprocess:
            to_quantize, pre_processed, pre_error = _pre_process(
                quant_pre_process, to_quantize, Path(tmp)
            )
        try:
            quantize_static(
                str(to_quantize),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=activations,
                weight_type=weights,
                nodes_to_exclude=list(exclude_nodes) or None,
                op_types_to_quantize=list(op_types) if op_types else None,
                reduce_range=reduce_range,
                extra_options=dict(extra_options) if extra_options else None,
                calibrate_method=calibrate_method,
            )
        except VisionpipeError:
            raise
        except Exception as exc:
            raise OptimizationError(
                f"static quantization of {model_path} failed: {first_line(exc)}"
            ) from exc
    _copy_metadata(source, out)
    spec_path = write_sidecar_spec(model, out) if write_spec else None
    return StaticQuantization(
        path=out,
        method=method,
        calibration_images=len(reader),
        skipped_images=list(reader.skipped),
        pre_processed=pre_processed,
        pre_process_error=pre_error,
        excluded_nodes=list(exclude_nodes),
        spec_path=spec_path,
        opset_upgraded=upgraded,
    )


QDQ_OPSET = 13  # DequantizeLinear's per-channel ``axis`` arrived in opset 13


def _upgrade_opset(
    source, model_path: Path, tmp: Path, per_channel: bool
) -> tuple[Path, tuple[int, int] | None]:
    """Convert a graph below opset 13 to 13 (with onnx's version converter) so QDQ nodes are valid."""
    import onnx
    from onnx import version_converter

    opset = next(
        (o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), None
    )
    if opset is None or opset >= QDQ_OPSET:
        return model_path, None
    try:
        converted = version_converter.convert_version(source, QDQ_OPSET)
        converted.metadata_props.extend(
            p
            for p in source.metadata_props
            if p.key not in {q.key for q in converted.metadata_props}
        )
        target = tmp / "opset13.onnx"
        onnx.save(converted, str(target))
    except Exception as exc:
        if per_channel:
            raise OptimizationError(
                f"{model_path} uses opset {opset}; per-channel QDQ needs opset {QDQ_OPSET} and converting it failed "
                f"({first_line(exc)}): try per_channel=False"
            ) from exc
        return model_path, None
    return target, (opset, QDQ_OPSET)


def _pre_process(run, model_path: Path, tmp: Path) -> tuple[Path, bool, str | None]:
    """``quant_pre_process`` in full, else without symbolic shape inference, else the original graph.

    Returns (graph to quantize, whether a pre-processed graph is used, what failed if anything).
    """
    problems = []
    for label, options in (
        ("full", {}),
        ("without symbolic shape inference", {"skip_symbolic_shape": True}),
    ):
        prepared = tmp / f"preprocessed_{len(problems)}.onnx"
        try:
            run(str(model_path), str(prepared), **options)
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs, or sympy is missing
            problems.append(
                f"quant_pre_process {label} failed: {type(exc).__name__}: {first_line(exc)}"
            )
            continue
        return prepared, True, "; ".join(problems) or None
    return model_path, False, "; ".join(problems) + "; quantized the original graph"


# --------------------------------------------------------------------------------------------
# detection head


def head_nodes(model_path: str | os.PathLike, count: int = 3) -> list[str]:
    """Names of the detection head to keep in float, in topological order.

    The head is the decode tail, every node with no convolution downstream of it (the Sigmoid,
    Exp, Mul, Add, Concat, Reshape, Transpose ... between the last convolutions and the outputs,
    on every pyramid level), plus the last ``count`` Conv nodes in topological order and all that
    depends on them. ``count=0`` gives the decode tail alone. The tail matters most: a Concat of
    raw box offsets with 0..1 scores quantized to one 8-bit scale loses most of the score precision.
    Nodes without a name cannot be excluded by the quantizer and are left out.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    graph = _load_onnx(model_path).graph
    # ONNX requires topological order; sort anyway in case a tool wrote it otherwise
    nodes = _topological(
        list(graph.node),
        {i.name for i in graph.input} | {t.name for t in graph.initializer},
    )
    is_conv = [n.op_type in ("Conv", "ConvTranspose") for n in nodes]
    convs = [i for i, c in enumerate(is_conv) if c]
    if not convs:
        raise OptimizationError(
            f"{model_path} has no Conv nodes: no detection head to keep in float"
        )

    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    feeds_conv = [False] * len(nodes)  # some Conv lies downstream of this node
    for i in reversed(range(len(nodes))):
        feeds_conv[i] = any(
            is_conv[j] or feeds_conv[j]
            for out in nodes[i].output
            for j in consumers.get(out, [])
        )
    head = {i for i in range(len(nodes)) if not is_conv[i] and not feeds_conv[i]}
    chosen = set(convs[-count:]) if count else set()
    head |= chosen
    frontier = [name for i in chosen for name in nodes[i].output]
    while frontier:
        for i in consumers.get(frontier.pop(), []):
            if i not in head:
                head.add(i)
                frontier.extend(nodes[i].output)
    return [nodes[i].name for i in sorted(head) if nodes[i].name]


def stem_nodes(model_path: str | os.PathLike, count: int = 9) -> list[str]:
    """Names of the input end of the network: every node before the ``count+1``-th Conv in
    topological order (so the first ``count`` convolutions with their activations).

    On YOLOX-Nano the accuracy lost to int8 is lost here, not in the head: the first, full-resolution
    layers (BN folded into convs fed raw 0..255 pixels) have per-channel ranges so unequal that one
    8-bit scale per tensor wipes out the small channels. ``count=9`` is YOLOX-Nano's stem and dark2
    (everything at stride <= 4).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    graph = _load_onnx(model_path).graph
    nodes = _topological(
        list(graph.node),
        {i.name for i in graph.input} | {t.name for t in graph.initializer},
    )
    convs = [i for i, n in enumerate(nodes) if n.op_type in ("Conv", "ConvTranspose")]
    if not convs:
        raise OptimizationError(f"{model_path} has no Conv nodes")
    end = convs[count] if count < len(convs) else len(nodes)
    return [n.name for n in nodes[:end] if n.name]


def _topological(nodes: list, available: set[str]) -> list:
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output}
    if all(
        all(not x or x in available or produced_by.get(x, -1) < i for x in n.input)
        for i, n in enumerate(nodes)
    ):
        return nodes
    done: list = []
    ready = set(available)
    remaining = list(nodes)
    while remaining:
        progress = [
            n
            for n in remaining
            if all(not x or x in ready or x not in produced_by for x in n.input)
        ]
        if not progress:
            return nodes  # a cycle or unknown inputs: keep the file's order
        for n in progress:
            done.append(n)
            ready.update(n.output)
        remaining = [n for n in remaining if n not in progress]
    return done


# --------------------------------------------------------------------------------------------
# accuracy-aware


def _evaluate(
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


def _with_file(model: DetectionModel, path: Path) -> DetectionModel:
    """``model`` with its weights swapped for ``path`` (same inputs/outputs, so the same decoder)."""
    from visionpipe.models.onnxruntime_backend import OnnxRuntimeBackend

    backend = model.backend
    try:
        new = OnnxRuntimeBackend(
            path, intra_op_threads=getattr(backend, "intra_op_threads", 0) or 0
        )
    except ModelLoadError as exc:
        raise OptimizationError(
            f"the quantized model {path} does not load: {exc}"
        ) from exc
    if [o.name for o in new.outputs] != [o.name for o in backend.outputs]:
        raise OptimizationError(f"quantization changed the outputs of {path}")
    return dataclasses.replace(model, backend=new)


def quantize_accuracy_aware(
    model: DetectionModel,
    calibration_images: Iterable[str | os.PathLike],
    val_images: Sequence[str | os.PathLike],
    annotations: str | os.PathLike | Mapping[str, Any],
    out_path: str | os.PathLike,
    max_map_drop: float = 0.01,
    conf: float = 0.01,
    head_steps: Sequence[int] = (3, 9),
    stem_steps: Sequence[int] = (9,),
    method: str = "minmax",
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    preprocess: bool = True,
    batch_size: int = 1,
) -> AccuracyAwareResult:
    """Static int8, validated against fp32 on COCO-annotated images, keeping the head in float if needed.

    The first attempt quantizes everything. While the mAP@.5:.95 drop exceeds ``max_map_drop``,
    the next attempt keeps more in float: :func:`head_nodes` with each ``count`` of ``head_steps``
    (a growing set), then the largest head plus :func:`stem_nodes` with each ``count`` of
    ``stem_steps`` (the input end, where YOLOX-Nano actually loses its accuracy). Every calibration
    reuses the same preprocessed images. The first attempt within tolerance wins; if none is, the attempt with the
    best int8 mAP is kept and ``met_tolerance`` is False (nothing is raised). The chosen model is
    written to ``out_path`` with its sidecar spec.
    """
    model_path = _model_path(model)
    out = _check_out_path(model_path, out_path)
    val = [str(p) for p in val_images]
    if not val:
        raise OptimizationError("no validation images were given")
    reader = ImageCalibrationReader(model, calibration_images)
    fp32 = _evaluate(model, val, annotations, conf, batch_size)

    attempts: list[Attempt] = []
    files: list[Path] = []
    first: StaticQuantization | None = None
    # growing exclusion sets: nothing, then the head in steps, then the largest head plus the stem
    exclusions: list[list[str]] = [[]]
    seen: set[tuple[str, ...]] = {()}
    head: list[str] = []
    for count in head_steps:
        head = head_nodes(model_path, count)
        if tuple(head) not in seen:
            seen.add(tuple(head))
            exclusions.append(head)
    for count in stem_steps:
        names = [*stem_nodes(model_path, count), *head]
        names = list(dict.fromkeys(names))
        if tuple(names) not in seen:
            seen.add(tuple(names))
            exclusions.append(names)

    workdir = Path(tempfile.mkdtemp(prefix=".quant-", dir=out.parent))
    try:
        chosen = None
        for k, excluded in enumerate(exclusions):
            candidate = workdir / f"attempt{k}.onnx"
            result = quantize_static_int8(
                model,
                reader,
                candidate,
                method=method,
                per_channel=per_channel,
                activation_type=activation_type,
                weight_type=weight_type,
                exclude_nodes=excluded,
                preprocess=preprocess,
                write_spec=False,
            )
            first = first or result
            evaluation = _evaluate(
                _with_file(model, candidate), val, annotations, conf, batch_size
            )
            attempts.append(
                Attempt(
                    len(excluded),
                    list(excluded),
                    evaluation.map_50_95,
                    evaluation.map_50,
                    candidate.stat().st_size,
                )
            )
            files.append(candidate)
            if fp32.map_50_95 - evaluation.map_50_95 <= max_map_drop:
                chosen = k
                break
        met = chosen is not None
        if chosen is None:  # best mAP, fewer excluded nodes on ties
            chosen = max(
                range(len(attempts)),
                key=lambda i: (attempts[i].map_50_95, -attempts[i].excluded_count),
            )
        shutil.move(str(files[chosen]), str(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    spec_path = write_sidecar_spec(model, out)
    best = attempts[chosen]
    assert first is not None
    return AccuracyAwareResult(
        fp32_map=fp32.map_50_95,
        int8_map=best.map_50_95,
        excluded_nodes=list(best.excluded_nodes),
        attempts=attempts,
        path=out,
        fp32_size_bytes=model_path.stat().st_size,
        int8_size_bytes=out.stat().st_size,
        met_tolerance=met,
        max_map_drop=max_map_drop,
        val_images=len(val),
        pre_processed=first.pre_processed,
        pre_process_error=first.pre_process_error,
        skipped_calibration_images=list(reader.skipped),
        spec_path=spec_path,
    )
