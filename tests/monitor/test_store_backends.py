"""The same store behaviour on SQLite and on a real PostgreSQL server; SIGKILL durability on both;
several processes writing to one PostgreSQL database at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.monitor import Monitor, Store, check, freeze_reference
from visionpipe.monitor.store import PostgresStore, SqliteStore

HELPER = Path(__file__).with_name("stream_records.py")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "monitor.db")
    return request.getfixturevalue("postgres_url")


def test_one_schema_two_backends(location):
    clock = SimpleNamespace(now=1_700_000_000.0)
    with Monitor(location, clock=lambda: clock.now, window_seconds=100) as monitor:
        assert isinstance(monitor.store, PostgresStore if location.startswith("postgresql") else SqliteStore)
        rng = np.random.default_rng(0)
        for i in range(60):
            clock.now += 5
            dets = Detections(xyxy=[[0, 0, 10, 10]], confidence=[0.9], class_id=[i % 2], class_names=("a", "b"))
            monitor.observe(
                SimpleNamespace(image_id=f"{i}.jpg", detections=dets, image_size=(100, 100)),
                image_features={"brightness": float(rng.normal(100 if i < 30 else 160, 5))},
            )
        monitor.flush()
        store = monitor.store
        freeze_reference(store, "first", until=1_700_000_000.0 + 151, clock=lambda: clock.now)
        result = check(store, last=30)
        assert [r.drift for r in result.results if r.feature == "brightness" and r.test == "ks"] == [True]
        assert len(store.records()) == 60 and store.reference()[0] == "first"
        windows = [w for w in store.window_stats() if w[2] == "classes"]
        assert [w[3] for w in windows] == [19, 20, 20, 1]  # 5 s apart from +5 s: windows of 100 s
        store.set_alert_state("k", True, 5.0, 1.0)
        assert store.alert_state("k") == (True, 5.0)


def _stream_and_kill(location: str, at_least: int) -> int:
    """Start a writer, kill it with SIGKILL after ``at_least`` acknowledgements; return the last one."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    process = subprocess.Popen([sys.executable, str(HELPER), location], stdout=subprocess.PIPE, text=True, env=env)
    acked = 0
    deadline = time.monotonic() + 120
    try:
        assert process.stdout is not None
        for line in process.stdout:
            acked = int(line.split()[1])
            if acked >= at_least or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGKILL)  # mid-stream: more records are in flight
        process.wait(30)
    assert process.returncode == -signal.SIGKILL and acked >= at_least
    return acked


def test_sigkill_loses_nothing_acknowledged(location):
    acked = _stream_and_kill(location, at_least=140)
    with Store.open(location) as store:
        ids = {row[3] for row in store.records(tag="stream")}
        assert {f"stream-{i}" for i in range(acked)} <= ids
        if isinstance(store, SqliteStore):
            assert store.integrity() == "ok"
        # the store still takes writes after the crash
    with Monitor(location, tag="after") as monitor:
        monitor.observe(SimpleNamespace(image_id="x"), image_features={"brightness": 1.0})
        assert monitor.flush() == 1


def test_several_processes_write_one_postgresql_database(postgres_url):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    writers = [
        subprocess.Popen(
            [sys.executable, str(HELPER), postgres_url, f"w{k}", "150"], stdout=subprocess.DEVNULL, env=env
        )
        for k in range(3)
    ]
    assert [w.wait(120) for w in writers] == [0, 0, 0]
    with Store.open(postgres_url) as store:
        for k in range(3):
            assert len(store.records(tag=f"w{k}")) == 150
            images = sum(w[3] for w in store.window_stats(f"w{k}") if w[2] == "classes")
            assert images == 150


def test_postgresql_connection_dropped_by_the_server_is_reopened(postgres_url):
    import psycopg

    with Monitor(postgres_url, tag="t", flush_seconds=0.05) as monitor:
        monitor.observe(SimpleNamespace(image_id="a"), image_features={"brightness": 1.0})
        monitor.flush()
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # the server ends our session
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        monitor.observe(SimpleNamespace(image_id="b"), image_features={"brightness": 2.0})
        assert monitor.flush(timeout=30) == 2
        assert monitor.write_errors >= 1  # the first attempt failed on the dead connection
        assert [r[3] for r in monitor.store.records(tag="t")] == ["a", "b"]


def test_a_store_that_will_not_commit_is_reported_on_flush(tmp_path):
    from visionpipe.errors import StoreError

    path = tmp_path / "m.db"
    monitor = Monitor(path, flush_seconds=0.05)
    blocker = Store.open(path)  # another process holds the write lock
    blocker.connection.execute("BEGIN EXCLUSIVE")
    monitor.store.connection.execute("PRAGMA busy_timeout = 50")
    try:
        monitor.observe(SimpleNamespace(image_id="a"), image_features={"brightness": 1.0})
        with pytest.raises(StoreError, match="did not commit within 1.0 s: database is locked"):
            monitor.flush(timeout=1.0)
        blocker.connection.execute("COMMIT")  # the lock goes away: the retry succeeds
        assert monitor.flush(timeout=10) == 1
    finally:
        monitor.close()
        blocker.close()
