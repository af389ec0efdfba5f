"""The small interface every inference runtime implements: tensors in, tensors out.

A backend knows nothing about boxes. It reports its input/output tensors and metadata, and runs a
batch of any size: when the model's batch dimension is fixed, :meth:`Backend.run` splits the batch
into runs of that size (padding the last one) and joins the outputs, so callers never care.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from visionpipe.errors import InputShapeError

Dim = int | str | None  # a fixed size, or a symbolic/unknown (dynamic) one


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def fixed_shape(self) -> tuple[int | None, ...]:
        return tuple(d if isinstance(d, int) and d > 0 else None for d in self.shape)


class Backend(ABC):
    """A loaded model in some runtime, with one image input of layout (batch, 3, height, width).

    Each runtime is one module in :mod:`visionpipe.models.backends`, registered there by name and
    file suffix; ``metadata`` holds what the file embeds (e.g. Ultralytics ``names``/``imgsz``).
    """

    runtime: ClassVar[str] = ""
    # whether the constructor takes ``input_size``: runtimes whose files do not record their input
    # size (TorchScript, NCNN) need it; the others read it from the file
    takes_input_size: ClassVar[bool] = False
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        intra_op_threads: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> Backend:
        """Open a model file; ``input_size`` is a hint for runtimes whose files do not record it."""
        if cls.takes_input_size:
            return cls(path, device=device, intra_op_threads=intra_op_threads, input_size=input_size)  # type: ignore[call-arg]
        return cls(path, device=device, intra_op_threads=intra_op_threads)  # type: ignore[call-arg]

    @abstractmethod
    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model once on a tensor whose batch size the model accepts as is."""

    @property
    def image_input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model is fixed at, or None when the batch dimension is dynamic."""
        return self.image_input.fixed_shape[0]

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        shape = self.image_input.fixed_shape
        return (shape[2], shape[3]) if len(shape) == 4 else (None, None)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for a (B, C, H, W) batch, each with a leading batch axis of size B."""
        self._check(batch)
        fixed = self.fixed_batch
        if fixed is None or len(batch) == fixed:
            return [self._with_batch_axis(o, info, len(batch)) for o, info in zip(self.forward(batch), self.outputs)]
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(batch), fixed):
            chunk = batch[start : start + fixed]
            real = len(chunk)
            if real < fixed:
                padding = np.zeros((fixed - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outs = [self._with_batch_axis(o, info, fixed) for o, info in zip(self.forward(chunk), self.outputs)]
            chunks.append([o[:real] for o in outs])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    @staticmethod
    def _with_batch_axis(output: np.ndarray, info: TensorInfo, batch: int) -> np.ndarray:
        # Some exports drop the batch axis of batch-1 outputs (e.g. NanoDet's [1600, 80]).
        declared = info.fixed_shape
        if batch == 1 and (output.ndim == 0 or (declared and declared[0] not in (1, None))):
            return output[None]
        return output

    def _check(self, batch: np.ndarray) -> None:
        expected = self.image_input.fixed_shape
        if batch.ndim != len(expected):
            raise InputShapeError(
                f"input '{self.image_input.name}' expects rank {len(expected)} {self.image_input.shape}, "
                f"got shape {batch.shape}"
            )
        for axis, (want, got) in enumerate(zip(expected[1:], batch.shape[1:]), start=1):
            if want is not None and want != got:
                raise InputShapeError(
                    f"input '{self.image_input.name}' expects {self.image_input.shape}, "
                    f"got shape {batch.shape} (axis {axis})"
                )
