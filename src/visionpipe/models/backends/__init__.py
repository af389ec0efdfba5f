"""Runtimes, one module each behind :class:`~visionpipe.models.backend.Backend`, chosen by data.

A model file's suffix picks its runtime (``.onnx`` ONNX Runtime, ``.xml`` OpenVINO IR, ``.torchscript``
/ ``.pt`` TorchScript, ``.param`` NCNN); a spec's ``runtime:`` field (or ``load_model(..., runtime=...)``) overrides
it, e.g. an ONNX file run by OpenVINO. The loader asks this registry and never names a runtime, so
adding one is one new module plus a :func:`register_runtime` call::

    from visionpipe.models.backends import register_runtime
    register_runtime("mnn", "my_pkg.mnn_backend:MnnBackend", suffixes=(".mnn",), extra="mnn")

A runtime's module is imported when a model first needs it, so its optional package is too.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError
from visionpipe.models.backend import Backend


@dataclass(frozen=True)
class Runtime:
    """A registered runtime: where its backend class lives and which files it opens by default."""

    name: str
    backend: str | type[Backend]  # a class, or "module:Class" imported on first use
    suffixes: tuple[str, ...] = ()
    extra: str | None = None  # the visionpipe extra that installs its package
    package: str | None = None  # the package it imports, named when it is missing
    device: str | None = None  # the device this runtime name implies (``tensorrt``)
    summary: str = ""

    def backend_class(self) -> type[Backend]:
        if not isinstance(self.backend, str):
            return self.backend
        module_name, _, class_name = self.backend.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if self.extra and self.package and exc.name and exc.name.split(".")[0] == self.package:
                raise MissingExtraError(self.package, self.extra, f"the {self.name} runtime") from exc
            raise
        return getattr(module, class_name)


RUNTIMES: dict[str, Runtime] = {}
DEFAULT_RUNTIME = "onnxruntime"


def register_runtime(
    name: str,
    backend: str | type[Backend],
    *,
    suffixes: tuple[str, ...] = (),
    extra: str | None = None,
    package: str | None = None,
    device: str | None = None,
    summary: str = "",
) -> Runtime:
    """Make a runtime available by name (and by file suffix); a later registration replaces one.

    Example::

        register_runtime("mnn", "my_pkg.mnn_backend:MnnBackend", suffixes=(".mnn",), extra="mnn")
    """
    runtime = Runtime(name, backend, tuple(s.lower() for s in suffixes), extra, package, device, summary)
    RUNTIMES[name] = runtime
    return runtime


register_runtime(
    "onnxruntime",
    "visionpipe.models.backends.onnxruntime:OnnxRuntimeBackend",
    suffixes=(".onnx", ".ort"),
    summary="ONNX Runtime: CPU by default, device cuda or tensorrt with onnxruntime-gpu",
)
register_runtime(
    "tensorrt",
    "visionpipe.models.backends.onnxruntime:OnnxRuntimeBackend",
    device="tensorrt",
    summary="an ONNX file through ONNX Runtime's TensorRT provider (NVIDIA GPU, visionpipe[gpu,tensorrt])",
)
register_runtime(
    "openvino",
    "visionpipe.models.backends.openvino:OpenVinoBackend",
    suffixes=(".xml",),
    extra="openvino",
    package="openvino",
    summary="OpenVINO: its IR (.xml + .bin, as `visionpipe optimize` writes) or an ONNX file",
)
register_runtime(
    "torch",
    "visionpipe.models.backends.torch:TorchScriptBackend",
    suffixes=(".torchscript", ".pt", ".pth", ".jit"),
    extra="torch",
    package="torch",
    summary="PyTorch: TorchScript files (torch.jit.save), e.g. an Ultralytics TorchScript export",
)
register_runtime(
    "ncnn",
    "visionpipe.models.backends.ncnn:NcnnBackend",
    suffixes=(".param",),
    extra="ncnn",
    package="ncnn",
    summary="NCNN: a .param + .bin pair (as `to_ncnn` writes with pnnx), CPU, one image at a time",
)

# files a runtime name is often confused with, and what to do instead
_NOT_LOADABLE = {
    ".engine": "a serialized TensorRT engine is tied to the GPU and TensorRT version that built it; "
    "load its ONNX source with runtime 'tensorrt' (ONNX Runtime's TensorRT provider builds and caches it)",
    ".plan": "a serialized TensorRT engine is tied to the GPU and TensorRT version that built it; "
    "load its ONNX source with runtime 'tensorrt'",
}


def runtime_for(path: str | os.PathLike, runtime: str | None = None) -> Runtime:
    """The runtime named, or the one registered for the file's suffix."""
    if runtime is not None:
        key = runtime.lower().strip()
        if key not in RUNTIMES:
            raise BackendUnavailableError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(RUNTIMES))}")
        return RUNTIMES[key]
    suffix = Path(path).suffix.lower()
    if suffix in _NOT_LOADABLE:
        raise ModelLoadError(f"cannot load {path}: {_NOT_LOADABLE[suffix]}")
    for candidate in RUNTIMES.values():
        if suffix in candidate.suffixes:
            return candidate
    # any other file goes to the default runtime, as before runtimes were chosen by suffix; its
    # error then says what it made of the file
    return RUNTIMES[DEFAULT_RUNTIME]


def open_backend(
    path: str | os.PathLike,
    runtime: str | None = None,
    *,
    device: str = "cpu",
    intra_op_threads: int = 0,
    input_size: tuple[int, int] | None = None,
) -> Backend:
    """Load ``path`` in its runtime (by name or by suffix) behind the :class:`Backend` interface.

    ``input_size`` (height, width) helps runtimes whose files do not record their input shape
    (TorchScript); the others ignore it.
    """
    chosen = runtime_for(path, runtime)
    if chosen.device is not None:
        if device not in ("cpu", chosen.device):
            raise BackendUnavailableError(f"runtime {chosen.name!r} runs on {chosen.device}, not {device!r}")
        device = chosen.device
    if not Path(path).is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return chosen.backend_class().load(path, device=device, intra_op_threads=intra_op_threads, input_size=input_size)


__all__ = ["RUNTIMES", "Runtime", "open_backend", "register_runtime", "runtime_for"]
