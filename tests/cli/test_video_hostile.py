"""``visionpipe video`` against streams that never answer, signals, bad outputs, unreadable frames
and empty videos, run as a user would. Streams are real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from .conftest import _environment, visionpipe_command
from .helpers import describe

pytestmark = pytest.mark.real

CLIP = "video/one-by-one-person-detection.mp4"


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/stream", accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*visionpipe_command(), "video", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )


def test_a_stream_that_never_answers_fails_after_its_timeouts_and_says_why(silent_server, yolox_spec):
    url, accepted = silent_server
    began = time.monotonic()
    proc = start(url, "-m", yolox_spec, "--open-timeout", "1", "--retries", "1")
    stdout, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - began
    assert proc.returncode == 2, stderr
    assert len(accepted) == 2  # the first attempt and one retry, each given up after 1 s
    summary = json.loads(stdout)
    assert summary["source_state"] == "failed"
    assert "source failed: gave up after 1 reconnection attempts" in stderr
    assert "Traceback" not in stderr
    assert took < 60  # model load + 2 x 1 s + 0.5 s backoff; the old defaults took ~200 s


def test_ctrl_c_while_a_stream_hangs_is_honoured_within_a_second(silent_server, yolox_spec):
    url, accepted = silent_server
    proc = start(url, "-m", yolox_spec, "--open-timeout", "60")
    deadline = time.monotonic() + 120
    while not accepted:  # the capture is connected and waiting for an answer that never comes
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 1.0, stderr
    assert proc.returncode == 130, stderr
    assert json.loads(stdout)["interrupted"] == "SIGINT"
    assert "Traceback" not in stderr


def test_sigterm_mid_video_leaves_a_playable_mp4_and_an_interrupted_summary(asset, yolox_spec, tmp_path):
    out, jsonl = tmp_path / "a.mp4", tmp_path / "f.jsonl"
    proc = start(asset(CLIP), "-m", yolox_spec, "--out", out, "--jsonl", jsonl, "--realtime", "--speed", "2")
    deadline = time.monotonic() + 120
    while not jsonl.exists() or len(jsonl.read_text().splitlines()) < 10:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] == "SIGTERM"
    assert summary["captured"] == summary["processed"] + summary["dropped_total"]
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == summary["processed"] > 0  # a finished container holding every processed frame
    assert len(jsonl.read_text().splitlines()) == summary["processed"]


def test_a_failed_run_keeps_the_previous_jsonl_log(cli, yolox_spec, tmp_path):
    log = tmp_path / "frames.jsonl"
    log.write_text('{"frame": 0}\n')
    proc = cli("video", tmp_path / "missing.mp4", "-m", yolox_spec, "--jsonl", log)
    assert proc.returncode in (1, 2), describe(proc)
    assert "file not found" in proc.stderr
    assert log.read_text() == '{"frame": 0}\n'


@pytest.mark.parametrize("target", ["folder", "clip.avi"])
def test_an_out_that_is_a_folder_or_not_mp4_is_a_usage_error(cli, asset, yolox_spec, tmp_path, target):
    out = tmp_path / target
    if target == "folder":
        out.mkdir()
    proc = cli("video", asset(CLIP), "-m", yolox_spec, "--out", out)
    assert proc.returncode == 1, describe(proc)
    assert "--out" in proc.stderr and ("folder" in proc.stderr or ".mp4" in proc.stderr)
    assert "Traceback" not in proc.stderr


def test_unreadable_images_of_a_folder_source_are_counted_as_errors(cli, asset, yolox_spec, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:3]
    for i, photo in enumerate(photos):
        shutil.copy(photo, folder / f"{2 * i:02d}.jpg")
    (folder / "01.jpg").write_bytes(b"not a picture")
    (folder / "03.jpg").write_bytes(photos[0].read_bytes()[:500])
    (folder / "05.jpg").symlink_to(tmp_path / "nowhere.jpg")
    proc = cli("video", folder, "-m", yolox_spec, "--jsonl", tmp_path / "f.jsonl")
    assert proc.returncode == 2, describe(proc)
    summary = json.loads(proc.stdout)
    assert summary["captured"] == 6 and summary["processed"] == 6 and summary["errors"] == 3, summary
    records = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(6))
    assert [bool(r["error"]) for r in records] == [False, True, False, True, False, True]


def test_a_video_with_no_frames_is_a_failed_source(cli, yolox_spec, tmp_path):
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    writer.release()  # a valid AVI header and no frame
    capture = cv2.VideoCapture(str(empty))
    assert capture.isOpened() and not capture.read()[0]  # it opens, and yields nothing
    capture.release()
    proc = cli("video", empty, "-m", yolox_spec)
    assert proc.returncode == 2, describe(proc)
    assert json.loads(proc.stdout)["source_state"] == "failed"
    assert "source failed: no frame could be read" in proc.stderr, describe(proc)


def test_the_first_line_is_ours_not_a_native_library_message(cli, yolox_spec, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(5000))
    proc = cli("video", bad, "-m", yolox_spec)
    assert proc.returncode in (1, 2), describe(proc)
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith(("error:", "source failed:")), describe(proc)
