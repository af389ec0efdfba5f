"""Prometheus metrics served over a real socket and parsed with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from visionpipe.detections import Detections
from visionpipe.monitor.metrics import Metrics
from visionpipe.results import Result, StageTimes


def a_result(class_ids, error=None):
    n = len(class_ids)
    dets = Detections(
        xyxy=np.tile([0.0, 0.0, 10.0, 10.0], (n, 1)),
        confidence=np.full(n, 0.75),
        class_id=class_ids,
        class_names=("person", "car", "dog"),
    )
    return Result(
        0, "x", "x", detections=None if error else dets, times=StageTimes(0.002, 0.001, 0.02, 0.001), error=error
    )


def test_metrics_over_http_with_a_bounded_class_label():
    metrics = Metrics(("person", "car", "dog"), max_classes=2)  # "dog" is beyond the bound
    port = metrics.serve(0)
    try:
        metrics.observe(a_result([0, 0, 1, 2]))
        metrics.observe(a_result([]))
        metrics.observe(a_result([0], error=ValueError("corrupt")))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("visionpipe_images_total", ())] == 3
    assert samples[("visionpipe_image_errors_total", ())] == 1
    assert samples[("visionpipe_empty_images_total", ())] == 1
    by_class = {k[1][0][1]: v for k, v in samples.items() if k[0] == "visionpipe_detections_total"}
    assert by_class == {"person": 2, "car": 1, "other": 1}
    assert samples[("visionpipe_stage_duration_seconds_count", (("stage", "infer"),))] == 2
    assert samples[("visionpipe_image_duration_seconds_sum", ())] == pytest.approx(0.048)
    assert samples[("visionpipe_detection_confidence_count", ())] == 4


def test_missing_extras_name_the_extra(monkeypatch):
    import sys

    from visionpipe.errors import MissingExtraError
    from visionpipe.monitor.store import Store

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtraError, match=r"visionpipe\[monitor\]"):
        Metrics(("person",))
    with pytest.raises(MissingExtraError, match=r"visionpipe\[monitor\]"):
        Store.open("postgresql://127.0.0.1/none")


def test_video_counters_read_at_scrape_time():
    from types import SimpleNamespace

    stats = SimpleNamespace(captured=10, dropped={"buffer": 3, "stride": 0}, latency_p95=0.25)
    metrics = Metrics(())
    metrics.watch_video(lambda: stats)
    port = metrics.serve(0)
    try:
        stats.captured = 12  # read when scraped, not when registered
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    samples = {
        (s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("visionpipe_video_frames_captured_total", ())] == 12
    assert samples[("visionpipe_video_frames_dropped_total", (("cause", "buffer"),))] == 3
    assert samples[("visionpipe_video_latency_p95_seconds", ())] == 0.25
