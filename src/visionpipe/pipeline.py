"""Pipeline: decode -> preprocess -> batched inference -> decode outputs -> NMS -> (fuse) -> Detections.

Decoding, preprocessing and post-processing run in a bounded thread pool (OpenCV, NumPy and ONNX
Runtime release the GIL), overlapped with inference, so the model is not kept waiting. Results come
back in input order; an input that fails carries its error instead of detections and never stops
the others.

Given several models, the pipeline is an ensemble: every member sees the same decoded frame through
its own preprocessing and decoder, and the members' detections are fused (WBF by default). Classes
are matched by name; a class only one member knows passes through unfused. A member that fails on
a frame is recorded in ``Result.member_errors`` and the others are still fused.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.detections import Detections
from visionpipe.errors import EnsembleError
from visionpipe.io.images import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageInput,
    as_image_input,
    decode_image,
    describe_source,
)
from visionpipe.models.decoders import Candidates, DecodeParams
from visionpipe.models.ensemble_spec import EnsembleSpec, is_ensemble_file
from visionpipe.models.loader import DetectionModel, class_ids_for, load_model
from visionpipe.models.spec import ModelSpec
from visionpipe.postprocess.ensemble import FusionConfig, fuse_members
from visionpipe.postprocess.fusion import FusionError, FusionMethod
from visionpipe.postprocess.nms import nms
from visionpipe.preprocess import BoxTransform, preprocess
from visionpipe.results import Result, StageTimes

ModelSource = DetectionModel | ModelSpec | dict[str, Any] | str | Path


class PipelineNote(UserWarning):
    """Something the pipeline decided that a user should know (also kept in ``Pipeline.notes``)."""


@dataclass
class _Member:
    name: str
    model: DetectionModel
    params: DecodeParams
    to_ensemble: np.ndarray  # member class id -> ensemble class id


@dataclass
class _Prepared:
    result: Result
    tensors: list[np.ndarray] = field(default_factory=list)  # one per member
    transforms: list[BoxTransform] = field(default_factory=list)


class Pipeline:
    """A detector (or an ensemble of detectors) ready to run on images.

    Build it from a :class:`DetectionModel`, a spec file or dict, or a model file — or a list of
    them for an ensemble::

        pipe = Pipeline("yolox.yaml", conf=0.3)
        detections = pipe("photo.jpg")
        for result in pipe.stream(paths, batch_size=8):
            ...
        ensemble = Pipeline(["yolox.yaml", "nanodet.yaml"], fusion="wbf", weights=[2, 1])
        ensemble = Pipeline("ensemble.yaml")  # members, weights and fusion settings from a file

    An ensemble spec file (see ``visionpipe.models.ensemble_spec``) supplies the members and the
    fusion settings; ``fusion``, ``weights`` and ``fusion_iou`` given here override it.

    Threshold arguments left as None keep each model's defaults. A ``monitor`` (e.g.
    ``visionpipe.monitor.Monitor``: anything with ``image_features(image)`` and ``observe(result)``)
    gets the statistics of each decoded image in the decode threads and every result as it is yielded.
    ``input_size`` (``imgsz`` is Ultralytics' spelling of it: an int for a square, or (height,
    width)) sets the input of a model with a dynamic input size. ``classes`` is a *filter* (names or ids of the model's classes to
    keep); the model's class list itself is ``class_names``. ``half`` asks for fp16 inference, which
    needs a GPU device and an fp16 model (``visionpipe optimize --fp16``). ``notes`` lists what the
    pipeline decided that a user should know (e.g. a batch size the model cannot use).
    """

    def __init__(
        self,
        model: ModelSource | Sequence[ModelSource] | EnsembleSpec,
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
        input_size: int | tuple[int, int] | None = None,
        imgsz: int | tuple[int, int] | None = None,
        half: bool = False,
        names_file: str | Path | None = None,
        intra_op_threads: int | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
        fusion: FusionMethod | str | FusionConfig | None = None,
        weights: Sequence[float] | None = None,
        fusion_iou: float | None = None,
        monitor: Any = None,
    ) -> None:
        cores = os.cpu_count() or 1
        # Small detectors scale poorly across ONNX Runtime's intra-op threads; two runs side by
        # side, each with half the cores, keep a CPU busier (benchmarks/pipeline_throughput.py).
        concurrency = concurrency or (min(2, cores) if device == "cpu" else 1)
        if intra_op_threads is None:
            intra_op_threads = max(1, cores // concurrency) if device == "cpu" else 0
        base_fusion = FusionConfig()
        ensemble = (
            EnsembleSpec.from_file(model) if isinstance(model, (str, Path)) and is_ensemble_file(model) else model
        )
        if isinstance(ensemble, EnsembleSpec):
            base_fusion = FusionConfig(**ensemble.fusion.settings(), weights=ensemble.weights)
            model = [member_source(m.model) for m in ensemble.members]
        sources = list(model) if isinstance(model, (list, tuple)) else [model]
        if not sources:
            raise ValueError("a pipeline needs at least one model")
        if imgsz is not None and input_size is not None and imgsz != input_size:
            raise ValueError(f"imgsz={imgsz} and input_size={input_size} disagree (imgsz is the same setting)")
        input_size = input_size if input_size is not None else imgsz
        if input_size is not None and any(isinstance(m, DetectionModel) for m in sources):
            raise ValueError("input_size applies when the pipeline loads the model; this one is already loaded")
        models = [
            m
            if isinstance(m, DetectionModel)
            else load_model(
                m,
                family=family,
                names_file=names_file,
                device=device,
                intra_op_threads=intra_op_threads,
                input_size=input_size,
            )
            for m in sources
        ]
        if half:
            _check_half(models, device)
        self.class_names = _union_names(models)
        if len(models) > 1 and len(self.class_names) == sum(len(m.class_names) for m in models):
            raise FusionError("the ensemble's models share no class name, so there is nothing to fuse")
        overrides = {
            "conf": conf,
            "iou": iou,
            "multi_label": multi_label,
            "agnostic": agnostic,
            "top_k": top_k,
            "max_det": max_det,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        names = _unique_names([m.name for m in models])
        self.members = [
            _Member(
                name=name,
                model=m,
                params=replace(
                    m.params,
                    **overrides,
                    **(
                        {}
                        if classes is None
                        else {"classes": _member_class_filter(classes, m.class_names, self.class_names)}
                    ),
                ),
                to_ensemble=np.array([self.class_names.index(n) for n in m.class_names], dtype=np.int64),
            )
            for name, m in zip(names, models)
        ]
        # the same cap on what fusion returns as on each member's output
        self.fused_max_det = max(m.params.max_det for m in self.members)
        if isinstance(fusion, FusionConfig):
            config = fusion
        elif fusion is not None:
            config = replace(base_fusion, method=FusionMethod(fusion))
        else:
            config = base_fusion
        if weights is not None:
            config = replace(config, weights=tuple(float(w) for w in weights))
        if fusion_iou is not None:
            config = replace(config, iou=fusion_iou)
        config.check_weights(len(models))
        self.fusion = config
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.notes: list[str] = []
        fixed = [m.name for m in models if m.backend.fixed_batch == 1]
        if batch_size > 1 and fixed:
            self.notes.append(
                f"{', '.join(fixed)} {'has' if len(fixed) == 1 else 'have'} a fixed batch of 1: images run one at a "
                f"time (batch size {batch_size} has no effect; export with a dynamic batch to batch them)"
            )
        for note in self.notes:
            warnings.warn(note, PipelineNote, stacklevel=2)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.concurrency = concurrency
        self.limits = limits
        self.monitor = monitor
        self._pool: ThreadPoolExecutor | None = None
        self._inference_pool: ThreadPoolExecutor | None = None

    @property
    def model(self) -> DetectionModel:
        """The model (the first member, for an ensemble)."""
        return self.members[0].model

    @property
    def params(self) -> DecodeParams:
        """The decode parameters in force (the first member's, for an ensemble)."""
        return self.members[0].params

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for pool in (self._inference_pool, self._pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # queued work of a stopped stream is dropped
        self._pool = self._inference_pool = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """Threads for decoding, preprocessing and post-processing."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="visionpipe-io")
        return self._pool

    @property
    def inference_pool(self) -> ThreadPoolExecutor:
        """``concurrency`` threads, each running one batch through the backends at a time."""
        if self._inference_pool is None:
            self._inference_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="visionpipe-infer")
        return self._inference_pool

    # -- entry points -------------------------------------------------------------------------

    def __call__(self, image: ImageInput | Any) -> Any:
        """Detections for one image (a path, encoded bytes, a BGR array or a PIL image), or a list
        of Detections for a list of images; raises an input's error if it fails."""
        if isinstance(image, list):
            return [self._detections(result) for result in self.stream(image)]
        return self._detections(next(self.stream([image], batch_size=1)))

    @staticmethod
    def _detections(result: Result) -> Detections:
        if result.error is not None:
            raise result.error
        assert result.detections is not None
        return result.detections

    def run(self, images: Iterable[ImageInput], batch_size: int | None = None) -> list[Result]:
        """Results for many images (paths, encoded bytes, BGR arrays or PIL images), in input order."""
        return list(self.stream(images, batch_size=batch_size))

    def stream(
        self, images: Iterable[ImageInput], batch_size: int | None = None, keep_images: bool = False
    ) -> Iterator[Result]:
        """Yield results in input order as they finish, reading ``images`` lazily.

        At most a few batches are decoded ahead of inference and at most ``concurrency + 1``
        batches are in inference, so memory stays bounded however long the input is.
        ``keep_images`` puts each decoded frame in ``Result.image`` (to draw on it without
        decoding the file a second time, when it may have changed).
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
                prepared.append(self.pool.submit(self._prepare, *item, keep_images))

        refill()
        while prepared or running:
            while prepared and len(running) <= self.concurrency:
                batch = [prepared.popleft().result() for _ in range(min(batch_size, len(prepared)))]
                refill()
                running.append(self.inference_pool.submit(self._infer, batch))
            for finished in running.popleft().result():
                result = finished.result()
                if self.monitor is not None:
                    self.monitor.observe(result)
                yield result

    # -- stages -------------------------------------------------------------------------------

    def _prepare(self, index: int, source: ImageInput, keep_image: bool = False) -> _Prepared:
        source = as_image_input(source)
        name = describe_source(source)
        image_id = Path(name).name if isinstance(source, (str, os.PathLike)) else str(index)
        item = _Prepared(Result(index=index, image_id=image_id, source=name))
        if isinstance(source, Exception):  # an input that already failed upstream (e.g. a video frame)
            item.result.error = source
            return item
        try:
            start = time.perf_counter()
            image = decode_image(source, self.limits)
            decoded = time.perf_counter()
            if self.monitor is not None:
                # while the decoded frame is still in the CPU's cache: preprocessing writes a
                # tensor larger than the cache, after which these statistics cost twice as much
                item.result.image_features = self._image_features(image)
            preprocessing = time.perf_counter()
            for member in self.members:
                tensor, transform = preprocess(image, member.model.input_hw, member.model.preprocess)
                item.tensors.append(tensor)
                item.transforms.append(transform)
            item.result.image_size = (image.shape[0], image.shape[1])
            if keep_image:
                item.result.image = image
            item.result.times.decode = decoded - start
            item.result.times.preprocess = time.perf_counter() - preprocessing
        except Exception as exc:  # one bad input must never stop the rest
            item.result.error = exc
            return item
        return item

    def _image_features(self, image: np.ndarray) -> dict[str, float] | None:
        try:
            return self.monitor.image_features(image)
        except Exception:  # monitoring never fails an image
            return None

    def _infer(self, batch: list[_Prepared]) -> list[Future[Result]]:
        """Run every member on the good inputs of a batch; hand each image's decoding to the pool."""
        good = [p for p in batch if p.result.error is None]
        per_member = [self._run_backend(k, good) for k in range(len(self.members))]
        futures = []
        for item in batch:
            if item.result.error is not None:
                futures.append(_done(item.result))
                continue
            outputs = [runs.pop(0) for runs in per_member]
            if not self.is_ensemble and isinstance(outputs[0], Exception):
                item.result.error = outputs[0]
                futures.append(_done(item.result))
            else:
                futures.append(self.pool.submit(self._finish, item, outputs))
        return futures

    def _run_backend(self, k: int, good: list[_Prepared]) -> list[list[np.ndarray] | Exception]:
        """Member k's per-image outputs (each keeping a batch axis of 1), or that image's error."""
        if not good:
            return []
        backend = self.members[k].model.backend
        start = time.perf_counter()
        try:
            if backend.fixed_batch == 1 or len(good) == 1:
                outputs = [backend.run(p.tensors[k][None]) for p in good]
            else:
                outputs = [None] * len(good)
                for same_shape in _by_shape([p.tensors[k] for p in good]):  # "fit" sizes vary
                    stacked = backend.run(np.stack([good[i].tensors[k] for i in same_shape]))
                    for row, i in enumerate(same_shape):
                        outputs[i] = [o[row : row + 1] for o in stacked]
        except Exception:
            # A batch failed as a whole: run images alone so only the guilty one fails.
            return [self._single(k, p) for p in good]
        share = (time.perf_counter() - start) / len(good)
        for p in good:
            p.result.times.infer += share
        return outputs

    def _single(self, k: int, item: _Prepared) -> list[np.ndarray] | Exception:
        start = time.perf_counter()
        try:
            outputs = self.members[k].model.backend.run(item.tensors[k][None])
        except Exception as exc:
            return exc
        item.result.times.infer += time.perf_counter() - start
        return outputs

    def _finish(self, item: _Prepared, outputs: list[list[np.ndarray] | Exception]) -> Result:
        result = item.result
        start = time.perf_counter()
        for k, (member, member_outputs) in enumerate(zip(self.members, outputs)):
            if isinstance(member_outputs, Exception):
                result.member_errors[member.name] = member_outputs
                continue
            try:
                candidates = member.model.decoder.decode(member_outputs, member.params)[0]
                result.members[member.name] = self.postprocess(candidates, item.transforms[k], k)
            except Exception as exc:
                result.member_errors[member.name] = exc
        if not self.is_ensemble:
            if result.member_errors:
                result.error = next(iter(result.member_errors.values()))
            else:
                result.detections = result.members[self.members[0].name]
            result.members, result.member_errors = {}, {}
        elif not result.members:
            result.error = EnsembleError(result.member_errors)
        else:
            try:
                result.detections = self.fuse(result.members, result.image_size)  # type: ignore[arg-type]
            except Exception as exc:
                result.error = exc
        result.times.postprocess = time.perf_counter() - start
        return result

    def postprocess(
        self, candidates: Candidates, transform: BoxTransform, member: int = 0, params: DecodeParams | None = None
    ) -> Detections:
        """Map one member's candidates to the original image, clip, and suppress duplicates.

        ``params`` replaces the member's thresholds for this call (a server's per-request ``iou``
        and ``max_det``); candidates must have been decoded with the same params.
        """
        model = self.members[member].model
        params = params or self.members[member].params
        boxes = transform.to_original(candidates.xyxy.astype(np.float32, copy=False))
        if model.decoder.applies_nms:
            keep = nms(
                boxes,
                candidates.scores,
                params.iou,
                class_ids=None if params.agnostic else candidates.class_ids,
                top_k=params.top_k,
                max_det=params.max_det,
            )
        else:
            keep = np.argsort(-candidates.scores, kind="stable")[: params.max_det]
        data = {key: values[keep] for key, values in candidates.data.items()}
        for key in model.decoder.point_keys:  # the decoder says which data hold points
            if key in data:
                data[key] = transform.points_to_original(data[key])
        return Detections(
            xyxy=boxes[keep],
            confidence=candidates.scores[keep],
            class_id=candidates.class_ids[keep],
            data=data,
            class_names=model.class_names,
        )

    def fuse(self, member_detections: dict[str, Detections], image_size: tuple[int, int]) -> Detections:
        """Fuse the members' detections of one image (``image_size`` = (height, width)); see
        :func:`visionpipe.postprocess.ensemble.fuse_members`."""
        return fuse_members(
            [member_detections.get(m.name) for m in self.members],
            [m.to_ensemble for m in self.members],
            self.class_names,
            self.fusion,
            image_size,
            self.fused_max_det,
        )


def _check_half(models: Sequence[DetectionModel], device: str) -> None:
    """fp16 runs where it helps: a GPU, with a model whose weights are already fp16."""
    if device == "cpu":
        raise ValueError(
            "half (fp16) applies on a GPU (--device cuda or tensorrt); on a CPU ONNX Runtime runs fp16 models "
            "slower than fp32"
        )
    fp32 = [m.name for m in models if m.backend.image_input.dtype != np.float16]
    if fp32:
        raise ValueError(
            f"half (fp16) needs an fp16 model; {', '.join(fp32)} takes fp32 input: make one with "
            "`visionpipe optimize MODEL --fp16` and pass that file"
        )


def member_source(model: str) -> ModelSource:
    """An ensemble member named in a spec file: a path, or a built-in model's name."""
    from visionpipe.models.zoo import BUILTINS

    if model in BUILTINS and not Path(model).exists():
        return BUILTINS[model].to_spec()
    return model


def _by_shape(tensors: list[np.ndarray]) -> list[list[int]]:
    """Positions of the tensors grouped by shape, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, tensor in enumerate(tensors):
        groups.setdefault(tensor.shape, []).append(i)
    return list(groups.values())


def _union_names(models: Sequence[DetectionModel]) -> tuple[str, ...]:
    """Every class any model knows, in order of first appearance."""
    return tuple(dict.fromkeys(name for m in models for name in m.class_names))


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 and names.count(name) == 1 else f"{name}#{seen[name]}")
    return out


def _member_class_filter(
    classes: list[int | str], member_names: tuple[str, ...], names: tuple[str, ...]
) -> tuple[int, ...]:
    """A member's class filter from names or ids of the pipeline's class list (the union, for an
    ensemble); classes the member does not know are left out, so it may detect nothing."""
    wanted = {names[i] for i in class_ids_for(classes, names)}
    return tuple(i for i, name in enumerate(member_names) if name in wanted)


def _done(result: Result) -> Future[Result]:
    future: Future[Result] = Future()
    future.set_result(result)
    return future


__all__ = ["EnsembleError", "FusionConfig", "Pipeline", "PipelineNote", "Result", "StageTimes"]
