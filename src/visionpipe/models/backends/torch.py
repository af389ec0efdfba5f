"""TorchScript backend: models saved with ``torch.jit.save`` (``.torchscript``, ``.pt``), e.g. an
Ultralytics TorchScript export. Needs ``pip install 'visionpipe[torch]'``.

A TorchScript file does not record its input shape, so the input size comes from the spec
(``input_size``) or from the ``config.txt`` that Ultralytics embeds (``imgsz``, ``names``, ``task``,
read as the ONNX metadata would be). At load the model runs once on zeros to learn its output
shapes, and once more at batch 2 to learn whether its batch is dynamic (a graph traced at batch 1
usually is not; the :class:`Backend` then feeds it one image at a time).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError, first_line
from visionpipe.models.backend import Backend, Dim, TensorInfo

_EMBEDDED_CONFIG = "config.txt"  # Ultralytics' name for the metadata it embeds in TorchScript files


class TorchScriptBackend(Backend):
    """A ``torch.jit.ScriptModule`` behind the :class:`Backend` interface.

    ``intra_op_threads`` > 0 sets PyTorch's intra-op thread count, which is one setting for the
    whole process.
    """

    runtime = "torch"
    takes_input_size = True

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        intra_op_threads: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingExtraError("torch", "torch", "the TorchScript runtime") from exc

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        if device not in ("cpu", "cuda"):
            raise BackendUnavailableError(f"the torch runtime runs on 'cpu' or 'cuda', not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("device 'cuda' asked for, but this PyTorch sees no CUDA device")
        self._torch = torch
        self.device = torch.device(device)
        if intra_op_threads:
            torch.set_num_threads(int(intra_op_threads))
        extra = {_EMBEDDED_CONFIG: ""}
        try:
            with warnings.catch_warnings():  # PyTorch 2.10+ calls TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra)
        except Exception as exc:  # RuntimeError for non-TorchScript files, pickle errors, ...
            cause = first_line(exc).split(". ")[0]  # PyTorch appends paragraphs of guesses
            raise ModelLoadError(
                f"cannot load {self.path} as TorchScript (a torch.jit.save file; a plain checkpoint holds "
                f"weights without the network): {cause}"
            ) from exc
        self.module.eval()
        self.metadata = _metadata(extra[_EMBEDDED_CONFIG])

        height_width = input_size or _embedded_size(self.metadata)
        if height_width is None:
            raise ModelLoadError(
                f"{self.path.name}: a TorchScript file does not record its input size; give input_size in the spec"
            )
        height, width = int(height_width[0]), int(height_width[1])
        self._lock = threading.Lock()  # only for the probes below; inference itself is thread-safe
        try:
            one = self._run(np.zeros((1, 3, height, width), np.float32))
        except Exception as exc:
            raise ModelLoadError(
                f"{self.path.name} does not run on a (1, 3, {height}, {width}) input: {first_line(exc)}"
            ) from exc
        try:
            two = self._run(np.zeros((2, 3, height, width), np.float32))
            dynamic = [o.shape[1:] for o in two] == [o.shape[1:] for o in one] and all(
                len(o) == 2 for o in two if o.ndim
            )
        except Exception:  # traced at batch 1, e.g. a Reshape to (1, ...)
            dynamic = False
        batch: Dim = None if dynamic else 1
        self.inputs = [TensorInfo("images", (batch, 3, height, width), np.dtype(np.float32))]
        self.outputs = [
            TensorInfo(f"output{i}", ((None, *o.shape[1:]) if dynamic and o.ndim else tuple(o.shape)), o.dtype)
            for i, o in enumerate(one)
        ]

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self._run(tensor)

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(tensor, dtype=np.float32)).to(self.device))
        return [o.detach().cpu().numpy() for o in _flatten(outputs)]

    def __repr__(self) -> str:
        return f"TorchScriptBackend({self.path.name}, device={self.device})"


def _flatten(outputs) -> list:
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in _flatten(item)]
    if isinstance(outputs, dict):
        return [t for item in outputs.values() for t in _flatten(item)]
    return [outputs]


def _metadata(text: str | bytes) -> dict[str, str]:
    """Embedded JSON config as the string map the loader reads from ONNX metadata."""
    if not text:
        return {}
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(config, dict):
        return {}
    if isinstance(config.get("names"), dict):  # JSON keys are strings: "10" would sort before "2"
        config["names"] = {int(k) if str(k).isdigit() else k: v for k, v in config["names"].items()}
    return {str(k): v if isinstance(v, str) else repr(v) for k, v in config.items()}


def _embedded_size(metadata: dict[str, str]) -> tuple[int, int] | None:
    import ast

    try:
        imgsz = ast.literal_eval(metadata.get("imgsz", "None"))
    except (ValueError, SyntaxError):
        return None
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
        return (int(imgsz[0]), int(imgsz[1]))
    return None
