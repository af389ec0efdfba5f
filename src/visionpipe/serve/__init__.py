"""Serve detectors over HTTP: the Open Inference Protocol and an image route, with dynamic
batching, backpressure, safe defaults, metrics, versions, A/B routing and fallback.

Needs the ``serve`` extra (``pip install 'visionpipe[serve]'``)::

    from visionpipe.serve import ServeConfig, serve
    serve(ServeConfig(sources=(Path("models"),), port=8000))

Layout: ``config`` (settings), ``batcher`` (dynamic batching), ``runner`` (a model's stages),
``repository`` (versions, swaps, A/B), ``service`` (a request end to end), ``cache``, ``auth``,
``limits``, ``metrics``, ``logs``, ``tensors`` + ``protocol`` (KServe v2), ``detect_route``
(image route), ``app`` (FastAPI factory), ``server`` (uvicorn, signals, workers).
"""

from __future__ import annotations

from typing import Any

from visionpipe.serve.config import BatchingConfig, ServeConfig


def serve(config: ServeConfig) -> int:
    from visionpipe.serve.server import serve as _serve

    return _serve(config)


def create_app(config: ServeConfig, **kwargs: Any) -> Any:
    from visionpipe.serve.app import create_app as _create_app

    return _create_app(config, **kwargs)


__all__ = ["BatchingConfig", "ServeConfig", "create_app", "serve"]
