"""The FastAPI application: routes, the error contract, request ids, auth, limits and metrics.

Errors are answered as ``{"error": "...", "request_id": "..."}`` (the Open Inference Protocol's
error shape) with these statuses: 400 bad input, 401 missing or wrong API key, 403 model control
disabled, 404 unknown model or version, 413 body or image too large, 429 rate limited (with
``Retry-After``), 503 queue full or shutting down (with ``Retry-After``), 504 deadline passed, 500
anything else (logged with the request id, never a traceback in the body).

No CORS middleware is installed: browsers on other origins cannot call the server unless a proxy
in front of it says so.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from visionpipe.errors import (
    BatcherClosedError,
    DeadlineExceededError,
    ImageDecodeError,
    MissingExtraError,
    ModelNotFoundError,
    QueueFullError,
)
from visionpipe.serve.auth import ApiKeys, RateLimiter, presented_key
from visionpipe.serve.cache import ResponseCache
from visionpipe.serve.config import ServeConfig
from visionpipe.serve.limits import BodyLimitMiddleware
from visionpipe.serve.logs import request_id_from, request_id_var
from visionpipe.serve.metrics import Metrics
from visionpipe.serve.repository import LoadedVersion, ModelRepository
from visionpipe.serve.responses import error_response
from visionpipe.serve.service import CLIENT_ERRORS, DetectionService

log = logging.getLogger("visionpipe.serve")

# reachable without a key, so orchestrators can probe them
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise MissingExtraError("fastapi", "serve", "the HTTP server") from None
    return fastapi


def status_for(exc: BaseException) -> tuple[int, dict[str, str] | None]:
    """The HTTP status (and headers) an error is answered with."""
    if isinstance(exc, ModelNotFoundError):
        return 404, None
    if isinstance(exc, QueueFullError):
        return 503, {"Retry-After": str(math.ceil(exc.retry_after))}
    if isinstance(exc, BatcherClosedError):
        return 503, {"Retry-After": "1"}
    if isinstance(exc, DeadlineExceededError):
        return 504, None
    if isinstance(exc, ImageDecodeError) and "exceeds the limit" in exc.cause:
        return 413, None
    if isinstance(exc, CLIENT_ERRORS):
        return 400, None
    return 500, None


class GuardMiddleware:
    """Request ids, API keys with per-key rate limits, request metrics and the access log (pure ASGI)."""

    def __init__(self, app: Any, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        request_id = request_id_from(headers.get("x-request-id"))
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = 500
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        started = False

        async def send_tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            refusal = self._refusal(scope["path"], headers)
            if refusal is not None:
                await refusal(scope, receive, send_tracked)
            else:
                await self.app(scope, receive, send_tracked)
        except Exception as exc:  # the unexpected: logged with the request id, answered without details
            log.error("request failed", exc_info=exc, extra={"error": str(exc)})
            if not started:
                response = error_response(500, "internal error; see the server log for this request id")
                await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            served = scope["state"].get("served")
            if served is not None:
                model, version, route = served
                self.state.metrics.requests.labels(model, version, route, str(status)).inc()
                self.state.metrics.request_seconds.labels(model).observe(seconds)
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope["path"],
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    **({"model": f"{served[0]}/{served[1]}"} if served else {}),
                },
            )
            request_id_var.reset(token)

    def _refusal(self, path: str, headers: dict[str, str]) -> Any:
        keys = self.state.keys
        if keys is None or path in OPEN_PATHS:
            return None
        name = keys.identify(presented_key(headers))
        if name is None:
            self.state.metrics.rejected.labels("unauthorized").inc()
            return error_response(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
        wait = self.state.rate_limiter.acquire(name) if self.state.rate_limiter else 0.0
        if wait > 0:
            self.state.metrics.rejected.labels("rate_limited").inc()
            return error_response(429, "rate limit exceeded for this key", {"Retry-After": str(math.ceil(wait))})
        return None


class AppState:
    """Everything the routes share: the config, repository, service, metrics, keys."""

    def __init__(self, config: ServeConfig, repository: ModelRepository | None = None, seed: int | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.repository = repository or ModelRepository(
            config, on_batch=self._on_batch, on_depth=self._on_depth, seed=seed
        )
        self.cache = ResponseCache(config.cache_entries, config.cache_ttl)
        self.monitor = None
        if config.monitor:
            from visionpipe.monitor import Monitor

            self.monitor = Monitor(config.monitor, tag="serve")
        self.service = DetectionService(config, self.repository, self.metrics, self.cache, self.monitor)
        self.keys = ApiKeys.from_file(config.api_keys_file) if config.api_keys_file else None
        self.rate_limiter = RateLimiter(config.rate_limit) if self.keys and config.rate_limit > 0 else None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self._executions: dict[tuple[str, str], tuple[int, int]] = {}

    def _on_batch(self, loaded: LoadedVersion, stats: Any) -> None:
        self.metrics.batch_size.labels(loaded.name).observe(stats.images)
        self.metrics.inferences.labels(loaded.name, loaded.version).inc(stats.images)
        self.metrics.executions.labels(loaded.name, loaded.version).inc(1)

    def _on_depth(self, loaded: LoadedVersion, depth: int) -> None:
        self.metrics.queue_depth.labels(loaded.name, loaded.version).set(depth)

    def start(self) -> None:
        """Load the models (idempotent: ``serve`` loads them before binding, so errors are plain)."""
        if self._started:
            return
        self._started = True
        report = self.repository.refresh()
        if not self.repository.ready:
            raise ModelNotFoundError("no model could be loaded: " + "; ".join(report["failed"] or ["none found"]))
        for failure in report["failed"]:
            log.error("model refused", extra={"error": failure})
        if self.config.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="repository-poller", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.repository.refresh()
            except Exception as exc:  # a bad scan must not stop future ones
                log.error("repository scan failed", extra={"error": str(exc)})

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        self.repository.close()
        if self.monitor is not None:
            self.monitor.close()  # commits every observed request


def worker_threads() -> int:
    """Threads for the blocking stages of requests (decode, post-processing): 2 per core.

    One per core does the CPU work while as many wait on inference (a lone request is inferred in
    its own thread). More only add contention: at concurrency 8 on 2 cores, 8 threads served
    0.81x the in-process throughput, 4 threads 0.87x (benchmarks/serve_load.py)."""
    return 2 * (os.cpu_count() or 1)


def create_app(config: ServeConfig, *, state: AppState | None = None, seed: int | None = None) -> Any:
    """The ASGI app serving ``config.sources``; models load when the app starts (lifespan)."""
    fastapi = _fastapi()
    from visionpipe._version import __version__
    from visionpipe.serve.detect_route import detect_router
    from visionpipe.serve.protocol import protocol_router

    state = state or AppState(config, seed=seed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import anyio.to_thread

        # decoding and post-processing threads: enough to keep the cores busy; anyio's default of 40
        # only added GIL contention and a malloc arena per thread (RSS crept up under overload)
        anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads()
        await anyio.to_thread.run_sync(state.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.stop)

    app = fastapi.FastAPI(
        title="visionpipe",
        version=__version__,
        description="Object detection over HTTP: the Open Inference Protocol (KServe v2) and an image route.",
        lifespan=lifespan,
    )
    app.state.vp = state

    async def handle(request: Any, exc: Exception) -> Any:
        status, headers = status_for(exc)
        return error_response(status, " ".join(str(exc).split()), headers)

    for kind in (
        ModelNotFoundError,
        QueueFullError,
        BatcherClosedError,
        DeadlineExceededError,
        *CLIENT_ERRORS,
        Exception,
    ):
        app.add_exception_handler(kind, handle)

    from fastapi.exceptions import RequestValidationError

    async def invalid(request: Any, exc: RequestValidationError) -> Any:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]
        )
        return error_response(400, f"invalid request: {details}")

    app.add_exception_handler(RequestValidationError, invalid)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Any:
        from starlette.responses import Response

        body, content_type = state.metrics.exposition()
        return Response(body, media_type=content_type)

    app.include_router(protocol_router(state))
    app.include_router(detect_router(state))
    # the last added runs first: ids, auth and the access log wrap the body limit
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.max_body_bytes,
        on_reject=lambda: state.metrics.rejected.labels("too_large").inc(),
    )
    app.add_middleware(GuardMiddleware, state=state)
    return app
