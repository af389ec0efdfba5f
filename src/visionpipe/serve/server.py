"""Run the app on uvicorn: bind checks, worker processes, and a clean exit on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits up to
``graceful_seconds`` for the requests in flight; then the app's shutdown finishes every queued
batch and closes the models, and the process exits with status 0 (uvicorn would re-raise the
signal and die by it, which process managers count as a crash).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from visionpipe.errors import MissingExtraError, SpecError
from visionpipe.serve.config import BatchingConfig, ServeConfig

CONFIG_ENV = "VISIONPIPE_SERVE_CONFIG"

# How often a thread holding the GIL hands it over (Python's default is 5 ms). A server process runs
# the event loop beside decode, post-processing and batcher threads; under overload a thread that
# wants the GIL back after ONNX Runtime released it waited up to 5 ms per hand-over, which halved
# the throughput of accepted requests and tripled their p99 (benchmarks/serve_load.py, section 3).
GIL_SWITCH_SECONDS = 0.001


def tune_process() -> None:
    """Process-wide settings for a process that only serves (``visionpipe serve`` and its workers)."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "the HTTP server") from None
    return uvicorn


def config_to_env(config: ServeConfig) -> str:
    raw = asdict(config)
    raw["sources"] = [str(p) for p in config.sources]
    raw["api_keys_file"] = None if config.api_keys_file is None else str(config.api_keys_file)
    return json.dumps(raw)


def config_from_env() -> ServeConfig:
    raw = json.loads(os.environ[CONFIG_ENV])
    raw["sources"] = tuple(Path(p) for p in raw["sources"])
    raw["api_keys_file"] = None if raw["api_keys_file"] is None else Path(raw["api_keys_file"])
    raw["batching"] = BatchingConfig(**raw["batching"])
    return ServeConfig(**raw)


def app_from_env() -> Any:
    """The app factory each worker process calls (``--workers`` > 1)."""
    from visionpipe.serve.app import create_app
    from visionpipe.serve.logs import configure_logging

    config = config_from_env()
    configure_logging(config.log_level)
    tune_process()
    return create_app(config)


def make_server(config: ServeConfig, app: Any = None) -> Any:
    """A uvicorn server for one process (``app`` defaults to ``create_app(config)``)."""
    uvicorn = _uvicorn()
    config.check_bind()
    if app is None:
        from visionpipe.serve.app import create_app

        app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,  # the app logs each request as JSON, with its id
        timeout_graceful_shutdown=config.graceful_seconds,
        lifespan="on",
    )
    return _ExitZeroServer(uv_config)


def serve(config: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status (0 after a clean shutdown)."""
    from visionpipe.serve.logs import configure_logging

    config.check_bind()
    for source in config.sources:
        if not Path(source).exists():
            raise SpecError(f"model source {source} does not exist")
    configure_logging(config.log_level)
    if config.workers > 1:
        return _serve_workers(config)
    from visionpipe.serve.app import create_app

    tune_process()
    app = create_app(config)
    app.state.vp.start()  # a model that cannot load stops us here, with its error, before binding
    server = make_server(config, app)
    server.run()
    return 0 if server.started else 1


def _serve_workers(config: ServeConfig) -> int:
    """Several processes behind one socket, with Prometheus' multiprocess mode."""
    uvicorn = _uvicorn()
    owned = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        owned = tempfile.TemporaryDirectory(prefix="visionpipe-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = owned.name
    os.environ[CONFIG_ENV] = config_to_env(replace(config, workers=1))
    try:
        uvicorn.run(
            "visionpipe.serve.server:app_from_env",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=config.graceful_seconds,
        )
    finally:
        if owned is not None:
            owned.cleanup()
    return 0


def _server_class() -> Any:
    return _uvicorn().Server


class _ExitZeroServer:
    """uvicorn's Server, but a captured SIGTERM/SIGINT ends the process normally after shutdown."""

    def __new__(cls, uv_config: Any) -> Any:
        base = _server_class()

        class Server(base):  # type: ignore[misc, valid-type]
            def capture_signals(self):  # type: ignore[no-untyped-def]
                import contextlib

                parent = super().capture_signals()

                @contextlib.contextmanager
                def without_reraise():  # type: ignore[no-untyped-def]
                    with parent:
                        yield
                        self._captured_signals.clear()  # shut down cleanly: nothing to re-raise

                return without_reraise()

        return Server(uv_config)
