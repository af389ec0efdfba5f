"""Monitor + SQLite store on synthetic results: acknowledgement, windows, retention, references."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.monitor import Monitor, MonitorDataError, Store, check, freeze_reference
from visionpipe.monitor.monitor import decode_detections, encode_detections
from visionpipe.results import StageTimes


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(i: int, n_boxes: int, conf: float = 0.8, error: Exception | None = None):
    rng = np.random.default_rng(i)
    xy = rng.uniform(0, 300, (n_boxes, 2))
    dets = Detections(
        xyxy=np.hstack([xy, xy + 20]),
        confidence=np.full(n_boxes, conf),
        class_id=np.arange(n_boxes) % 2,
        class_names=("person", "car"),
    )
    return SimpleNamespace(
        image_id=f"img{i}.jpg",
        detections=None if error else dets,
        error=error,
        image_size=(480, 640),
        times=StageTimes(decode=0.001, preprocess=0.002, infer=0.01, postprocess=0.001),
    )


def test_flush_acknowledges_committed_records_and_windows(tmp_path):
    clock = FakeClock()
    image = np.full((48, 64, 3), 100, np.uint8)
    with Monitor(tmp_path / "m.db", clock=clock, window_seconds=60, batch_size=1000, flush_seconds=60) as monitor:
        for i in range(10):
            monitor.observe(result(i, n_boxes=i % 3), image=image)
        assert monitor.flush() == 10  # committed although the batch was not full and not due
        clock.now += 60  # the next window
        monitor.observe(result(10, 0, error=ValueError("corrupt")))
        assert monitor.flush() == 11
        store = monitor.store
        rows = store.records()
        assert [r[3] for r in rows] == [f"img{i}.jpg" for i in range(11)]
        assert rows[-1][4] == "corrupt"
        features = json.loads(rows[1][5])
        assert features["count"] == 1 and features["brightness"] == pytest.approx(100, abs=1)
        assert json.loads(rows[2][6]) == {"person": 1, "car": 1}
        stats = {(w[0], w[2]): w for w in store.window_stats()}
        start = clock.now - 60 - (clock.now - 60) % 60
        assert stats[(start, "count")][3] == 10 and stats[(start, "count")][4] == sum(i % 3 for i in range(10))
        assert stats[(start, "classes")][9] == {"person": 6, "car": 3}
        assert store.integrity() == "ok"


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_writer_commits_without_a_flush_when_a_batch_is_full_or_due(tmp_path):
    # full: the writer is woken by the batch, long before its poll (flush_seconds / 4 = 15 s)
    with Monitor(tmp_path / "full.db", batch_size=5, flush_seconds=60) as monitor:
        for i in range(5):
            monitor.observe(result(i, 1))
        assert wait_until(lambda: monitor.written == 5, timeout=5)
    # due: one record, committed flush_seconds after it arrived
    with Monitor(tmp_path / "due.db", batch_size=1000, flush_seconds=0.2) as monitor:
        monitor.observe(result(0, 1))
        assert wait_until(lambda: monitor.written == 1, timeout=5)


def test_class_names_are_saved_from_the_detections_without_raw_rows(tmp_path):
    with Monitor(tmp_path / "m.db", keep_raw=False) as monitor:
        monitor.observe(result(0, 2))
        monitor.flush()
        assert monitor.store.get_meta("class_names") == ["person", "car"]
        assert monitor.store.records() == []


def test_window_histograms_use_the_reference_bins_and_sum_over_writers(tmp_path):
    clock = FakeClock()
    path = tmp_path / "m.db"
    with Monitor(path, clock=clock, tag="ref") as monitor:
        for i in range(40):
            monitor.observe(result(i, n_boxes=i % 5))
        monitor.flush()
        spec = freeze_reference(monitor.store, "r", tag="ref", clock=clock)
    edges = spec["edges"]["count"]
    assert edges[0] == -np.inf and edges[-1] == np.inf
    writers = [Monitor(path, clock=clock, tag="live") for _ in range(2)]
    for monitor in writers:
        for i in range(10):
            monitor.observe(result(100 + i, n_boxes=4))
        monitor.close()
    with Store.open(path) as store:
        live = next(w for w in store.window_stats("live") if w[2] == "count")
    assert live[3] == 20 and live[8] == "r"
    counts = live[9]
    assert sum(counts) == 20 and counts[int(np.searchsorted(edges[1:-1], 4, side="right"))] == 20


def test_retention_deletes_old_raw_rows_but_keeps_windows(tmp_path):
    clock = FakeClock()
    with Monitor(tmp_path / "m.db", clock=clock, retention_seconds=3600, window_seconds=600) as monitor:
        for i in range(5):
            monitor.observe(result(i, 1))
        monitor.flush()
        clock.now += 7200
        monitor.observe(result(99, 1))
        monitor.flush()
        assert [r[3] for r in monitor.store.records()] == ["img99.jpg"]
        assert len({w[0] for w in monitor.store.window_stats()}) == 2


def test_detections_survive_the_store_exactly():
    dets = result(3, 4, conf=0.123456789).detections
    back = decode_detections(encode_detections(dets), dets.class_names)
    assert np.array_equal(back.xyxy, dets.xyxy) and np.array_equal(back.confidence, dets.confidence)
    assert np.array_equal(back.class_id, dets.class_id)


def test_check_needs_a_reference_and_data(tmp_path):
    with Monitor(tmp_path / "m.db") as monitor:
        with pytest.raises(MonitorDataError, match="no reference"):
            check(monitor.store)
        with pytest.raises(MonitorDataError, match="at least"):
            freeze_reference(monitor.store, "empty")


def test_a_bad_result_is_skipped_not_raised(tmp_path):
    with Monitor(tmp_path / "m.db") as monitor:
        monitor.observe(SimpleNamespace(image_id="x", detections="not detections", image_size=None))
        monitor.observe(result(1, 2))
        assert monitor.flush() == 1


def test_a_time_range_past_retention_is_checked_on_the_window_histograms(tmp_path):
    from scipy import stats

    clock = FakeClock(3_600_000.0)
    rng = np.random.default_rng(3)
    path = tmp_path / "m.db"
    with Monitor(path, clock=clock, tag="ref") as monitor:
        for i in range(300):
            monitor.observe(result(i, 1), image_features={"brightness": float(rng.normal(100, 10))})
        monitor.flush()
        spec = freeze_reference(monitor.store, "r", clock=clock)
    # later writers keep no raw rows: only window statistics over the reference's bins
    for tag, mean in (("same", 100), ("dark", 80)):
        with Monitor(path, clock=clock, tag=tag, keep_raw=False, window_seconds=3600) as monitor:
            for i in range(200):
                monitor.observe(result(i, 1), image_features={"brightness": float(rng.normal(mean, 10))})
    with Store.open(path) as store:
        assert not store.records(tag="dark")
        same = check(store, tag="same", since=clock.now - 3600)
        dark = check(store, tag="dark", since=clock.now - 3600)
        live = next(w for w in store.window_stats("dark") if w[2] == "brightness")
    assert same.window["source"] == "histograms" and same.window["images"] == 200
    assert "brightness" not in same.drifted and "brightness" in dark.drifted
    chi2 = next(r for r in dark.results if r.feature == "brightness" and r.test == "chi2_binned")
    ref_counts = np.bincount(
        np.searchsorted(np.asarray(spec["edges"]["brightness"][1:-1]), spec["samples"]["brightness"], side="right"),
        minlength=len(live[9]),
    )
    table = np.vstack([ref_counts, live[9]])
    table = table[:, table.sum(axis=0) > 0]
    assert chi2.statistic == pytest.approx(stats.chi2_contingency(table, correction=False)[0], rel=1e-12)
    assert dark.levels["count_mean"] == 1.0


def test_detections_written_as_decimal_lists_still_read():
    """Stores written before detections were base64 keep their decimal lists."""
    text = '{"xyxy":[1.5,2.0,30.25,40.0],"confidence":[0.30000001192092896],"class_id":[2]}'
    back = decode_detections(text, ("a", "b", "c"))
    assert back.xyxy.tolist() == [[1.5, 2.0, 30.25, 40.0]] and back.class_names[back.class_id[0]] == "c"
    assert back.confidence.dtype == np.float32 and back.confidence[0] == np.float32(0.3)
