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
    "DecodeParams",
    "DetectionModel",
    "Detections",
    "DetectionsError",
    "EnsembleError",
    "EvaluationError",
    "FixedBatchError",
    "FusionError",
    "ImageDecodeError",
    "InputShapeError",
    "LayoutMismatch",
    "MissingExtraError",
    "ModelLoadError",
    "ModelSpec",
    "OptimizationError",
    "Pipeline",
    "PreprocessConfig",
    "Result",
    "SourceError",
    "SpecError",
    "StageTimes",
    "TrackingError",
    "UnknownOutputLayoutError",
    "VideoSourceError",
    "VisionpipeError",
    "ZoneError",
    "__version__",
    "annotate",
    "evaluate_coco",
    "load_model",
    "preprocess",
]


def __getattr__(name: str):
    # evaluation pulls in the optional pycocotools lazily; keep `import visionpipe` light
    if name == "evaluate_coco":
        from visionpipe.evaluation import evaluate_coco

        return evaluate_coco
    if name == "annotate":  # OpenCV drawing; imported on first use
        from visionpipe.io.annotate import annotate

        return annotate
    raise AttributeError(name)
