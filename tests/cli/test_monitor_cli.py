"""`visionpipe detect|video --monitor` and `visionpipe monitor reference|check|labels|report`, end to end."""

from __future__ import annotations

import json

import cv2
import pytest

from tests.cli.helpers import describe

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def monitored(cli, asset, yolox_spec, tmp_path_factory):
    """A store with the 64 val photos as the reference run and a darkened copy of them as the live run."""
    root = tmp_path_factory.mktemp("monitor-cli")
    store = root / "monitor.db"
    val = asset("coco/images/val2017")
    dark = root / "dark"
    dark.mkdir()
    for photo in sorted(val.glob("*.jpg")):
        cv2.imwrite(str(dark / photo.name), (cv2.imread(str(photo)) * 0.4).astype("uint8"))
    for tag, folder in (("reference-run", val), ("night", dark)):
        done = cli("detect", folder, "-m", yolox_spec, "--out", root / tag, "--monitor", store, "--monitor-tag", tag)
        assert done.returncode == 0, describe(done)
    done = cli("monitor", "reference", store, "--tag", "reference-run")
    assert done.returncode == 0, describe(done)
    assert json.loads(done.stdout)["images"] == 64
    return store, root


def test_check_quiet_on_the_reference_run_itself(cli, monitored):
    store, _ = monitored
    done = cli("monitor", "check", store, "--tag", "reference-run")
    assert done.returncode == 0, describe(done)
    assert "drift in none" in done.stdout


def test_check_alerts_with_exit_3_on_darkened_photos(cli, monitored):
    store, root = monitored
    alerts = root / "alerts.jsonl"
    done = cli("monitor", "check", store, "--tag", "night", "--last", "64", "--json", "--alerts-file", alerts)
    assert done.returncode == 3, describe(done)
    result = json.loads(done.stdout)
    assert "brightness" in result["drifted"]
    fired = {a["rule"] for a in result["alerts"] if a["firing"]}
    assert "image-drift" in fired
    assert json.loads(alerts.read_text().splitlines()[0])["rule"] in fired


def test_labels_and_report(cli, monitored, asset):
    store, root = monitored
    done = cli(
        "monitor", "labels", store, "--tag", "reference-run",
        "--annotations", asset("coco/annotations/instances_val2017_dev64.json"),
    )  # fmt: skip
    assert done.returncode == 0, describe(done)
    accuracy = json.loads(done.stdout)
    assert accuracy["matched_images"] == 64 and 0.2 < accuracy["overall"]["map_50"] < 0.8
    report = root / "report" / "monitor.html"
    done = cli("monitor", "report", store, "--out", report, "--tag", "night", "--last", "64")
    assert done.returncode == 0, describe(done)
    assert "drift-table" in report.read_text() and json.loads(report.with_suffix(".json").read_text())["check"]


def test_errors_are_one_line(cli, tmp_path):
    done = cli("monitor", "check", tmp_path / "empty.db")
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and "no reference" in done.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {metric: brightness_typo}\n")
    done = cli("monitor", "check", tmp_path / "empty.db", "--rules", rules)
    assert done.returncode == 1 and "unknown metric" in done.stderr and "Traceback" not in done.stderr
    done = cli("monitor", "check", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 1 and "cannot open monitor store" in done.stderr


def test_video_with_monitor_and_metrics_port(cli, asset, yolox_spec, tmp_path):
    import socket
    import threading
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "video.db"
    clip = asset("video/car-detection.mp4")
    scraped: list[str] = []
    finished = threading.Event()

    def scrape() -> None:  # poll /metrics while the command runs (played at 10x its pace: ~3 s)
        while not finished.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    scraped.append(response.read().decode())
            except OSError:
                pass
            time.sleep(0.1)

    poller = threading.Thread(target=scrape, daemon=True)
    poller.start()
    try:
        done = cli(
            "video", clip, "-m", yolox_spec, "--stride", "10", "--realtime", "--speed", "10", "--monitor", store,
            "--monitor-tag", "cars", "--metrics-port", port,
        )  # fmt: skip
    finally:
        finished.set()
        poller.join(5)
    assert done.returncode == 0, describe(done)
    assert scraped, "the metrics endpoint never answered while the video ran"
    assert "visionpipe_images_total" in scraped[-1] and "visionpipe_video_frames_captured_total" in scraped[-1]
    processed = json.loads(done.stdout)["processed"]
    from visionpipe.monitor import Store

    with Store.open(store) as opened:
        assert len(opened.records(tag="cars")) == processed > 0
