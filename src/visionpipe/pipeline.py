"""Pipeline: decode -> preprocess -> batched inference -> decode outputs -> NMS -> Detections.

Decoding, preprocessing and post-processing run in a bounded thread pool (OpenCV, NumPy and ONNX
Runtime release the GIL), overlapped with inference, so the model is not kept waiting. Results come
back in input order; an input that fails carries its error instead of detections and never stops
the others.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.detections import Detections
from visionpipe.io.images import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageInput,
    decode_image,
    describe_source,
)
from visionpipe.models.decoders import Candidates, DecodeParams
from visionpipe.models.loader import DetectionModel, class_ids_for, load_model
from visionpipe.models.spec import ModelSpec
from visionpipe.postprocess.nms import nms
from visionpipe.preprocess import BoxTransform, preprocess


@dataclass
class StageTimes:
    """Seconds spent on one image per stage; ``infer`` is its share of its batch's run."""

    decode: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.infer + self.postprocess


@dataclass
class Result:
    """What the pipeline made of one input: detections, or the error that stopped it."""

    index: int
    image_id: str
    source: str
    image_size: tuple[int, int] | None = None  # (height, width) of the original image
    detections: Detections | None = None
    times: StageTimes = field(default_factory=StageTimes)
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Prepared:
    result: Result
    tensor: np.ndarray | None = None
    transform: BoxTransform | None = None


class Pipeline:
    """A detector ready to run on images.

    Build it from a :class:`DetectionModel`, a spec file or dict, or a model file::

        pipe = Pipeline("yolox.yaml", conf=0.3)
        detections = pipe("photo.jpg")
        for result in pipe.stream(paths, batch_size=8):
            ...

    Threshold arguments left as None keep the model's defaults.
    """

    def __init__(
        self,
        model: DetectionModel | ModelSpec | dict[str, Any] | str | Path,
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: list[int | str] | None = None,
        multi_label: bool | None = None,
        agnostic: bool | None = None,
        top_k: int | None = None,
        max_det: int | None = None,
        batch_size: int = 1,
        workers: int | None = None,
        concurrency: int | None = None,
        device: str = "cpu",
        family: str | None = None,
        intra_op_threads: int | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        cores = os.cpu_count() or 1
        # Small detectors scale poorly across ONNX Runtime's intra-op threads; two runs side by
        # side, each with half the cores, keep a CPU busier (benchmarks/pipeline_throughput.py).
        concurrency = concurrency or (min(2, cores) if device == "cpu" else 1)
        if intra_op_threads is None:
            intra_op_threads = max(1, cores // concurrency) if device == "cpu" else 0
        if not isinstance(model, DetectionModel):
            model = load_model(model, family=family, device=device, intra_op_threads=intra_op_threads)
        self.model = model
        overrides = {
            "score_threshold": conf,
            "iou_threshold": iou,
            "multi_label": multi_label,
            "agnostic": agnostic,
            "top_k": top_k,
            "max_det": max_det,
            "classes": None if classes is None else class_ids_for(classes, model.class_names),
        }
        self.params: DecodeParams = replace(model.params, **{k: v for k, v in overrides.items() if v is not None})
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.concurrency = concurrency
        self.limits = limits
        self._pool: ThreadPoolExecutor | None = None
        self._inference_pool: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for pool in (self._inference_pool, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._inference_pool = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """Threads for decoding, preprocessing and post-processing."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="visionpipe-io")
        return self._pool

    @property
    def inference_pool(self) -> ThreadPoolExecutor:
        """``concurrency`` threads, each running one batch through the backend at a time."""
        if self._inference_pool is None:
            self._inference_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="visionpipe-infer")
        return self._inference_pool

    # -- entry points -------------------------------------------------------------------------

    def __call__(self, image: ImageInput) -> Detections:
        """Detections for one image; raises the input's error if it fails."""
        result = next(self.stream([image], batch_size=1))
        if result.error is not None:
            raise result.error
        assert result.detections is not None
        return result.detections

    def run(self, images: Iterable[ImageInput], batch_size: int | None = None) -> list[Result]:
        """Results for many images (paths, encoded bytes or BGR arrays), in input order."""
        return list(self.stream(images, batch_size=batch_size))

    def stream(self, images: Iterable[ImageInput], batch_size: int | None = None) -> Iterator[Result]:
        """Yield results in input order as they finish, reading ``images`` lazily.

        At most a few batches are decoded ahead of inference and at most ``concurrency + 1``
        batches are in inference, so memory stays bounded however long the input is.
        """
        if batch_size is None:
            batch_size = self.batch_size
        elif batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        window = 2 * batch_size + self.workers
        inputs = enumerate(images)
        prepared: deque[Future[_Prepared]] = deque()
        running: deque[Future[list[Future[Result]]]] = deque()

        def refill() -> None:
            while len(prepared) < window:
                item = next(inputs, None)
                if item is None:
                    return
                prepared.append(self.pool.submit(self._prepare, *item))

        refill()
        while prepared or running:
            while prepared and len(running) <= self.concurrency:
                batch = [prepared.popleft().result() for _ in range(min(batch_size, len(prepared)))]
                refill()
                running.append(self.inference_pool.submit(self._infer, batch))
            for finished in running.popleft().result():
                yield finished.result()

    # -- stages -------------------------------------------------------------------------------

    def _prepare(self, index: int, source: ImageInput) -> _Prepared:
        name = describe_source(source)
        image_id = Path(name).name if isinstance(source, (str, os.PathLike)) else str(index)
        result = Result(index=index, image_id=image_id, source=name)
        try:
            start = time.perf_counter()
            image = decode_image(source, self.limits)
            decoded = time.perf_counter()
            tensor, transform = preprocess(image, self.model.input_hw, self.model.preprocess)
            result.image_size = (image.shape[0], image.shape[1])
            result.times.decode = decoded - start
            result.times.preprocess = time.perf_counter() - decoded
            return _Prepared(result, tensor, transform)
        except Exception as exc:  # one bad input must never stop the rest
            result.error = exc
            return _Prepared(result)

    def _infer(self, batch: list[_Prepared]) -> list[Future[Result]]:
        """Run inference on the good inputs of a batch; hand each image's decoding to the pool."""
        good = [p for p in batch if p.result.error is None]
        per_image = self._run_backend(good)
        futures = []
        for item in batch:
            if item.result.error is not None:
                futures.append(_done(item.result))
                continue
            outputs = per_image.pop(0)
            if isinstance(outputs, Exception):
                item.result.error = outputs
                futures.append(_done(item.result))
            else:
                futures.append(self.pool.submit(self._finish, item, outputs))
        return futures

    def _run_backend(self, good: list[_Prepared]) -> list[list[np.ndarray] | Exception]:
        """Per-image outputs (each keeping a batch axis of 1), or the error of that image's run."""
        if not good:
            return []
        backend = self.model.backend
        start = time.perf_counter()
        try:
            if backend.fixed_batch == 1 or len(good) == 1:
                outputs = [backend.run(p.tensor[None]) for p in good]  # type: ignore[index]
            else:
                stacked = backend.run(np.stack([p.tensor for p in good]))  # type: ignore[misc]
                outputs = [[o[i : i + 1] for o in stacked] for i in range(len(good))]
        except Exception:
            # A batch failed as a whole: run images alone so only the guilty one fails.
            return [self._single(p) for p in good]
        share = (time.perf_counter() - start) / len(good)
        for p in good:
            p.result.times.infer = share
        return outputs  # type: ignore[return-value]

    def _single(self, item: _Prepared) -> list[np.ndarray] | Exception:
        start = time.perf_counter()
        try:
            outputs = self.model.backend.run(item.tensor[None])  # type: ignore[index]
        except Exception as exc:
            return exc
        item.result.times.infer = time.perf_counter() - start
        return outputs

    def _finish(self, item: _Prepared, outputs: list[np.ndarray]) -> Result:
        result = item.result
        start = time.perf_counter()
        try:
            candidates = self.model.decoder.decode(outputs, self.params)[0]
            result.detections = self.postprocess(candidates, item.transform)  # type: ignore[arg-type]
        except Exception as exc:
            result.error = exc
        result.times.postprocess = time.perf_counter() - start
        return result

    def postprocess(self, candidates: Candidates, transform: BoxTransform) -> Detections:
        """Map candidates to the original image, clip, and suppress duplicates."""
        boxes = transform.to_original(candidates.xyxy.astype(np.float32, copy=False))
        params = self.params
        if self.model.decoder.applies_nms:
            keep = nms(
                boxes,
                candidates.scores,
                params.iou_threshold,
                class_ids=None if params.agnostic else candidates.class_ids,
                top_k=params.top_k,
                max_det=params.max_det,
            )
        else:
            keep = np.argsort(-candidates.scores, kind="stable")[: params.max_det]
        data = {key: values[keep] for key, values in candidates.data.items()}
        if "polygon" in data:
            data["polygon"] = transform.points_to_original(data["polygon"])
        return Detections(
            xyxy=boxes[keep],
            confidence=candidates.scores[keep],
            class_id=candidates.class_ids[keep],
            data=data,
            class_names=self.model.class_names,
        )


def _done(result: Result) -> Future[Result]:
    future: Future[Result] = Future()
    future.set_result(result)
    return future


__all__ = ["Pipeline", "Result", "StageTimes"]
