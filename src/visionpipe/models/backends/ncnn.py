"""NCNN backend: a ``.param`` + ``.bin`` pair, as :func:`~visionpipe.optimize.ncnn_export.to_ncnn` (pnnx) writes.

Needs ``pip install 'visionpipe[ncnn]'``. The weights are the ``.bin`` beside the ``.param``
(``m.ncnn.param`` -> ``m.ncnn.bin``). NCNN runs one image at a time, so the model's batch is fixed
at 1 and the :class:`~visionpipe.models.backend.Backend` feeds a batch image by image.

* Arithmetic is pinned to fp32 (fp16 and bf16 storage, packing and arithmetic off): NCNN turns fp16
  on by default where the CPU has it (ARM), which scores differently from the ONNX Runtime run of
  the same model. fp16 weights in a ``.bin`` are widened on load.
* The input size is read from the ``Input`` layer's shape hints (``to_ncnn`` records them) or,
  failing that, from the spec's ``input_size``. Output shapes are learnt by running zeros once at
  load. NCNN drops the batch axis, so each output gets it back (``(3549, 85)`` -> ``(1, 3549, 85)``).
* pnnx names outputs ``out0``, ``out1``, ... in the source graph's order, which NCNN's own listing
  does not keep; outputs are put back in that order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError, first_line
from visionpipe.models.backend import Backend, TensorInfo


class NcnnBackend(Backend):
    """An NCNN network behind the :class:`Backend` interface (CPU)."""

    runtime = "ncnn"
    takes_input_size = True

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        intra_op_threads: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        if device != "cpu":
            raise BackendUnavailableError(f"visionpipe's NCNN runtime runs on 'cpu', not {device!r}")
        weights = self.path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelLoadError(f"{self.path.name}: its weights {weights.name} are not beside it")
        threads = int(intra_op_threads) or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        self.net = open_net(self.path, weights, threads)
        self.device = "cpu"
        self.metadata: dict[str, str] = {}

        declared = _declared_input(self.path)
        if declared is None:
            raise ModelLoadError(f"{self.path.name} has no Input layer")
        self.input_name, hinted = declared
        channels, height_width = 3, input_size
        if hinted is not None:
            channels, height_width = hinted[0], (hinted[1], hinted[2])
            if input_size is not None and tuple(input_size) != height_width:
                raise ModelLoadError(
                    f"{self.path.name} takes {height_width[0]}x{height_width[1]} images, the spec asks for "
                    f"{input_size[0]}x{input_size[1]}"
                )
        if height_width is None:
            raise ModelLoadError(
                f"{self.path.name} does not record its input size (its Input layer has no shape); "
                "give input_size in the spec"
            )
        height, width = int(height_width[0]), int(height_width[1])
        self.output_names = ordered_output_names(self.net)
        try:
            probe = self.forward(np.zeros((1, channels, height, width), np.float32))
        except Exception as exc:  # NCNN reports shape mismatches as a failed extract
            raise ModelLoadError(
                f"{self.path.name} does not run on a (1, {channels}, {height}, {width}) input: {first_line(exc)}"
            ) from exc
        self.inputs = [TensorInfo(self.input_name, (1, channels, height, width), np.dtype(np.float32))]
        self.outputs = [TensorInfo(n, tuple(o.shape), o.dtype) for n, o in zip(self.output_names, probe)]

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        if tensor.shape[0] != 1:
            raise ModelLoadError(f"NCNN runs one image at a time, got a batch of {tensor.shape[0]}")
        return run_net(self.net, tensor, self.input_name, self.output_names)

    def __repr__(self) -> str:
        return f"NcnnBackend({self.path.name}, device=cpu)"


def open_net(param: Path, weights: Path, threads: int):
    """An ``ncnn.Net`` with fp32 arithmetic and ``threads`` threads, ``param`` and ``weights`` loaded."""
    try:
        import ncnn
    except ImportError as exc:
        raise MissingExtraError("ncnn", "ncnn", "the NCNN runtime") from exc
    net = ncnn.Net()
    options = net.opt
    for name in (
        "use_fp16_storage",
        "use_fp16_packed",
        "use_fp16_arithmetic",
        "use_bf16_storage",
        "use_bf16_packed",
        "use_vulkan_compute",
    ):
        if hasattr(options, name):
            setattr(options, name, False)
    options.num_threads = max(1, int(threads))
    # NCNN prints its own reason to stderr and returns non-zero; the unknown layer types say why
    if net.load_param(str(param)) != 0:
        unknown = _unknown_layers(param)
        raise ModelLoadError(
            f"cannot load {param} with NCNN"
            + (f": layers NCNN does not have: {', '.join(unknown)}" if unknown else ": not a valid NCNN .param file")
        )
    if net.load_model(str(weights)) != 0:
        raise ModelLoadError(f"cannot load {weights} with NCNN: the weights do not match {param.name}")
    return net


def ordered_output_names(net) -> list[str]:
    """The network's outputs in the source graph's order (pnnx's ``out<i>``), else as NCNN lists them."""
    names = list(net.output_names())
    numbered = [re.fullmatch(r"out(\d+)", n) for n in names]
    if names and all(numbered):
        return sorted(names, key=lambda n: int(n[3:]))
    return names


def run_net(net, tensor: np.ndarray, input_name: str, output_names: list[str]) -> list[np.ndarray]:
    """Outputs for one (1, C, H, W) image, each with the batch axis NCNN drops put back."""
    import ncnn

    image = np.ascontiguousarray(tensor[0], dtype=np.float32)  # stays alive while NCNN reads it
    with net.create_extractor() as extractor:  # one per call: extractors are not shared between threads
        if extractor.input(input_name, ncnn.Mat(image)) != 0:
            raise ModelLoadError(f"NCNN has no input blob {input_name!r}")
        outputs = []
        for name in output_names:
            status, mat = extractor.extract(name)
            if status != 0:
                raise ModelLoadError(f"NCNN could not compute output {name!r} (status {status})")
            outputs.append(np.array(mat, dtype=np.float32)[None])  # a copy: the extractor owns mat
    return outputs


def _declared_input(param: Path) -> tuple[str, tuple[int, int, int] | None] | None:
    """The Input layer's blob name and, when recorded, its (channels, height, width)."""
    for line in param.read_text(encoding="utf-8", errors="replace").splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 5 and parts[0] == "Input":
            values = dict(p.split("=", 1) for p in parts[5:] if "=" in p)
            try:
                width, height, channels = (int(values[k]) for k in ("0", "1", "2"))
            except (KeyError, ValueError):
                return parts[4], None
            return parts[4], (channels, height, width) if min(width, height, channels) > 0 else None
    return None


def _unknown_layers(param: Path) -> list[str]:
    import ncnn

    try:
        lines = param.read_text(encoding="utf-8", errors="replace").splitlines()[2:]
    except OSError:
        return []
    types = sorted({line.split()[0] for line in lines if line.split()})
    return [t for t in types if "." in t or not _is_ncnn_layer(ncnn, t)]


def _is_ncnn_layer(ncnn, layer_type: str) -> bool:
    try:
        return ncnn.layer_to_index(layer_type) >= 0
    except Exception:  # older bindings without layer_to_index: trust the name
        return True


__all__ = ["NcnnBackend", "open_net", "ordered_output_names", "run_net"]
