"""The HTML report: opened in headless Chromium (screenshot and DOM), size bound on 100k images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.monitor import Monitor, freeze_reference
from visionpipe.monitor.alerts import DEFAULT_RULES, evaluate_rules
from visionpipe.monitor.features import IMAGE_FEATURES
from visionpipe.monitor.report import write_report
from visionpipe.monitor.windows import check

HISTORY = 100_000
MAX_BYTES = 2 * 1024 * 1024


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        message = "headless Chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """100k images over about a month: a reference period, then images that get darker."""
    path = tmp_path_factory.mktemp("report") / "monitor.db"
    rng = np.random.default_rng(5)
    clock = SimpleNamespace(now=1_800_000_000.0)
    names = ("person", "car", "dog")
    base = {name: rng.normal(100, 20, HISTORY) for name in IMAGE_FEATURES}
    base["brightness"][-2000:] -= 40  # the camera darkens at the end
    counts = np.minimum(rng.poisson(2, HISTORY), 9)
    by_count = [  # built once: the test is about the store and the report, not about building boxes
        Detections(
            xyxy=np.tile([10.0, 10.0, 50.0, 60.0], (n, 1)),
            confidence=np.full(n, 0.7),
            class_id=np.arange(n) % 3,
            class_names=names,
        )
        for n in range(10)
    ]
    # the queue holds the whole history: this test is about the report, not about shedding load
    with Monitor(
        path, clock=lambda: clock.now, batch_size=5000, retention_seconds=40 * 86400, max_queue=HISTORY + 1
    ) as monitor:
        for i in range(HISTORY):
            clock.now += 26.0
            dets = by_count[counts[i]]
            monitor.observe(
                SimpleNamespace(image_id=f"{i}.jpg", detections=dets, image_size=(480, 640), error=None),
                image_features={k: float(v[i]) for k, v in base.items()},
            )
            if i == 20_000:
                monitor.flush()
                freeze_reference(monitor.store, "first-week", until=clock.now)
        monitor.flush()
        result = check(monitor.store, last=1000)
        evaluate_rules({None: result}, DEFAULT_RULES, monitor.store, clock=lambda: clock.now)
    return path


def test_report_size_bound_and_json_twin_on_100k_images(history, tmp_path):
    with Monitor(history) as monitor:
        assert monitor.store.count_records() == HISTORY
        html_path, json_path = write_report(monitor.store, tmp_path / "report.html")
    assert html_path.stat().st_size <= MAX_BYTES
    data = json.loads(json_path.read_text())
    assert "brightness" in data["check"]["drifted"]
    assert data["check"]["window"]["images"] == 1000
    assert len(data["series"]["images per window"]["value"]) <= 300  # ~720 hourly windows merged
    assert sum(data["series"]["images per window"]["value"]) == HISTORY
    assert data["alerts"] and data["alerts"][0]["rule"] == "image-drift"
    assert "0.jpg" not in html_path.read_text()  # no raw rows


def test_report_in_headless_chromium(history, tmp_path):
    browser = chromium()
    with Monitor(history) as monitor:
        html_path, _ = write_report(monitor.store, tmp_path / "report.html")
    url = html_path.resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1280,1600", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1600, 1280)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert gray.std() > 20 and (gray < 128).mean() > 0.01  # text, tables and plots, not a blank page
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    table = dom[dom.index('id="drift-table"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr") >= 1 + 3 * len(IMAGE_FEATURES)  # header + ks, wasserstein and psi per feature
    assert "<td>brightness</td><td>ks</td>" in table
    row = table[table.index("<td>brightness</td><td>ks</td>") :]
    assert row[: row.index("</tr>")].count("<td>yes</td>") == 1
    assert dom.count("data:image/png;base64,") >= len(IMAGE_FEATURES)
