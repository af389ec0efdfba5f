"""Prometheus metrics of the server, named for what they count (base units, ``_total``).

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` must name an empty folder shared by
them (the server sets one up); every process writes its samples there and ``/metrics`` sums them.
"""

from __future__ import annotations

import os
from typing import Any

from visionpipe.errors import MissingExtraError

STAGES = ("decode", "queue", "inference", "postprocess")
# 0.5 ms .. 10 s: a small detector's stages sit in the low milliseconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingExtraError("prometheus-client", "serve", "the HTTP server's metrics") from None
    return prometheus_client


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The server's metric families; one instance per app (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        prom = _prometheus()
        self._prom = prom
        self.multiprocess = multiprocess_dir() is not None
        # in multiprocess mode samples go to files, whatever the registry; the scrape collects them
        self.registry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = prom.Counter(
            "visionpipe_requests",
            "Requests answered, by model, version (the A/B variant), route and HTTP status.",
            ["model", "version", "route", "status"],
            registry=reg,
        )
        self.stage_seconds = prom.Histogram(
            "visionpipe_stage_duration_seconds",
            "Time per request in each stage: decode (incl. preprocessing), queue, inference, postprocess.",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.request_seconds = prom.Histogram(
            "visionpipe_request_duration_seconds",
            "Time from a request's arrival to its response, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = prom.Histogram(
            "visionpipe_batch_size", "Images per executed batch.", ["model"], buckets=BATCH_BUCKETS, registry=reg
        )
        self.queue_depth = prom.Gauge(
            "visionpipe_queue_depth",
            "Images waiting for inference.",
            ["model", "version"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.inferences = prom.Counter(
            "visionpipe_inference_count",
            "Images inferred (a batch of 8 counts 8).",
            ["model", "version"],
            registry=reg,
        )
        self.executions = prom.Counter(
            "visionpipe_execution_count",
            "Model executions (a batch of 8 counts 1).",
            ["model", "version"],
            registry=reg,
        )
        self.rejected = prom.Counter(
            "visionpipe_rejected_requests",
            "Requests refused before inference, by reason (queue_full, deadline, rate_limited, unauthorized, too_large).",
            ["reason"],
            registry=reg,
        )
        self.cache = prom.Counter(
            "visionpipe_cache_requests", "Response cache look-ups, by result (hit, miss).", ["result"], registry=reg
        )
        self.fallbacks = prom.Counter(
            "visionpipe_fallbacks", "Requests answered by a fallback model, by primary model.", ["model"], registry=reg
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text a Prometheus scrape gets, and its content type."""
        prom = self._prom
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST

    @staticmethod
    def mark_process_dead(pid: int) -> None:
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)
