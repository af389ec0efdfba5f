"""Monitoring a deployed detector: features, store, drift tests, accuracy, alerts, report, metrics.

Sits beside ``video`` and ``optimize``: it may import the core (pipeline, detections, evaluation)
but never the CLI or the server.
"""

from visionpipe.errors import MonitorDataError, StoreError
from visionpipe.monitor.drift import DriftResult
from visionpipe.monitor.monitor import Monitor, monitoring
from visionpipe.monitor.store import Store
from visionpipe.monitor.windows import CheckResult, Window, check, compare, freeze_reference

__all__ = [
    "CheckResult",
    "DriftResult",
    "Monitor",
    "MonitorDataError",
    "Store",
    "StoreError",
    "Window",
    "check",
    "compare",
    "freeze_reference",
    "monitoring",
]
