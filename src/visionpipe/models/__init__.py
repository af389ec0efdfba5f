"""Models: runtimes behind one interface, decoders per output family, specs and loading."""

from visionpipe.models.backend import Backend, TensorInfo
from visionpipe.models.backends import RUNTIMES, open_backend, register_runtime
from visionpipe.models.backends.onnxruntime import OnnxRuntimeBackend
from visionpipe.models.decoders import DECODERS, Candidates, DecodeParams, Decoder, FamilyPreset, register_decoder
from visionpipe.models.loader import DetectionModel, build_model, load_model
from visionpipe.models.spec import ModelSpec

__all__ = [
    "DECODERS",
    "RUNTIMES",
    "Backend",
    "Candidates",
    "DecodeParams",
    "Decoder",
    "DetectionModel",
    "FamilyPreset",
    "ModelSpec",
    "OnnxRuntimeBackend",
    "TensorInfo",
    "build_model",
    "load_model",
    "open_backend",
    "register_decoder",
    "register_runtime",
]
