"""Post-training int8 quantization with ONNX Runtime's own tooling (no quantizer of our own).

The flow follows NNCF's YOLO example: quantize, validate fp32 against int8 on real images, and keep
back the parts that measurably lose accuracy (:mod:`visionpipe.optimize.sensitivity`)::

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
* On YOLOX-Nano the accuracy is lost at the input end, not in the head: all 8-bit it scores 0.15
  (min/max ranges) or 0.27 (moving-average ranges) mAP@.5:.95 against 0.365 fp32 on the 64 val2017
  photos; keeping the head back changes nothing; 16-bit activations for the space-to-depth stem and
  dark2.0's two convolutions give 0.36 at the same file size.
* Quantizer scratch files go to temporary folders: given a model path, onnxruntime writes
  ``<name>-inferred.onnx`` beside it, and its symbolic shape inference dumps a debug model into
  the working directory when it gives up.
* The quantized model works through :class:`~visionpipe.pipeline.Pipeline` with no extra flags:
  a sidecar spec ``<out>.yaml`` holding the source model's resolved configuration (family, classes,
  input size, preprocessing, thresholds, decoder options of its own spec) is written beside it, and
  the source's ONNX ``metadata_props`` (e.g. Ultralytics ``names``/``imgsz``/``task``) are copied
  into the quantized file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import (
    ImageDecodeError,
    InputShapeError,
    OptimizationError,
    VisionpipeError,
    first_line,
)
from visionpipe.evaluation import CocoEvaluation, image_ids_of, load_annotations, split_images
from visionpipe.io.images import decode_image
from visionpipe.models.loader import DetectionModel
from visionpipe.models.spec import model_spec_dict, write_sidecar_spec
from visionpipe.optimize.graph import (
    check_out_path,
    copy_metadata,
    evaluate_model,
    load_onnx,
    onnx_path_of,
    save_onnx,
    staged_file,
    topological,
    with_weights,
)
from visionpipe.optimize.margin import DEFAULT_RESAMPLES, ResampledScores, margin_for
from visionpipe.optimize.sensitivity import SegmentDrop
from visionpipe.preprocess import preprocess as preprocess_image

try:  # the base class ORT's calibrators expect; imported lazily where it matters
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - onnxruntime is a core dependency
    _ReaderBase = object  # type: ignore[assignment,misc]

METHODS = ("minmax", "entropy", "percentile")
# The calibrations the accuracy-aware loop compares by default (minmax also with moving averages).
# Not entropy: quantize_static builds ONNX Runtime's entropy calibrator with 128 histogram bins
# and 128 quantized bins, and with as many bins as quantized bins the KL search has one candidate,
# the full range, so "entropy" is min/max again (identical files on YOLOX-Nano and NanoDet-m);
# a real 2048-bin search runs in ONNX Runtime's Python loop, 10^8 steps for YOLOX-Nano.
DEFAULT_LOOP_METHODS = ("minmax", "percentile")
# images whose activations a histogram calibrator holds before folding them into its histograms
HISTOGRAM_BATCH = 8
QUANT_TYPES = ("uint8", "int8")

# The helpers' former private names, kept while code elsewhere moves to visionpipe.optimize.graph.
_load_onnx, _save_onnx, _staged, _check_out_path = load_onnx, save_onnx, staged_file, check_out_path
_model_path, _copy_metadata, _topological = onnx_path_of, copy_metadata, topological
_evaluate, _with_file = evaluate_model, with_weights
spec_dict = model_spec_dict  # moved to visionpipe.models.spec


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
    pre_process_error: str | None = None  # what failed on the way (None: full pre-processing worked)
    excluded_nodes: list[str] = field(default_factory=list)
    spec_path: Path | None = None
    opset_upgraded: tuple[int, int] | None = None  # (from, to) when the graph was converted for QDQ

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
    reason: str = ""
    path: Path | None = None  # the written model for the chosen attempt, None for the discarded ones
    moving_average: bool = False  # activation ranges calibrated as moving averages of min/max
    method: str = "minmax"  # calibration method
    # standard error of the drop on the choosing part (bootstrap over its images; None: not measured)
    spread: float | None = None
    margin: float = 0.0  # what the drop had to leave free of max_map_drop

    def upper_drop(self, fp32_map: float) -> float:
        """The drop plus its margin: what the drop on as many unseen photos stays under (~95 %)."""
        return fp32_map - self.map_50_95 + self.margin


@dataclass
class AccuracyAwareResult:
    fp32_map: float  # mAP@.5:.95 of the float model on the validation images
    int8_map: float  # of the chosen attempt
    excluded_nodes: list[str]  # of the chosen attempt (kept in float or at 16 bits, see kept_as)
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
    # measured segments, most sensitive first: (label, node count, mAP drop when only it is int8)
    sensitivity: list[tuple[str, int, float]] = field(default_factory=list)
    kept_as: str = "float"  # how excluded_nodes were kept: "float", or "int16" activations
    # The validation images are split: fp32_map/int8_map and every attempt are on the choosing
    # part; the chosen model is then scored once on the confirming part, which no choice saw.
    margin: float = 0.0  # the chosen attempt's margin: it had to be within max_map_drop - margin
    confirm_images: int = 0
    confirm_fp32_map: float | None = None
    confirm_int8_map: float | None = None
    calibration: str = "minmax"  # the calibration of the chosen attempt
    spread: float | None = None  # standard error of the chosen drop on the choosing part
    confirm_spread: float | None = None  # and on the confirming part
    choose_image_names: list[str] = field(default_factory=list)  # file names, to show the split
    confirm_image_names: list[str] = field(default_factory=list)

    @property
    def map_drop(self) -> float:
        return self.fp32_map - self.int8_map

    @property
    def confirm_map_drop(self) -> float | None:
        if self.confirm_fp32_map is None or self.confirm_int8_map is None:
            return None
        return self.confirm_fp32_map - self.confirm_int8_map

    @property
    def confirmed(self) -> bool | None:
        """Whether the drop on the confirming part is within ``max_map_drop`` (None: no such part)."""
        drop = self.confirm_map_drop
        return None if drop is None else drop <= self.max_map_drop

    @property
    def size_ratio(self) -> float:
        return self.int8_size_bytes / self.fp32_size_bytes if self.fp32_size_bytes else float("nan")

    def summary(self) -> str:
        verdict = "within" if self.met_tolerance else "NOT within"
        spread = "" if self.spread is None else f" ± {self.spread:.4f}"
        text = (
            f"choosing part ({self.val_images} images): fp32 mAP {self.fp32_map:.4f}, int8 mAP {self.int8_map:.4f} "
            f"(drop {self.map_drop:+.4f}{spread}, {verdict} tolerance {self.max_map_drop} less margin "
            f"{self.margin:.4f}); "
            f"{len(self.excluded_nodes)} nodes kept {'in float' if self.kept_as == 'float' else 'with 16-bit activations'}"
            f", {self.calibration} calibration; {self.int8_size_bytes} / {self.fp32_size_bytes} bytes "
            f"({self.size_ratio:.2f}x)"
        )
        drop = self.confirm_map_drop
        if drop is not None:
            held = "holds" if self.confirmed else "does NOT hold"
            spread = "" if self.confirm_spread is None else f" ± {self.confirm_spread:.4f}"
            text += (
                f"; confirming part ({self.confirm_images} unseen images): fp32 {self.confirm_fp32_map:.4f}, "
                f"int8 {self.confirm_int8_map:.4f} (drop {drop:+.4f}{spread}: {held} within {self.max_map_drop})"
            )
        return text


# --------------------------------------------------------------------------------------------
# helpers


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    if name not in QUANT_TYPES:
        raise ValueError(f"quantization type must be one of {QUANT_TYPES}, got {name!r}")
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


# --------------------------------------------------------------------------------------------
# dynamic


def quantize_dynamic_int8(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    per_channel: bool = False,
    exclude_nodes: Sequence[str] = (),
) -> Path:
    """Weights-only int8 quantization (activations quantized on the fly); no calibration data needed.

    Check the result before trusting it: on YOLOX-Nano it scores 0.00 mAP@.5:.95 (onnxruntime's
    own ``quantize_dynamic`` alike) unless the first three convolutions stay in float
    (``exclude_nodes``), and ConvInteger runs slower than float Conv on x86 CPUs.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_path = Path(model_path)
    source = load_onnx(model_path)
    out = check_out_path(model_path, out_path)
    try:
        quantize_dynamic(
            source,  # a ModelProto: given a path, onnxruntime writes a scratch file beside the source
            str(out),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes) or None,
        )
    except Exception as exc:
        raise OptimizationError(f"dynamic quantization of {model_path} failed: {first_line(exc)}") from exc
    compact_names(out, _graph_names(model_path))
    copy_metadata(source, out)
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

    def __init__(self, model: DetectionModel, images: Iterable[str | os.PathLike]) -> None:
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
    calibration_cache: str | os.PathLike | None = None,
    compact: bool = True,
    moving_average: bool = False,
    int16_activation_nodes: Sequence[str] = (),
    int16_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> StaticQuantization:
    """Calibrated QDQ int8 quantization of ``model``'s ONNX file, written to ``out_path``.

    ``images`` are calibration image paths (or a ready :class:`ImageCalibrationReader`).
    ``exclude_nodes`` stay in float (``nodes_to_exclude``). Returns a :class:`StaticQuantization`
    recording whether ``quant_pre_process`` was used or why it fell back, and the skipped images.
    With ``write_spec`` a sidecar ``<out>.yaml`` is written so the output loads like the original.
    ``calibration_cache`` (a JSON file, onnxruntime >= 1.24) holds the calibrated ranges: written
    on the first call, reused by later calls quantizing the same graph with other exclusions.
    ``compact`` gives the quantizer's generated tensors short names (see :func:`compact_names`).
    ``moving_average`` (MinMax only) takes activation ranges as a moving average of each
    calibration image's min/max rather than the extremes over all images: a few outlier pixels
    then no longer stretch the 8-bit grid (YOLOX-Nano: 0.15 -> 0.24 mAP fully int8), but it
    clips more, which cost NanoDet-m 0.02 mAP. :func:`quantize_accuracy_aware` tries both.
    ``int16_activation_nodes`` get 16-bit activations (their input and output tensors) while their
    weights stay int8 ("A16W8" mixed precision): they compute in float between 16-bit Q/DQ pairs,
    so they run no faster than float, but the file keeps int8 weights. On YOLOX-Nano, 16-bit
    activations for the first three convolutions recover 0.36 of its 0.365 mAP at 0.33x the size.
    ``int16_ranges`` (tensor name -> (min, max), e.g. from :func:`minmax_ranges`) gives those
    16-bit tensors their own ranges rather than ``method``'s: 65536 steps need no clipping, and
    the moving-average or percentile ranges that help 8 bits only clip at 16.
    """
    if moving_average and method != "minmax":
        raise ValueError("moving_average applies to the minmax calibration method only")
    if moving_average:
        extra_options = {**(extra_options or {}), "CalibMovingAverage": True}
    if method in ("entropy", "percentile") and "CalibMaxIntermediateOutputs" not in (extra_options or {}):
        # histogram calibrators keep every image's activations until told to fold them in batches
        extra_options = {**(extra_options or {}), "CalibMaxIntermediateOutputs": HISTOGRAM_BATCH}
    if (
        method == "percentile"
        and activation_type == "uint8"
        and "CalibTensorRangeSymmetric" not in (extra_options or {})
    ):
        # ONNX Runtime's percentile calibrator clips symmetrically around 0 unless told otherwise,
        # which leaves half of a uint8 grid to negative values that SiLU/ReLU outputs barely have
        # (YOLOX-Nano all 8-bit on the choosing half: 0.30 symmetric, 0.36 asymmetric mAP@.5:.95)
        extra_options = {**(extra_options or {}), "CalibTensorRangeSymmetric": False}
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method = _calibration_method(method)
    activations, weights = _quant_type(activation_type), _quant_type(weight_type)
    model_path = onnx_path_of(model)
    source = load_onnx(model_path)
    out = check_out_path(model_path, out_path)
    reader = images if isinstance(images, ImageCalibrationReader) else ImageCalibrationReader(model, images)
    reader.rewind()

    with tempfile.TemporaryDirectory(prefix="visionpipe-quant-") as tmp:
        to_quantize, upgraded = _upgrade_opset(source, model_path, Path(tmp), per_channel)
        pre_processed, pre_error = False, None
        if preprocess:
            to_quantize, pre_processed, pre_error = _pre_process(quant_pre_process, to_quantize, Path(tmp))
        if to_quantize == model_path:  # onnxruntime writes scratch files beside the file it is given
            to_quantize = Path(tmp) / model_path.name
            shutil.copyfile(model_path, to_quantize)
        cache_option = _calibration_cache_option(calibration_cache)
        if int16_activation_nodes:
            extra_options = {
                **(extra_options or {}),
                **_int16_activation_options(to_quantize, int16_activation_nodes, extra_options, int16_ranges),
            }
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
                **cache_option,
            )
        except VisionpipeError:
            raise
        except Exception as exc:
            raise OptimizationError(f"static quantization of {model_path} failed: {first_line(exc)}") from exc
        if compact:
            compact_names(out, _graph_names(to_quantize))
    copy_metadata(source, out)
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


def minmax_ranges(model: DetectionModel, reader: ImageCalibrationReader) -> dict[str, tuple[float, float]]:
    """Every activation's (min, max) over the calibration images, by ONNX Runtime's MinMax
    calibrator on ``model``'s ONNX file (give it the graph that will be quantized)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="visionpipe-ranges-") as tmp:
        calibrator = create_calibrator(
            onnx_path_of(model),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
        )
        reader.rewind()
        calibrator.collect_data(reader)
        tensors = calibrator.compute_data()
    reader.rewind()
    return {
        name: (float(np.min(t.range_value[0])), float(np.max(t.range_value[1]))) for name, t in tensors.data.items()
    }


def _int16_activation_options(
    model_path: Path,
    nodes: Sequence[str],
    extra_options: Mapping[str, Any] | None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """quantize_static options giving the activations of ``nodes`` 16-bit quantization."""
    import onnx
    from onnxruntime.quantization import QuantType

    graph = onnx.load(str(model_path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    wanted = set(nodes)
    missing = wanted - {node.name for node in graph.node}
    if missing:
        raise OptimizationError(f"no nodes named {sorted(missing)[:3]} in {model_path.name}")
    overrides = dict((extra_options or {}).get("TensorQuantOverrides", {}))
    for node in graph.node:
        if node.name in wanted:
            for tensor in (*node.input, *node.output):
                if tensor and tensor not in constants:
                    override: dict[str, Any] = {"quant_type": QuantType.QUInt16}
                    if ranges and tensor in ranges:
                        low, high = ranges[tensor]
                        # rmin/rmax must bracket zero, as the quantizer's own ranges do
                        override.update(rmin=np.float32(min(low, 0.0)), rmax=np.float32(max(high, 0.0)))
                    overrides[tensor] = [override]
    # 16-bit QuantizeLinear/DequantizeLinear below opset 21 come from onnxruntime's own domain
    return {"TensorQuantOverrides": overrides, "UseQDQContribOps": True}


def _calibration_cache_option(path: str | os.PathLike | None) -> dict[str, Any]:
    import inspect

    from onnxruntime.quantization import quantize_static

    if path is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}  # older onnxruntime: every call calibrates again (slower, same result)
    return {"calibration_cache_path": str(path)}


def _graph_names(model_path: str | os.PathLike) -> set[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer}
    names |= {x for node in graph.node for x in (*node.input, *node.output)}
    return names | {node.name for node in graph.node}


def compact_names(path: str | os.PathLike, original_names: set[str]) -> int:
    """Give the tensors and Q/DQ nodes the quantizer added short names; returns bytes saved.

    onnxruntime names each of them after the tensor it quantizes plus a suffix
    (``/backbone/dark2/dark2.1/conv1/conv/Conv_output_0_DequantizeLinear_Output``), and on a small
    network those names weigh as much as a third of its int8 weights (0.40 MB of YOLOX-Nano's
    1.54 MB). Names of the original graph, its inputs, outputs and nodes are left as they were, so
    excluded-node lists and debugging still refer to the model the user knows.
    """
    import onnx

    path = Path(path)
    before = path.stat().st_size
    model = onnx.load(str(path))
    graph = model.graph
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in original_names:
            return name
        if name not in renamed:
            renamed[name] = f"q{len(renamed)}"
        return renamed[name]

    for number, node in enumerate(graph.node):
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
        if node.name and node.name not in original_names:
            node.name = f"qdq{number}"
    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for info in graph.value_info:
        info.name = short(info.name)
    onnx.save(model, str(path))
    return before - path.stat().st_size


QDQ_OPSET = 13  # DequantizeLinear's per-channel ``axis`` arrived in opset 13


def _upgrade_opset(source, model_path: Path, tmp: Path, per_channel: bool) -> tuple[Path, tuple[int, int] | None]:
    """Convert a graph below opset 13 to 13 (with onnx's version converter) so QDQ nodes are valid."""
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= QDQ_OPSET:
        return model_path, None
    try:
        converted = version_converter.convert_version(source, QDQ_OPSET)
        converted.metadata_props.extend(
            p for p in source.metadata_props if p.key not in {q.key for q in converted.metadata_props}
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


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


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
            # symbolic shape inference saves a debug model into the working directory when it
            # gives up (sym_shape_infer_temp.onnx + 12 MB of data): keep that out of the user's
            with _working_directory(tmp):
                run(str(Path(model_path).resolve()), str(Path(prepared).resolve()), **options)
        except Exception as exc:
            problems.append(f"quant_pre_process {label} failed: {type(exc).__name__}: {first_line(exc)}")
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
    graph = load_onnx(model_path).graph
    # ONNX requires topological order; sort anyway in case a tool wrote it otherwise
    nodes = topological(
        list(graph.node),
        {i.name for i in graph.input} | {t.name for t in graph.initializer},
    )
    is_conv = [n.op_type in ("Conv", "ConvTranspose") for n in nodes]
    convs = [i for i, c in enumerate(is_conv) if c]
    if not convs:
        raise OptimizationError(f"{model_path} has no Conv nodes: no detection head to keep in float")

    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    feeds_conv = [False] * len(nodes)  # some Conv lies downstream of this node
    for i in reversed(range(len(nodes))):
        feeds_conv[i] = any(is_conv[j] or feeds_conv[j] for out in nodes[i].output for j in consumers.get(out, []))
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


# --------------------------------------------------------------------------------------------
# accuracy-aware


def _prepare(model_path: Path, workdir: Path, per_channel: bool, preprocess: bool):
    """The graph every attempt quantizes (opset upgraded, pre-processed once), so node names agree."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, upgraded = _upgrade_opset(load_onnx(model_path), model_path, workdir, per_channel)
    pre_processed, pre_error = False, None
    if preprocess:
        prepared, pre_processed, pre_error = _pre_process(quant_pre_process, prepared, workdir)
    if prepared == model_path:  # give the attempts a path of their own
        prepared = workdir / "prepared.onnx"
        shutil.copyfile(model_path, prepared)
    return prepared, pre_processed, pre_error, upgraded


def quantize_accuracy_aware(
    model: DetectionModel,
    calibration_images: Iterable[str | os.PathLike],
    val_images: Sequence[str | os.PathLike],
    annotations: str | os.PathLike | Mapping[str, Any],
    out_path: str | os.PathLike,
    max_map_drop: float = 0.01,
    conf: float = 0.01,
    head_count: int = 3,
    method: str | None = None,
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    preprocess: bool = True,
    batch_size: int = 8,
    initial_segments: int = 8,
    max_measurements: int = 24,
    max_attempts: int = 16,
    moving_average: bool | None = None,
    max_size_ratio: float | None = None,
    sensitive_as: str = "int16",
    progress: Callable[[str], None] | None = None,
    methods: Sequence[str] | None = None,
    confirm: bool = True,
    margin: float | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> AccuracyAwareResult:
    """Static int8, validated against fp32 on COCO-annotated images, keeping sensitive parts back.

    Attempts, each quantized from the same prepared graph and calibration, stop at the first whose
    mAP@.5:.95 drop is within ``max_map_drop``:

    0. with ``confirm`` (default) the validation images are split in two by a seeded shuffle
       (``seed``): every decision below is taken on the *choosing* part, and the chosen model is
       then scored once on the *confirming* part, which no decision saw (``confirm_map_drop``,
       ``confirmed``). An attempt must be within the tolerance less a margin. A drop measured on
       a few dozen photos moves by a hundredth between photo sets, and by less the closer the two
       models are, so by default (``margin=None``) each attempt's margin is measured:
       :func:`~visionpipe.optimize.margin.margin_for` the bootstrap standard error of its drop
       (``resamples`` resamples of the choosing images, seeded), about 2.3 standard errors, so
       that the drop on as many unseen photos is within tolerance with ~95 % confidence. A number
       gives every attempt that constant margin instead;
    1. everything int8, calibrated with each of ``methods`` (default: min/max and percentile;
       ``method`` alone restricts it to one) and, with ``moving_average=None``, with
       moving-average min/max ranges too; the best calibration is kept for every attempt that
       follows;
    2. the detection head in float (:func:`head_nodes` with ``head_count`` convolutions);
    3. the parts that measure sensitive, kept as ``sensitive_as`` says. Sensitivity is measured
       (:func:`~visionpipe.optimize.sensitivity.bisect_sensitivity`) by quantizing one segment of
       the network at a time: segments losing more than half the tolerance are halved until the
       culprits are single convolutions or the ``max_measurements`` budget is spent. Each measured
       segment (halved ones included: losses do not add up exactly) is then added in turn, most
       sensitive first, and stays only if the mAP improved (measurements on a few dozen images
       are noisy, and adding a segment sometimes scores lower). Step 2 is a probe the later
       steps do not build on; the head is kept back there only if it measures sensitive.
    4. with ``sensitive_as="int16"``, if nothing met the tolerance: every activation at 16 bits
       (int8 weights), the int8 file closest to the float model, whatever the attempt budget.

    With ``max_size_ratio`` an attempt must also keep the file within that fraction of the fp32
    size: a segment whose float weights break the budget is put back to int8 and the next one is
    tried. If no attempt is within tolerance, the one whose drop plus margin is smallest (within the
    size budget when one is) is kept and ``met_tolerance`` is False (nothing is raised): the file
    most likely to hold on unseen photos, not the luckiest score on the choosing part. The chosen model is written to ``out_path`` with its sidecar spec.
    Give validation images apart from the calibration images: the choice is tuned on them.
    """
    from visionpipe.optimize.sensitivity import bisect_sensitivity, conv_units

    if sensitive_as not in ("int16", "float"):
        raise ValueError(f"sensitive_as must be 'int16' or 'float', got {sensitive_as!r}")
    say = progress or (lambda message: None)
    model_path = onnx_path_of(model)
    out = check_out_path(model_path, out_path)
    fp32_size = model_path.stat().st_size
    every_val = [str(p) for p in val_images]
    if not every_val:
        raise OptimizationError("no validation images were given")
    confirm_val: list[str] = []
    if confirm:
        if len(every_val) < 2:
            raise OptimizationError("choosing and confirming need at least two validation images (or confirm=False)")
        choose_rows, confirm_rows = split_images(len(every_val), seed)
        val, confirm_val = [every_val[i] for i in choose_rows], [every_val[i] for i in confirm_rows]
    else:
        val = every_val
    measure_margin = margin is None
    fixed_margin = 0.0 if margin is None else float(margin)
    ground_truth = load_annotations(annotations if isinstance(annotations, Mapping) else Path(annotations))
    if methods is None:
        methods = (method,) if method is not None else DEFAULT_LOOP_METHODS
    for name in methods:
        _calibration_method(name)  # a bad name fails before any work
    reader = ImageCalibrationReader(model, calibration_images)
    fp32 = evaluate_model(model, val, ground_truth, conf, batch_size)
    say(f"fp32 mAP@.5:.95 {fp32.map_50_95:.4f} on {len(val)} images (the choosing part)")
    reference = (
        ResampledScores(fp32.detections, ground_truth, image_ids_of(val, ground_truth), resamples, seed)
        if measure_margin
        else None
    )

    attempts: list[Attempt] = []
    sensitivity: list[SegmentDrop] = []
    workdir = Path(tempfile.mkdtemp(prefix=".quant-", dir=out.parent))
    try:
        prepared, pre_processed, pre_error, _ = _prepare(model_path, workdir, per_channel, preprocess)
        prepared_model = with_weights(model, prepared)
        counter = itertools.count()
        calibrations: list[tuple[str, bool]] = []
        for name in methods:
            averages = ([False, True] if moving_average is None else [moving_average]) if name == "minmax" else [False]
            calibrations += [(name, average) for average in averages]
        calibration: dict[str, Any] = {"method": calibrations[0][0], "moving_average": calibrations[0][1]}

        full_ranges: dict[str, tuple[float, float]] = {}

        def int16_ranges() -> dict[str, tuple[float, float]]:
            """min/max ranges for 16-bit activations, calibrated once when first needed."""
            if not full_ranges:
                full_ranges.update(minmax_ranges(prepared_model, reader))
            return full_ranges

        def quantized_map(excluded: Sequence[str], target: Path) -> CocoEvaluation:
            quantize_static_int8(
                prepared_model,
                reader,
                target,
                method=calibration["method"],
                per_channel=per_channel,
                activation_type=activation_type,
                weight_type=weight_type,
                exclude_nodes=excluded if sensitive_as == "float" else (),
                int16_activation_nodes=excluded if sensitive_as == "int16" else (),
                int16_ranges=int16_ranges() if sensitive_as == "int16" and excluded else None,
                preprocess=False,
                write_spec=False,
                calibration_cache=workdir / f"calibration-{calibration['method']}-{calibration['moving_average']}.json",
                moving_average=calibration["moving_average"],
            )
            return evaluate_model(with_weights(model, target), val, ground_truth, conf, batch_size)

        def attempt(excluded: Sequence[str], reason: str) -> bool:
            candidate = workdir / f"attempt{len(attempts)}.onnx"
            evaluation = quantized_map(excluded, candidate)
            map_50_95, map_50 = evaluation.map_50_95, evaluation.map_50
            spread = reference.drop_spread(evaluation.detections) if reference is not None else None
            attempts.append(
                Attempt(
                    len(excluded),
                    list(excluded),
                    map_50_95,
                    map_50,
                    candidate.stat().st_size,
                    reason,
                    candidate,
                    calibration["moving_average"],
                    calibration["method"],
                    spread,
                    fixed_margin if spread is None else margin_for(spread),
                )
            )
            size_ratio = candidate.stat().st_size / fp32_size
            noise = "" if spread is None else f" ± {spread:.4f}"
            say(
                f"attempt {len(attempts)} ({reason}): int8 mAP@.5:.95 {map_50_95:.4f}, drop "
                f"{fp32.map_50_95 - map_50_95:+.4f}{noise} (+ margin {attempts[-1].margin:.4f}), {size_ratio:.2f}x size"
            )
            return attempts[-1].upper_drop(fp32.map_50_95) <= max_map_drop and within_size(attempts[-1])

        def within_size(candidate: Attempt) -> bool:
            return max_size_ratio is None or candidate.size_bytes <= max_size_ratio * fp32_size

        kept = "in float" if sensitive_as == "float" else "with 16-bit activations"

        def step(nodes: list[str], reason: str, first: bool = False, last: bool = False) -> bool:
            """One set of kept nodes: the first step tries every calibration (until one is within
            tolerance) and the best of them is kept; later steps use that one. The first and the
            last resort are made whatever the attempt budget."""
            start = len(attempts)
            for name, average in calibrations if first else [(calibration["method"], calibration["moving_average"])]:
                if len(attempts) >= max_attempts and not (first or last):
                    break
                calibration.update(method=name, moving_average=average)
                if attempt(nodes, f"{reason}, {_calibration_label(name, average)}"):
                    return True
            tried = attempts[start:]
            if tried and first:  # later steps and the sensitivity measurements use the best calibration
                better = max(tried, key=lambda a: a.map_50_95)
                calibration.update(method=better.method, moving_average=better.moving_average)
            return False

        head = head_nodes(prepared, head_count)
        met = step([], "everything int8", first=True)
        plain_best = max(a.map_50_95 for a in attempts)
        met = met or step(head, f"detection head {kept} (last {head_count} convolutions and the decode tail)")
        excluded: list[str] = []  # what later steps build on: measured segments that helped
        best_so_far = plain_best
        if not met and len(attempts) < max_attempts:
            named = [n for unit in conv_units(prepared) for n in unit]

            def drop_when_only(nodes: list[str]) -> float:
                keep = set(nodes)
                scratch = workdir / f"segment{next(counter)}.onnx"
                map_50_95 = quantized_map([n for n in named if n not in keep], scratch).map_50_95
                scratch.unlink(missing_ok=True)
                return fp32.map_50_95 - map_50_95

            measured: list[SegmentDrop] = []

            def report(segment, drop: float) -> None:
                measured.append(SegmentDrop(segment, drop))
                say(f"only {segment.label} int8: mAP drop {drop:+.4f}")

            # a segment matters when it alone costs a quarter of the tolerance (a measured margin is
            # not known before the attempt, so half the tolerance stands in for it)
            threshold = max((max_map_drop - (max_map_drop / 2 if measure_margin else fixed_margin)) / 2, 0.002)
            sensitivity = bisect_sensitivity(
                conv_units(prepared),
                drop_when_only,
                threshold=threshold,
                initial_segments=initial_segments,
                max_measurements=max_measurements,
                on_measure=report,
            )
            # every measured segment, halved or not, most sensitive first: losses do not add up
            # exactly, so a parent can matter more than its most sensitive half
            candidates = [(m.segment.label, m) for m in sorted(measured, key=lambda m: -m.map_drop) if m.map_drop > 0]
            while candidates and not met and len(attempts) < max_attempts:
                label, leaf = candidates.pop(0)
                if set(leaf.nodes) <= set(excluded):
                    continue
                tried = len(attempts)
                met = step([*excluded, *leaf.nodes], f"also {label} {kept}")
                if len(attempts) == tried:
                    break
                best = max(attempts[tried:], key=lambda a: a.map_50_95)
                if within_size(best) and best.map_50_95 > best_so_far:
                    excluded, best_so_far = best.excluded_nodes, best.map_50_95
                elif not within_size(best) and len(leaf.segment.units) > 1:
                    # over the size budget: measure the segment's halves, the loss may sit in one
                    halves = [SegmentDrop(half, drop_when_only(half.nodes)) for half in leaf.segment.halves()]
                    for half in halves:
                        report(half.segment, half.map_drop)
                    candidates = sorted(
                        [*candidates, *((h.segment.label, h) for h in halves)], key=lambda c: -c[1].map_drop
                    )
                # else: no better than without it, so the segment goes back to 8 bits
        if not met and sensitive_as == "int16":
            every_node = [node.name for node in load_onnx(prepared).graph.node if node.name]
            met = step(every_node, "every activation 16-bit (int8 weights)", last=True)
        if met:
            chosen = len(attempts) - 1
        else:  # the smallest drop plus margin within the size budget, fewer excluded nodes on ties
            allowed = [i for i in range(len(attempts)) if within_size(attempts[i])] or range(len(attempts))
            chosen = min(allowed, key=lambda i: (attempts[i].upper_drop(fp32.map_50_95), attempts[i].excluded_count))
        shutil.move(str(attempts[chosen].path), str(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for a in attempts:
        a.path = out if a is attempts[chosen] else None
    copy_metadata(load_onnx(model_path), out)
    spec_path = write_sidecar_spec(model, out)
    best = attempts[chosen]
    confirm_fp32 = confirm_int8 = confirm_spread = None
    if confirm_val:
        fp32_confirming = evaluate_model(model, confirm_val, ground_truth, conf, batch_size)
        int8_confirming = evaluate_model(with_weights(model, out), confirm_val, ground_truth, conf, batch_size)
        confirm_fp32, confirm_int8 = fp32_confirming.map_50_95, int8_confirming.map_50_95
        if measure_margin:
            confirm_ids = image_ids_of(confirm_val, ground_truth)
            confirm_reference = ResampledScores(fp32_confirming.detections, ground_truth, confirm_ids, resamples, seed)
            confirm_spread = confirm_reference.drop_spread(int8_confirming.detections)
        say(
            f"confirming part ({len(confirm_val)} unseen images): fp32 {confirm_fp32:.4f}, int8 {confirm_int8:.4f}, "
            f"drop {confirm_fp32 - confirm_int8:+.4f}"
        )
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
        pre_processed=pre_processed,
        pre_process_error=pre_error,
        skipped_calibration_images=list(reader.skipped),
        spec_path=spec_path,
        sensitivity=[(leaf.segment.label, len(leaf.nodes), leaf.map_drop) for leaf in sensitivity],
        kept_as=sensitive_as,
        margin=best.margin,
        confirm_images=len(confirm_val),
        confirm_fp32_map=confirm_fp32,
        confirm_int8_map=confirm_int8,
        calibration=_calibration_label(best.method, best.moving_average),
        spread=best.spread,
        confirm_spread=confirm_spread,
        choose_image_names=[Path(p).name for p in val],
        confirm_image_names=[Path(p).name for p in confirm_val],
    )


def _calibration_label(method: str, moving_average: bool) -> str:
    if method == "minmax":
        return "moving-average ranges" if moving_average else "min/max ranges"
    return f"{method} ranges"
