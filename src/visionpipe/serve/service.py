"""What both HTTP routes do with a request: cache, decode, batch, post-process, fall back, count.

The routes only translate HTTP to :meth:`DetectionService.detect` and back; this module knows
nothing of HTTP. Blocking stages run in worker threads so the event loop only waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from visionpipe.detections import Detections
from visionpipe.errors import DeadlineExceededError, ImageDecodeError, InputShapeError, QueueFullError, SpecError
from visionpipe.io.images import ImageInput, decode_image
from visionpipe.results import Result, StageTimes
from visionpipe.serve.cache import ResponseCache, body_key, content_key
from visionpipe.serve.config import ServeConfig
from visionpipe.serve.logs import request_id_var
from visionpipe.serve.metrics import Metrics
from visionpipe.serve.repository import LoadedVersion, ModelRepository

log = logging.getLogger("visionpipe.serve")

# what a client did wrong: answered 4xx, never retried on a fallback model
CLIENT_ERRORS = (ImageDecodeError, InputShapeError, SpecError, ValueError)


@dataclass(frozen=True)
class Thresholds:
    """A request's overrides of the model's thresholds (None keeps the model's)."""

    conf: float | None = None
    iou: float | None = None
    classes: tuple[int | str, ...] | None = None
    max_det: int | None = None

    def __post_init__(self) -> None:
        for name in ("conf", "iou"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.max_det is not None and self.max_det < 0:
            raise ValueError(f"max_det must not be negative, got {self.max_det}")

    def key(self) -> str:
        return repr((self.conf, self.iou, self.classes, self.max_det))


@dataclass
class Outcome:
    """The answer to one request: detections per image, who computed them, and where time went."""

    detections: list[Detections]
    image_sizes: list[tuple[int, int]]  # (height, width)
    model: str
    version: str
    class_names: tuple[str, ...]
    cached: bool = False
    fallback_from: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class DetectionService:
    """Runs requests against a :class:`ModelRepository`, with the response cache and metrics."""

    def __init__(
        self,
        config: ServeConfig,
        repository: ModelRepository,
        metrics: Metrics,
        cache: ResponseCache,
        monitor: Any = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.metrics = metrics
        self.cache = cache
        # anything with image_features(image) and observe(result, image_features=, tag=), e.g.
        # visionpipe.monitor.Monitor: each answered image is recorded, tagged "model/version"
        self.monitor = monitor
        self.clock = time.monotonic

    def deadline_seconds(self, version: LoadedVersion, requested: float | None) -> float:
        """A request's time budget: the model's deadline, or less if the client asks for less."""
        endpoint = self.repository.endpoints.get(version.name)
        limit = (endpoint.settings.batching if endpoint else self.config.batching).deadline_ms / 1000
        return limit if requested is None or requested <= 0 else min(limit, requested)

    async def detect(
        self,
        model: str,
        images: Sequence[ImageInput],
        thresholds: Thresholds,
        *,
        version: str | None = None,
        sticky: str | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Detections for ``images`` (encoded bytes or BGR arrays) from a model (or its fallback).

        Raises QueueFullError (503), DeadlineExceededError (504), ModelNotFoundError (404), a client
        error (400) or, when no fallback saves it, the model's own error (500).
        """
        arrived = self.clock()
        with self.repository.lease(model, version, sticky) as primary:
            try:
                return await self._run(primary, images, thresholds, timeout, arrived)
            except CLIENT_ERRORS + (QueueFullError,):
                raise
            except Exception as exc:
                fallback_name = self._fallback_for(primary, version)
                if fallback_name is None:
                    raise
                log.warning(
                    "falling back",
                    extra={
                        "model": primary.name,
                        "version": primary.version,
                        "fallback": fallback_name,
                        "error": str(exc),
                    },
                )
                self.metrics.fallbacks.labels(primary.name).inc()
        with self.repository.lease(fallback_name, None, sticky) as backup:
            outcome = await self._run(backup, images, thresholds, timeout, self.clock())
            outcome.fallback_from = model
            return outcome

    def _fallback_for(self, primary: LoadedVersion, version: str | None) -> str | None:
        endpoint = self.repository.endpoints.get(primary.name)
        if endpoint is None or version is not None:  # a client naming a version asked for that version
            return None
        fallback = endpoint.settings.fallback
        return fallback if fallback and fallback != primary.name and fallback in self.repository.endpoints else None

    async def _run(
        self,
        loaded: LoadedVersion,
        images: Sequence[ImageInput],
        thresholds: Thresholds,
        timeout: float | None,
        arrived: float,
    ) -> Outcome:
        runner = loaded.runner
        params = runner.params(
            thresholds.conf,
            thresholds.iou,
            None if thresholds.classes is None else list(thresholds.classes),
            thresholds.max_det,
        )
        content = content_key(images) if self.cache.enabled else None
        key = None
        if content is not None:
            key = body_key(content, loaded.name, loaded.version, thresholds.key())
            hit = self.cache.get(key)
            self.metrics.cache.labels("hit" if hit is not None else "miss").inc()
            if hit is not None:
                detections, sizes = hit
                return Outcome(detections, sizes, loaded.name, loaded.version, runner.class_names, cached=True)
        deadline = arrived + self.deadline_seconds(loaded, timeout)
        seconds: dict[str, float] = {}

        features: list[dict[str, float] | None] = []

        def prepare() -> list[Any]:
            start = time.perf_counter()
            prepared = []
            for image in images:
                decoded = decode_image(image, runner.limits)
                features.append(self._image_features(decoded))  # while the frame is in the cache
                prepared.append(runner.prepare(decoded))
            seconds["decode"] = time.perf_counter() - start
            if len(prepared) <= batcher.max_batch_size and self.clock() < deadline:
                # alone: infer and post-process right here (no hand-off to a lane and back)
                start = time.perf_counter()
                try:
                    ran, outputs = batcher.run_now([p.tensor for p in prepared], size=len(prepared))
                except BaseException:
                    reserved[0] = 0  # run_now had taken over the reservation before it failed
                    raise
                if ran:
                    reserved[0] = 0
                    seconds["queue"] = 0.0
                    seconds["inference"] = time.perf_counter() - start
                    start = time.perf_counter()
                    direct.extend(runner.finish(o, p.transform, params) for o, p in zip(outputs, prepared))
                    seconds["postprocess"] = time.perf_counter() - start
            return prepared

        direct: list[Detections] = []  # filled when prepare() could run the request at once
        batcher = loaded.batcher
        if len(images) > batcher.max_queue:
            raise ValueError(f"{len(images)} images in one request; this model takes at most {batcher.max_queue}")
        try:
            # admission before any work: refused at once when the queue (and what is arriving) is full;
            # and a batch forming meanwhile waits for these images while they are decoded
            batcher.expect(len(images))
        except QueueFullError:
            self.metrics.rejected.labels("queue_full").inc()
            raise
        reserved = [len(images)]  # images announced to the batcher and not yet submitted
        futures: list[Any] = []
        try:
            prepared = await anyio.to_thread.run_sync(prepare)
            if direct:
                return self._answered(loaded, direct, prepared, features, seconds, key)
            for i in range(0, len(prepared), batcher.max_batch_size):
                chunk = prepared[i : i + batcher.max_batch_size]
                futures.append(
                    batcher.submit([p.tensor for p in chunk], size=len(chunk), deadline=deadline, expected=True)
                )
                reserved[0] -= len(chunk)
        except BaseException:
            if reserved[0]:
                batcher.withdraw(reserved[0])
            for future in futures:
                future.cancel()
            raise
        queued = time.perf_counter()
        remaining = deadline - self.clock()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), timeout=max(0.0, remaining)
            )
        except (asyncio.TimeoutError, DeadlineExceededError):
            for future in futures:
                future.cancel()
            self.metrics.rejected.labels("deadline").inc()
            raise DeadlineExceededError(
                f"{loaded.name}/{loaded.version}: deadline of {remaining:.3f} s passed"
            ) from None
        waited = time.perf_counter() - queued
        # queue time ends when a lane took the request; inference is the rest of the wait
        seconds["queue"] = max(0.0, min(waited, _queue_seconds(futures)))
        seconds["inference"] = max(0.0, waited - seconds["queue"])
        outputs = [o for chunk in results for o in chunk]

        def finish() -> list[Detections]:
            start = time.perf_counter()
            detections = [runner.finish(o, p.transform, params) for o, p in zip(outputs, prepared)]
            seconds["postprocess"] = time.perf_counter() - start
            return detections

        detections = await anyio.to_thread.run_sync(finish)
        return self._answered(loaded, detections, prepared, features, seconds, key)

    def _answered(
        self,
        loaded: LoadedVersion,
        detections: list[Detections],
        prepared: list[Any],
        features: list[dict[str, float] | None],
        seconds: dict[str, float],
        key: str | None,
    ) -> Outcome:
        """Count, cache and record a request's detections."""
        for stage, value in seconds.items():
            self.metrics.stage_seconds.labels(loaded.name, stage).observe(value)
        sizes = [p.image_hw for p in prepared]
        if key is not None:
            self.cache.put(key, (detections, sizes))
        if self.monitor is not None:
            self._observe(loaded, detections, sizes, features, seconds)
        return Outcome(detections, sizes, loaded.name, loaded.version, loaded.runner.class_names, seconds=seconds)

    def _image_features(self, image: Any) -> dict[str, float] | None:
        if self.monitor is None:
            return None
        try:
            return self.monitor.image_features(image)
        except Exception:  # monitoring never fails a request
            return None

    def _observe(
        self,
        loaded: LoadedVersion,
        detections: list[Detections],
        sizes: list[tuple[int, int]],
        features: list[dict[str, float] | None],
        seconds: dict[str, float],
    ) -> None:
        share = 1.0 / max(1, len(detections))  # a request's stage times split over its images
        times = StageTimes(
            decode=seconds.get("decode", 0.0) * share,
            infer=(seconds.get("queue", 0.0) + seconds.get("inference", 0.0)) * share,
            postprocess=seconds.get("postprocess", 0.0) * share,
        )
        request_id = request_id_var.get() or "request"
        for i, (found, size, image_features) in enumerate(zip(detections, sizes, features)):
            result = Result(index=i, image_id=f"{request_id}-{i}", source="http", image_size=size, detections=found)
            result.times = times
            self.monitor.observe(result, image_features=image_features, tag=f"{loaded.name}/{loaded.version}")


def _queue_seconds(futures: list[Any]) -> float:
    """How long the request's chunks waited for a lane (recorded by the batcher on each item)."""
    waits = [getattr(f, "queue_seconds", None) for f in futures]
    known = [w for w in waits if w is not None]
    return max(known) if known else 0.0


def is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, CLIENT_ERRORS)


__all__ = ["DetectionService", "Outcome", "Thresholds", "is_client_error"]
