"""Shared by the benchmark scripts: where the assets are, and a header naming machine and command."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("VISIONPIPE_ASSETS", REPO.parent / "shared" / "assets"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(title: str, settings: dict[str, object]) -> str:
    import numpy
    import onnxruntime

    lines = [
        f"# {title}",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"machine: {cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}",
        f"python {platform.python_version()}, numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
    ]
    return "\n".join(lines)


def timed_rounds(contenders: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Median items/s of each contender; rounds interleave contenders so drift hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            items = run()
            rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}
