"""Prometheus metrics of the results a pipeline produces (``prometheus_client``, the ``monitor`` extra).

Names follow the Prometheus guide: base units (seconds), ``_total`` for counters, and one bounded
label: ``class_name`` takes the model's class names (at most ``max_classes`` of them), anything
else is counted as ``other``. Each ``Metrics`` has its own registry, so several can live in one
process (tests, a server hosting several models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from visionpipe.errors import MissingExtraError

STAGES = ("decode", "preprocess", "infer", "postprocess")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise MissingExtraError("prometheus-client", "monitor", "Prometheus metrics") from None
    return prometheus_client


class Metrics:
    """Counters and histograms of images, errors, detections, confidences and stage latencies.

    Plug it in as a pipeline's monitor (it ignores images), or give it to a ``Monitor``.
    """

    def __init__(self, class_names: tuple[str, ...] = (), *, max_classes: int = 100, registry: Any = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.known = frozenset(class_names[:max_classes])
        r = self.registry
        self.images = prom.Counter("visionpipe_images_total", "Images (or frames) processed", registry=r)
        self.errors = prom.Counter("visionpipe_image_errors_total", "Images that failed", registry=r)
        self.empty = prom.Counter("visionpipe_empty_images_total", "Images without any detection", registry=r)
        self.detections = prom.Counter("visionpipe_detections_total", "Detections by class", ["class_name"], registry=r)
        self.confidence = prom.Histogram(
            "visionpipe_detection_confidence", "Confidence of detections", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.stage = prom.Histogram(
            "visionpipe_stage_duration_seconds",
            "Seconds per image and pipeline stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = prom.Histogram(
            "visionpipe_image_duration_seconds", "Seconds per image, all stages", buckets=LATENCY_BUCKETS, registry=r
        )
        self._server: Any = None

    def image_features(self, image: Any) -> None:
        return None

    def observe(self, result: Any, image: Any = None) -> None:
        """Count one result (a pipeline ``Result`` or anything shaped like it)."""
        self.images.inc()
        if getattr(result, "error", None) is not None:
            self.errors.inc()
            return
        detections = getattr(result, "detections", None)
        if detections is not None:
            if not len(detections):
                self.empty.inc()
            names = detections.names if len(detections) else []
            for name in names:
                self.detections.labels(class_name=name if name in self.known else "other").inc()
            for value in detections.confidence.tolist():
                self.confidence.observe(value)
        times = getattr(result, "times", None)
        if times is not None:
            for stage in STAGES:
                self.stage.labels(stage=stage).observe(getattr(times, stage, 0.0))
            self.latency.observe(times.total)

    def watch_video(self, stats: Callable[[], Any]) -> None:
        """Also expose a video processor's counters, read at scrape time from ``stats()`` (e.g.
        ``lambda: processor.stats``): frames captured, frames dropped by cause, latency p95."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class VideoCollector:
            def collect(self):
                snapshot = stats()
                yield CounterMetricFamily(
                    "visionpipe_video_frames_captured", "Frames read from the source", value=snapshot.captured
                )
                dropped = CounterMetricFamily(
                    "visionpipe_video_frames_dropped", "Frames dropped, by cause", labels=["cause"]
                )
                for cause, count in snapshot.dropped.items():
                    dropped.add_metric([cause], count)
                yield dropped
                if snapshot.latency_p95 is not None:
                    yield GaugeMetricFamily(
                        "visionpipe_video_latency_p95_seconds",
                        "Capture-to-result latency, 95th percentile",
                        value=snapshot.latency_p95,
                    )

        self.registry.register(VideoCollector())

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` over HTTP on ``address:port`` (0 picks a free port); return the port."""
        prom = _prometheus()
        self._server, _ = prom.start_http_server(port, addr=address, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def text(self) -> str:
        """The exposition text, as ``/metrics`` serves it."""
        return _prometheus().generate_latest(self.registry).decode()
