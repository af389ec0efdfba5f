"""visionpipe: run object detectors in production — fast on a CPU, honest about accuracy."""

from visionpipe._version import __version__
from visionpipe.detections import Detections
from visionpipe.errors import (
    BackendUnavailableError,
    BenchmarkError,
    DetectionsError,
    EnsembleError,
    EvaluationError,
    FixedBatchError,
    FusionError,
    ImageDecodeError,
    InputShapeError,
    LayoutMismatch,
    MissingExtraError,
    ModelLoadError,
    OptimizationError,
    SourceError,
    SpecError,
    TrackingError,
    UnknownOutputLayoutError,
    VideoSourceError,
    VisionpipeError,
    ZoneError,
)
from visionpipe.models import DecodeParams, DetectionModel, ModelSpec, load_model
from visionpipe.pipeline import Pipeline
from visionpipe.preprocess import BoxTransform, PreprocessConfig, preprocess
from visionpipe.results import Result, StageTimes

__all__ = [
    "BackendUnavailableError",
    "BenchmarkError",
    "BoxTransform",
    "ByteTracker",
    "CallbackSink",
    "DecodeParams",
    "DetectReport",
    "DetectionModel",
    "Detections",
    "DetectionsError",
    "EnsembleError",
    "EvaluationError",
    "FixedBatchError",
    "FrameResult",
    "FusionConfig",
    "FusionError",
    "FusionMethod",
    "ImageDecodeError",
    "InputShapeError",
    "JsonlSink",
    "LayoutMismatch",
    "LineCounter",
    "MissingExtraError",
    "ModelLoadError",
    "ModelSpec",
    "OptimizationError",
    "OutputFormat",
    "Pipeline",
    "PolygonZone",
    "PreprocessConfig",
    "Result",
    "Sink",
    "SourceError",
    "SpecError",
    "StageTimes",
    "TrackingError",
    "UnknownOutputLayoutError",
    "VideoFileSink",
    "VideoProcessor",
    "VideoSource",
    "VideoSourceError",
    "VisionpipeError",
    "ZoneError",
    "__version__",
    "annotate",
    "detect_to_folder",
    "evaluate_coco",
    "fuse",
    "fuse_members",
    "load_model",
    "nms",
    "open_source",
    "optimize_model",
    "preprocess",
    "register_decoder",
    "register_runtime",
]


# Imported on first use (video pulls in its sources and tracker, fusion its kernels, optimize ONNX
# tooling), so ``import visionpipe`` stays light: name -> the module that defines it.
_LAZY = {
    "evaluate_coco": "visionpipe.evaluation",
    "annotate": "visionpipe.io.annotate",
    "Sink": "visionpipe.io.sinks",
    "VideoProcessor": "visionpipe.video.processor",
    "FrameResult": "visionpipe.video.processor",
    "open_source": "visionpipe.video.sources",
    "VideoSource": "visionpipe.video.sources",
    "ByteTracker": "visionpipe.video.tracking",
    "LineCounter": "visionpipe.video.zones",
    "PolygonZone": "visionpipe.video.zones",
    "JsonlSink": "visionpipe.video.sinks",
    "VideoFileSink": "visionpipe.video.sinks",
    "CallbackSink": "visionpipe.video.sinks",
    "fuse": "visionpipe.postprocess.fusion",
    "FusionMethod": "visionpipe.postprocess.fusion",
    "FusionConfig": "visionpipe.postprocess.ensemble",
    "fuse_members": "visionpipe.postprocess.ensemble",
    "nms": "visionpipe.postprocess.nms",
    "register_decoder": "visionpipe.models.decoders",
    "register_runtime": "visionpipe.models.backends",
    "optimize_model": "visionpipe.optimize.workflow",
    "detect_to_folder": "visionpipe.detect_run",
    "DetectReport": "visionpipe.detect_run",
    "OutputFormat": "visionpipe.io.dataset_formats",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'visionpipe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
