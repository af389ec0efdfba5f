"""Models: runtimes behind one interface, decoders per output family, specs and loading."""

from visionpipe.models.backend import Backend, TensorInfo
from visionpipe.models.decoders import DECODERS, Candidates, DecodeParams, Decoder
from visionpipe.models.loader import DetectionModel, build_model, load_model
from visionpipe.models.onnxruntime_backend import OnnxRuntimeBackend
from visionpipe.models.spec import ModelSpec

__all__ = [
    "DECODERS",
    "Backend",
    "Candidates",
    "DecodeParams",
    "Decoder",
    "DetectionModel",
    "ModelSpec",
    "OnnxRuntimeBackend",
    "TensorInfo",
    "build_model",
    "load_model",
]
