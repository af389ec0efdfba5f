"""One loaded model version split into the stages a server schedules separately.

``prepare`` (decode + preprocess) runs in the request's thread, ``infer`` runs a dynamic batch in a
batcher lane, ``finish`` (decode outputs + NMS + mapping back) runs in the request's thread again
with that request's thresholds. Each stage is the :class:`~visionpipe.pipeline.Pipeline`'s own
code, so the server's detections are the pipeline's.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionpipe.detections import Detections
from visionpipe.io.images import DecodeLimits, ImageInput, decode_image
from visionpipe.models.decoders import DecodeParams
from visionpipe.models.loader import class_ids_for
from visionpipe.pipeline import Pipeline, _by_shape
from visionpipe.preprocess import BoxTransform, preprocess


@dataclass
class Prepared:
    """A decoded, preprocessed image waiting for inference."""

    tensor: np.ndarray
    transform: BoxTransform
    image_hw: tuple[int, int]


class ModelRunner:
    """A single-model :class:`Pipeline` exposed stage by stage, plus its identity in the repository."""

    def __init__(self, pipeline: Pipeline, name: str, version: str, limits: DecodeLimits) -> None:
        if pipeline.is_ensemble:
            raise ValueError("the server runs one model per version; serve ensemble members as separate models")
        self.pipeline = pipeline
        self.name = name
        self.version = version
        self.limits = limits
        self.model = pipeline.model
        self.executions = 0  # backend runs (a batch is one execution)
        self.inferences = 0  # images inferred
        self._count_lock = threading.Lock()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    def params(
        self,
        conf: float | None = None,
        iou: float | None = None,
        classes: list[int | str] | None = None,
        max_det: int | None = None,
    ) -> DecodeParams:
        """The model's thresholds with a request's overrides (same names as everywhere: conf, iou, ...)."""
        overrides: dict[str, Any] = {"conf": conf, "iou": iou, "max_det": max_det}
        if classes is not None:
            overrides["classes"] = class_ids_for(classes, self.class_names)
        return dataclasses.replace(self.pipeline.params, **{k: v for k, v in overrides.items() if v is not None})

    def decode(self, source: ImageInput) -> np.ndarray:
        return decode_image(source, self.limits)

    def prepare(self, image: np.ndarray) -> Prepared:
        tensor, transform = preprocess(image, self.model.input_hw, self.model.preprocess)
        return Prepared(tensor, transform, (int(image.shape[0]), int(image.shape[1])))

    def infer(self, tensors: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Per-image raw outputs (each with a batch axis of 1) for a list of preprocessed tensors."""
        backend = self.model.backend
        outputs: list[list[np.ndarray]] = [[] for _ in tensors]
        executions = 0
        if backend.fixed_batch == 1:
            groups = [[i] for i in range(len(tensors))]
        else:
            groups = _by_shape(tensors)  # "fit" resizing gives different sizes
        for group in groups:
            stacked = backend.run(np.stack([tensors[i] for i in group]))
            executions += 1
            for row, i in enumerate(group):
                outputs[i] = [o[row : row + 1] for o in stacked]
        with self._count_lock:
            self.executions += executions
            self.inferences += len(tensors)
        return outputs

    def finish(self, outputs: list[np.ndarray], transform: BoxTransform, params: DecodeParams) -> Detections:
        candidates = self.model.decoder.decode(outputs, params)[0]
        return self.pipeline.postprocess(candidates, transform, params=params)

    def detect(self, source: ImageInput, params: DecodeParams | None = None) -> Detections:
        """All stages for one image in this thread (warm-up and checks)."""
        prepared = self.prepare(self.decode(source))
        (outputs,) = self.infer([prepared.tensor])
        return self.finish(outputs, prepared.transform, params or self.pipeline.params)

    def warm_up(self, runs: int = 3, batch_size: int = 1) -> float:
        """Run a synthetic image through every stage (first runs allocate); returns seconds per run.

        Raises whatever the model raises, so a broken version is refused before it takes traffic.
        """
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (*self.model.input_hw, 3), dtype=np.uint8)
        prepared = self.prepare(image)
        start = time.perf_counter()
        for _ in range(max(1, runs)):
            for outputs in self.infer([prepared.tensor] * batch_size):
                self.finish(outputs, prepared.transform, self.pipeline.params)
        with self._count_lock:  # warm-up is not traffic
            self.executions = self.inferences = 0
        return (time.perf_counter() - start) / max(1, runs)

    def close(self) -> None:
        self.pipeline.close()
