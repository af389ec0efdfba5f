"""visionpipe: run object detectors in production — fast on a CPU, honest about accuracy."""

from visionpipe.detections import Detections
from visionpipe.errors import (
    BackendUnavailableError,
    DetectionsError,
    EvaluationError,
    ImageDecodeError,
    InputShapeError,
    MissingExtraError,
    ModelLoadError,
    SpecError,
    UnknownOutputLayoutError,
    VisionpipeError,
)
from visionpipe.models import DecodeParams, DetectionModel, ModelSpec, load_model
from visionpipe.pipeline import Pipeline, Result, StageTimes
from visionpipe.preprocess import BoxTransform, PreprocessConfig, preprocess

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "BoxTransform",
    "DecodeParams",
    "DetectionModel",
    "Detections",
    "DetectionsError",
    "EvaluationError",
    "ImageDecodeError",
    "InputShapeError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelSpec",
    "Pipeline",
    "PreprocessConfig",
    "Result",
    "SpecError",
    "StageTimes",
    "UnknownOutputLayoutError",
    "VisionpipeError",
    "__version__",
    "evaluate_coco",
    "load_model",
    "preprocess",
]


def __getattr__(name: str):
    # evaluation pulls in the optional pycocotools lazily; keep `import visionpipe` light
    if name == "evaluate_coco":
        from visionpipe.evaluation import evaluate_coco

        return evaluate_coco
    raise AttributeError(name)
