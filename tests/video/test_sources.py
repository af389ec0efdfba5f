"""Video sources: state machine and events, reconnection with backoff, real and truncated clips,
image folders and open_source dispatch. Nothing here sleeps: clocks and sleeps are injected."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionpipe.errors import ImageDecodeError, VisionpipeError
from visionpipe.video.frames import Frame
from visionpipe.video.sources import (
    CaptureSource,
    ImageFolderSource,
    ReconnectPolicy,
    SourceEvent,
    SourceState,
    VideoSource,
    VideoSourceError,
    open_source,
)

CLIP = "video/one-by-one-person-detection.mp4"
CLIP_FRAMES = 1394  # MANIFEST
CLIP_FPS = 10.0

S = SourceState


# --- fakes ---------------------------------------------------------------------------------------
class FakeClock:
    """Advances by ``step`` on every call, and by the slept time when used with RecordingSleep."""

    def __init__(self, start: float = 1000.0, step: float = 0.25) -> None:
        self.now = start
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        self.now += self.step
        return self.now


class RecordingSleep:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


class FakeWorld:
    """A camera/stream/file behind a fake opener.

    ``script`` is consumed by reads across every capture opened: ``"f"`` serves a frame, ``"x"`` a
    failed read; an empty script fails every read. ``opens`` is consumed by opens (True: the
    capture opens); once empty every open succeeds. Each served frame is filled with its serial
    number, so a test can tell lost or repeated frames apart.
    """

    def __init__(self, script: str = "", opens=(), fps: float = 25.0, frame_count: float = 0.0, positions=True):
        self.script = list(script)
        self.opens = list(opens)
        self.fps = fps
        self.frame_count = frame_count
        self.positions = positions
        self.opened_with: list[object] = []
        self.captures: list[FakeCapture] = []
        self.served = 0

    def opener(self, target):
        self.opened_with.append(target)
        ok = self.opens.pop(0) if self.opens else True
        capture = FakeCapture(self, ok)
        self.captures.append(capture)
        return capture


class FakeCapture:
    def __init__(self, world: FakeWorld, ok: bool) -> None:
        self.world = world
        self.ok = ok
        self.released = False
        self.read_in_this_capture = 0

    def isOpened(self) -> bool:
        return self.ok and not self.released

    def read(self):
        if not self.isOpened() or not self.world.script:
            return False, None
        token = self.world.script.pop(0)
        if token == "x":
            return False, None
        image = np.full((4, 6, 3), self.world.served % 256, np.uint8)
        self.world.served += 1
        self.read_in_this_capture += 1
        return True, image

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.world.fps
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return self.world.frame_count
        if prop == cv2.CAP_PROP_POS_MSEC:
            if not self.world.positions:
                return 0.0
            return (self.read_in_this_capture - 1) * 1000.0 / self.world.fps  # the frame just read
        return 0.0

    def release(self) -> None:
        self.released = True


def record(source: VideoSource) -> list[SourceEvent]:
    events: list[SourceEvent] = []
    source.subscribe(events.append)
    return events


def states(events: list[SourceEvent]) -> list[SourceState]:
    return [e.state for e in events]


def values(frames: list[Frame]) -> list[int]:
    return [int(f.image[0, 0, 0]) for f in frames]


# --- state machine: files --------------------------------------------------------------------------
def test_file_source_goes_starting_running_ended_and_subscribers_see_it_in_order():
    world = FakeWorld("fffff", fps=25.0, frame_count=5)
    clock = FakeClock()
    sleep = RecordingSleep()
    source = CaptureSource("clip.mp4", opener=world.opener, clock=clock, sleep=sleep)
    first, second = record(source), record(source)
    assert source.state is S.STARTING and not source.live and source.kind == "file"

    with source:
        frames = list(source)

    assert states(first) == [S.STARTING, S.RUNNING, S.ENDED]
    assert [e.previous for e in first] == [None, S.STARTING, S.RUNNING]
    assert first == second  # every subscriber gets every event
    event_times = [e.time for e in first]
    assert event_times == sorted(event_times) and len(set(event_times)) == 3  # read from the clock
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert values(frames) == [0, 1, 2, 3, 4]
    assert [f.timestamp for f in frames] == pytest.approx([i / 25.0 for i in range(5)])  # file position
    captured = [f.captured_at for f in frames]
    assert captured == sorted(captured) and len(set(captured)) == 5
    assert first[1].time < captured[0] < captured[-1] < first[2].time
    assert source.failure is None and source.state is S.ENDED
    assert source.fps == 25.0 and source.frame_count == 5
    assert source.read() is None
    assert sleep.delays == [] and world.opened_with == ["clip.mp4"]
    assert world.captures[0].released


def test_unsubscribe_stops_events():
    world = FakeWorld("ff", frame_count=2)
    source = CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock())
    events = []
    unsubscribe = source.subscribe(events.append)
    source.open()
    unsubscribe()
    list(source)
    assert states(events) == [S.STARTING, S.RUNNING]
    assert source.state is S.ENDED


def test_file_that_stops_before_its_frame_count_ends_with_a_message():
    world = FakeWorld("ffffff", frame_count=10)
    source = CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock())
    events = record(source)
    frames = list(source)  # read() opens the source on first use
    assert len(frames) == 6
    assert source.state is S.ENDED
    assert "read 6 of 10 frames" in source.failure and "ended early" in source.failure
    assert events[-1].state is S.ENDED and events[-1].message == source.failure


def test_file_timestamp_falls_back_to_index_over_fps_when_the_backend_reports_no_position():
    world = FakeWorld("ffff", fps=8.0, frame_count=4, positions=False)
    frames = list(CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock()))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.125, 0.25, 0.375])


def test_a_failed_read_ends_a_file_without_reconnecting():
    world = FakeWorld("ffx" + "f" * 5)  # frame count unknown
    sleep = RecordingSleep()
    source = CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock(), sleep=sleep)
    frames = list(source)
    assert len(frames) == 2 and source.state is S.ENDED and source.failure is None
    assert sleep.delays == [] and len(world.opened_with) == 1


def test_close_ends_the_source_releases_the_capture_and_cannot_be_reopened():
    world = FakeWorld("f" * 10, frame_count=10)
    source = CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock())
    events = record(source)
    with source:
        assert source.read().index == 0
    assert states(events) == [S.STARTING, S.RUNNING, S.ENDED]
    assert events[-1].message == "closed"
    assert world.captures[0].released
    assert source.read() is None
    with pytest.raises(VideoSourceError):
        source.open()
    source.close()  # idempotent: no second ENDED
    assert len(events) == 3


def test_a_failing_subscriber_does_not_stop_the_source():
    world = FakeWorld("fff", frame_count=3)
    source = CaptureSource("clip.mp4", opener=world.opener, clock=FakeClock())

    def broken(event):
        raise RuntimeError("subscriber bug")

    source.subscribe(broken)
    events = record(source)
    assert len(list(source)) == 3
    assert states(events) == [S.STARTING, S.RUNNING, S.ENDED]


# --- reconnection --------------------------------------------------------------------------------
def test_reconnect_policy_delays_are_exponential_and_capped():
    policy = ReconnectPolicy(max_attempts=7, initial_delay=0.5, factor=2.0, max_delay=10.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert ReconnectPolicy().max_attempts == 5 and ReconnectPolicy().delay(0) == 0.5
    assert ReconnectPolicy(factor=3.0, initial_delay=1.0, max_delay=1e9).delay(4) == 81.0
    for bad in ({"max_attempts": -1}, {"factor": 0.5}, {"initial_delay": -1.0}):
        with pytest.raises(ValueError):
            ReconnectPolicy(**bad)


def test_live_stream_that_drops_and_recovers_reconnects_with_backoff():
    policy = ReconnectPolicy(max_attempts=5, initial_delay=0.5, factor=2.0, max_delay=10.0)
    # initial open ok; 2 frames; the read fails; 2 reopens fail, the 3rd opens; 3 more frames
    world = FakeWorld("ffx" + "fff", opens=[True, False, False, True])
    clock = FakeClock()
    sleep = RecordingSleep(clock)
    source = CaptureSource("rtsp://cam.local/stream", reconnect=policy, clock=clock, sleep=sleep, opener=world.opener)
    events = record(source)
    assert source.live and source.kind == "stream"

    frames = [source.read() for _ in range(5)]

    assert sleep.delays == [0.5, 1.0, 2.0]  # initial * factor**n, n = 0, 1, 2
    assert states(events) == [S.STARTING, S.RUNNING, S.RECONNECTING, S.RECONNECTING, S.RECONNECTING, S.RUNNING]
    assert [e.attempt for e in events[2:]] == [1, 2, 3, 3]
    assert events[2].previous is S.RUNNING and events[-1].previous is S.RECONNECTING
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]  # index keeps counting across the reconnect
    assert values(frames) == [0, 1, 2, 3, 4]  # nothing lost or repeated
    assert all(f.timestamp == f.captured_at for f in frames)  # live: capture time on the clock
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps)
    assert stamps[2] - stamps[1] >= 0.5 + 1.0 + 2.0  # the waits happened on the injected clock
    assert source.state is S.RUNNING and source.failure is None
    assert len(world.opened_with) == 4 and all(c.released for c in world.captures[:3])
    assert source.frame_count is None


def test_attempt_counter_resets_after_a_good_frame_but_not_after_a_bare_reopen():
    policy = ReconnectPolicy(max_attempts=5, initial_delay=0.5, factor=2.0)
    # two separate outages, each healed by the first reopen: each starts again at the first delay
    world = FakeWorld("fxfxf")
    sleep = RecordingSleep()
    source = CaptureSource("rtsp://a/b", reconnect=policy, clock=FakeClock(), sleep=sleep, opener=world.opener)
    frames = [source.read() for _ in range(3)]
    assert sleep.delays == [0.5, 0.5]
    assert [f.index for f in frames] == [0, 1, 2]

    # the reopen succeeds but its first read fails again: still the same outage, the delay grows
    world = FakeWorld("fxxf")
    sleep = RecordingSleep()
    source = CaptureSource("rtsp://a/b", reconnect=policy, clock=FakeClock(), sleep=sleep, opener=world.opener)
    frames = [source.read() for _ in range(2)]
    assert sleep.delays == [0.5, 1.0]
    assert [f.index for f in frames] == [0, 1]


def test_live_stream_that_never_recovers_fails_after_max_attempts():
    policy = ReconnectPolicy(max_attempts=4, initial_delay=0.5, factor=2.0, max_delay=3.0)
    world = FakeWorld("ff", opens=[True] + [False] * 50)
    sleep = RecordingSleep()
    source = CaptureSource("rtsp://cam/1", reconnect=policy, clock=FakeClock(), sleep=sleep, opener=world.opener)
    events = record(source)

    frames = list(source)

    assert len(frames) == 2
    assert sleep.delays == [0.5, 1.0, 2.0, 3.0]  # the last one capped at max_delay
    assert source.state is S.FAILED
    assert "4 reconnection attempts" in source.failure and "could not reopen" in source.failure
    assert states(events)[-1] is S.FAILED and events[-1].previous is S.RECONNECTING
    assert events[-1].message == source.failure
    assert states(events).count(S.RECONNECTING) == 4
    opens = len(world.opened_with)
    assert opens == 1 + 4
    assert source.read() is None and source.read() is None
    assert len(world.opened_with) == opens  # a failed source does not try again


def test_network_stream_that_cannot_open_goes_through_reconnect_instead_of_raising():
    world = FakeWorld("f", opens=[False, True])
    sleep = RecordingSleep()
    source = CaptureSource("http://host/live.m3u8", clock=FakeClock(), sleep=sleep, opener=world.opener)
    events = record(source)
    source.open()  # no exception
    assert states(events) == [S.STARTING, S.RECONNECTING, S.RUNNING]
    assert sleep.delays == [ReconnectPolicy().initial_delay]
    assert source.read().index == 0


def test_network_stream_that_never_opens_fails_without_raising():
    world = FakeWorld("", opens=[False] * 10)
    sleep = RecordingSleep()
    policy = ReconnectPolicy(max_attempts=2)
    source = CaptureSource(
        "udp://239.0.0.1:1234", reconnect=policy, clock=FakeClock(), sleep=sleep, opener=world.opener
    )
    source.open()
    assert source.state is S.FAILED and "could not" in source.failure
    assert len(sleep.delays) == 2 and source.read() is None


def test_close_interrupts_the_default_reconnection_wait():
    policy = ReconnectPolicy(max_attempts=3, initial_delay=60.0, max_delay=60.0)
    world = FakeWorld("fx")
    source = CaptureSource("rtsp://cam/1", reconnect=policy, opener=world.opener)  # default sleep
    reconnecting = threading.Event()
    source.subscribe(lambda e: reconnecting.set() if e.state is S.RECONNECTING else None)
    results = []
    reader = threading.Thread(target=lambda: results.extend([source.read(), source.read()]))
    started = time.monotonic()
    reader.start()
    assert reconnecting.wait(10)
    source.close()
    reader.join(10)
    assert not reader.is_alive()
    assert time.monotonic() - started < 30  # far less than the 60 s wait
    assert results[0].index == 0 and results[1] is None
    assert source.state is S.ENDED


def test_camera_that_cannot_be_opened_raises_and_gets_an_int_index():
    world = FakeWorld(opens=[False])
    source = CaptureSource("3", opener=world.opener, clock=FakeClock(), sleep=RecordingSleep())
    assert source.kind == "camera" and source.live
    with pytest.raises(VideoSourceError, match="camera index 3"):
        source.open()
    assert world.opened_with == [3]
    assert source.state is S.FAILED and source.read() is None


def test_camera_that_drops_reconnects():
    world = FakeWorld("fxf")
    sleep = RecordingSleep()
    source = CaptureSource(0, opener=world.opener, clock=FakeClock(), sleep=sleep)
    frames = [source.read(), source.read()]
    assert [f.index for f in frames] == [0, 1] and values(frames) == [0, 1]
    assert world.opened_with == [0, 0] and sleep.delays == [0.5]
    assert source.state is S.RUNNING


def test_credentials_are_kept_out_of_the_name_but_reach_the_opener():
    world = FakeWorld("f")
    source = CaptureSource("rtsp://admin:s3cret@10.0.0.2/live", opener=world.opener, clock=FakeClock())
    source.open()
    assert "s3cret" not in source.name and "admin" in source.name
    assert world.opened_with == ["rtsp://admin:s3cret@10.0.0.2/live"]


def test_live_flag_defaults_and_override():
    assert CaptureSource("movie.mp4").live is False
    assert CaptureSource(Path("movie.mp4")).live is False
    assert CaptureSource("rtmp://host/app").live is True
    assert CaptureSource(1).live is True
    assert CaptureSource("movie.mp4", live=True).live is True
    assert CaptureSource("rtsp://host/x", live=False).live is False


# --- real clips ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_run(asset):
    """Read the whole clip once; keep shapes and timestamps, not the pixels."""
    source = CaptureSource(asset(CLIP))
    events = record(source)
    shapes, indices, stamps, captured = set(), [], [], []
    with source:
        fps, count = source.fps, source.frame_count
        for frame in source:
            shapes.add(frame.image.shape)
            indices.append(frame.index)
            stamps.append(frame.timestamp)
            captured.append(frame.captured_at)
    return {"source": source, "events": events, "shapes": shapes, "indices": indices,
            "stamps": np.array(stamps), "captured": captured, "fps": fps, "count": count}  # fmt: skip


@pytest.mark.real
def test_real_clip_reads_every_frame_with_its_position(clip_run):
    assert clip_run["fps"] == pytest.approx(CLIP_FPS)
    assert clip_run["count"] == CLIP_FRAMES
    assert clip_run["indices"] == list(range(CLIP_FRAMES))
    assert clip_run["shapes"] == {(432, 768, 3)}
    stamps = clip_run["stamps"]
    assert np.all(np.diff(stamps) > 0)
    assert np.abs(stamps - np.arange(CLIP_FRAMES) / CLIP_FPS).max() < 0.5 / CLIP_FPS
    assert clip_run["captured"] == sorted(clip_run["captured"])
    source = clip_run["source"]
    assert states(clip_run["events"]) == [S.STARTING, S.RUNNING, S.ENDED]
    assert source.failure is None


@pytest.mark.real
def test_truncated_clip_ends_early_with_a_message_instead_of_crashing(asset, tmp_path):
    data = asset(CLIP).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.4)])

    source = CaptureSource(truncated)
    events = record(source)
    source.open()  # the clip's index (moov) sits at the front, so the cut file still opens
    assert source.frame_count == CLIP_FRAMES  # OpenCV reports the container's count, not what is left
    stamps = [frame.timestamp for frame in source]
    read = len(stamps)

    assert 0 < read < CLIP_FRAMES  # the frames before the cut decode (554 with FFmpeg in OpenCV 4.x/5.0)
    assert np.all(np.diff(stamps) > 0)
    assert source.state is S.ENDED
    assert source.failure == events[-1].message
    assert f"read {read} of {CLIP_FRAMES} frames" in source.failure and "ended early" in source.failure
    assert states(events) == [S.STARTING, S.RUNNING, S.ENDED]


def test_a_file_that_is_no_video_raises_on_open(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_bytes(b"this is plain text, not a video\n" * 200)
    source = CaptureSource(fake)
    with pytest.raises(VideoSourceError) as info:
        source.open()
    assert str(fake) in str(info.value) and "not a readable video" in info.value.cause
    assert isinstance(info.value, VisionpipeError)
    assert source.state is S.FAILED and source.failure == info.value.cause


def test_a_missing_file_raises_on_open(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoSourceError, match="file not found") as info:
        CaptureSource(missing).open()
    assert str(missing) in str(info.value)


def test_an_empty_file_and_a_folder_raise_with_their_cause(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoSourceError, match="empty file"):
        CaptureSource(empty).open()
    with pytest.raises(VideoSourceError, match="is a directory"):
        CaptureSource(tmp_path).open()


def test_an_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(b"\x00" * 100)
    # tests may run as root, who reads every file: make the access check say no instead of chmod
    monkeypatch.setattr("visionpipe.video.sources.os.access", lambda path, mode: False)
    with pytest.raises(VideoSourceError, match="permission denied"):
        CaptureSource(locked).open()


# --- image folders -------------------------------------------------------------------------------
def write_image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 10, 3), value, np.uint8))
    return path


@pytest.fixture
def sequence(tmp_path):
    """Five images in sort order 00..04 (one in a sub-folder); 02 is corrupt; plus a non-image."""
    root = tmp_path / "seq"
    write_image(root / "00.png", 0)
    write_image(root / "01.png", 10)
    (root / "02.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not an image")
    write_image(root / "03.bmp", 30)
    write_image(root / "z" / "04.png", 40)
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_reads_in_order_and_reports_a_corrupt_image_as_a_failed_frame(sequence):
    """An unreadable image is a frame with its error and no image (so the processor counts and
    reports it), not a silent gap."""
    source = ImageFolderSource(sequence, fps=5.0, clock=FakeClock())
    events = record(source)
    with source:
        frames = list(source)
    good = [f for f in frames if f.error is None]
    assert values(good) == [0, 10, 30, 40]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    bad = frames[2]
    assert bad.image is None and isinstance(bad.error, ImageDecodeError) and "02.png" in str(bad.error)
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert source.skipped == 1 and source.frame_count == 5 and source.fps == 5.0
    assert states(events) == [S.STARTING, S.RUNNING, S.RUNNING, S.ENDED]
    skip = events[2]
    assert skip.previous is S.RUNNING and "02.png" in skip.message and "unreadable" in skip.message
    assert source.state is S.ENDED and source.read() is None
    assert [p.name for p in source.paths] == ["00.png", "01.png", "02.png", "03.bmp", "04.png"]


def test_image_folder_without_fps_uses_the_index_as_timestamp(sequence):
    frames = list(ImageFolderSource(sequence, clock=FakeClock()))
    assert [f.timestamp for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(isinstance(f.timestamp, float) for f in frames)


def test_image_list_keeps_its_order_and_reports_a_missing_path(tmp_path):
    b = write_image(tmp_path / "b.png", 20)
    a = write_image(tmp_path / "a.png", 10)
    source = ImageFolderSource([b, tmp_path / "gone.png", a], fps=2.0, clock=FakeClock())
    frames = list(source)
    assert values([f for f in frames if f.error is None]) == [20, 10]
    assert [f.timestamp for f in frames] == [0.0, 0.5, 1.0]
    assert "file not found" in str(frames[1].error)
    assert source.skipped == 1


def test_image_folder_uses_the_injected_decoder(sequence):
    seen = []

    def decode(path):
        seen.append(path.name)
        return np.zeros((2, 2, 3), np.uint8)

    frames = list(ImageFolderSource(sequence, decode=decode, clock=FakeClock()))
    assert len(frames) == 5 and seen == ["00.png", "01.png", "02.png", "03.bmp", "04.png"]


def test_empty_or_missing_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    with pytest.raises(VideoSourceError, match="no images"):
        ImageFolderSource(tmp_path / "empty").open()
    with pytest.raises(VideoSourceError, match="folder not found"):
        ImageFolderSource(tmp_path / "missing").open()
    with pytest.raises(VideoSourceError, match="empty"):
        ImageFolderSource([]).open()


# --- open_source ---------------------------------------------------------------------------------
def test_open_source_dispatches_folders_lists_files_cameras_and_urls(sequence, tmp_path):
    folder = open_source(sequence, fps=4.0)
    assert isinstance(folder, ImageFolderSource) and folder.fps == 4.0
    assert isinstance(open_source(str(sequence)), ImageFolderSource)
    assert isinstance(open_source([sequence / "00.png"]), ImageFolderSource)

    movie = open_source(tmp_path / "movie.mp4")
    assert isinstance(movie, CaptureSource) and movie.kind == "file" and not movie.live

    stream = open_source("rtsp://host/stream")
    assert isinstance(stream, CaptureSource) and stream.kind == "stream" and stream.live


@pytest.mark.parametrize("spec", ["2", 2, " 2 "])
def test_open_source_sends_camera_indices_to_a_live_capture(spec):
    world = FakeWorld("ff")
    source = open_source(spec, opener=world.opener, clock=FakeClock(), sleep=RecordingSleep())
    assert isinstance(source, CaptureSource)
    assert source.kind == "camera" and source.live and source.name == "camera 2"
    with source:
        frame = source.read()
    assert world.opened_with == [2]  # an int, so OpenCV opens the device rather than a file "2"
    assert frame.index == 0 and frame.timestamp == frame.captured_at
