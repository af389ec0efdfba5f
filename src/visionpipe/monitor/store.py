"""Where monitoring data lives: SQLite by default, PostgreSQL by URL, one schema for both.

Tables:
- ``records``: optional raw per-image rows (features, class counts, detections), deleted after
  the retention period; drift checks on "the last N images" and accuracy ingestion read them.
- ``window_stats``: constant-size history. For every time window, tag, feature and writing process:
  count, sum, sum of squares, min, max, and a histogram over the bins of the reference in force
  when the window was written (class counts for the pseudo-feature ``classes``). Each process
  writes its own rows (``writer``), replacing them as its window fills, so several processes or
  machines can write to one PostgreSQL database without read-modify-write races; readers sum.
- ``reference_sets``: frozen references (capped samples per feature, bin edges, class counts).
- ``accuracy``: mAP per window once labels arrive. ``alert_state`` / ``alerts``: alerting.
- ``meta``: schema version, class names.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed batch survives the writer being
killed (and power loss); the monitor commits in batches and acknowledges only committed records.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from visionpipe.errors import MissingExtraError, StoreError

SCHEMA_VERSION = 1


def _schema(serial: str, real: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS records (
            id {serial},
            ts {real} NOT NULL,
            tag TEXT NOT NULL,
            image_id TEXT NOT NULL,
            error TEXT,
            features TEXT NOT NULL,
            classes TEXT NOT NULL,
            detections TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS records_ts ON records (ts)",
        "CREATE INDEX IF NOT EXISTS records_tag ON records (tag, id)",
        "CREATE INDEX IF NOT EXISTS records_image ON records (image_id)",
        f"""CREATE TABLE IF NOT EXISTS window_stats (
            window_start {real} NOT NULL,
            tag TEXT NOT NULL,
            feature TEXT NOT NULL,
            writer TEXT NOT NULL,
            n BIGINT NOT NULL,
            total {real} NOT NULL,
            total_sq {real} NOT NULL,
            min_value {real},
            max_value {real},
            reference TEXT,
            counts TEXT,
            PRIMARY KEY (window_start, tag, feature, writer)
        )""",
        f"""CREATE TABLE IF NOT EXISTS reference_sets (
            name TEXT PRIMARY KEY,
            created {real} NOT NULL,
            spec TEXT NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS accuracy (
            window_start {real} NOT NULL,
            tag TEXT NOT NULL,
            evaluated {real} NOT NULL,
            images BIGINT NOT NULL,
            map_50_95 {real},
            map_50 {real},
            per_class TEXT NOT NULL,
            PRIMARY KEY (window_start, tag)
        )""",
        f"""CREATE TABLE IF NOT EXISTS alert_state (
            key TEXT PRIMARY KEY,
            active INTEGER NOT NULL,
            fired_at {real},
            value {real}
        )""",
        f"""CREATE TABLE IF NOT EXISTS alerts (
            id {serial},
            ts {real} NOT NULL,
            rule TEXT NOT NULL,
            metric TEXT NOT NULL,
            value {real},
            threshold {real},
            message TEXT NOT NULL
        )""",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ]


def clean(value: float | None) -> float | None:
    """NaN and infinities as None (SQL NULL / JSON null)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class Store:
    """A connection to a monitoring database; thread-safe (one connection behind a lock).

    ``Store.open("monitor.db")`` or ``Store.open("postgresql://user@host/db")``.
    """

    placeholder = "?"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.location = ""

    @staticmethod
    def open(location: str | Path) -> Store:
        text = str(location)
        if text.startswith(("postgresql://", "postgres://")):
            return PostgresStore(text)
        return SqliteStore(Path(text))

    # -- backend hooks ------------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def transaction(self):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._execute(self.sql(text), params)

    # -- writing ------------------------------------------------------------------------------

    def write_batch(self, records: Sequence[tuple], window_rows: Sequence[tuple]) -> None:
        """Insert raw records and replace this writer's window rows, in one transaction.

        A record is (ts, tag, image_id, error, features_json, classes_json, detections_json or None);
        a window row is (window_start, tag, feature, writer, n, total, total_sq, min, max, reference, counts_json).
        """
        with self.lock, self.transaction():
            if records:
                self._executemany(
                    self.sql(
                        "INSERT INTO records (ts, tag, image_id, error, features, classes, detections) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)"
                    ),
                    records,
                )
            if window_rows:
                self._executemany(
                    self.sql(
                        "INSERT INTO window_stats (window_start, tag, feature, writer, n, total, total_sq, "
                        "min_value, max_value, reference, counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (window_start, tag, feature, writer) DO UPDATE SET n = excluded.n, "
                        "total = excluded.total, total_sq = excluded.total_sq, min_value = excluded.min_value, "
                        "max_value = excluded.max_value, reference = excluded.reference, counts = excluded.counts"
                    ),
                    window_rows,
                )

    def delete_records_before(self, ts: float) -> None:
        with self.lock, self.transaction():
            self._execute(self.sql("DELETE FROM records WHERE ts < ?"), (ts,))

    def set_meta(self, key: str, value: Any) -> None:
        with self.lock, self.transaction():
            self._execute(
                self.sql(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    # -- reading ------------------------------------------------------------------------------

    def records(
        self,
        *,
        tag: str | None = None,
        last: int | None = None,
        since: float | None = None,
        until: float | None = None,
        image_ids: Sequence[str] | None = None,
        columns: str = "id, ts, tag, image_id, error, features, classes, detections",
    ) -> list[tuple]:
        """Raw records in insertion order, filtered; ``last`` keeps the newest N of those."""
        where: list[str] = []
        params: list[Any] = []
        if tag is not None:
            where.append("tag = ?")
            params.append(tag)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        if last is not None:
            rows = self.query(f"SELECT {columns} FROM records{clause} ORDER BY id DESC LIMIT ?", (*params, int(last)))
            rows.reverse()
        else:
            rows = self.query(f"SELECT {columns} FROM records{clause} ORDER BY id", params)
        if image_ids is not None:
            wanted = set(image_ids)
            rows = [r for r in rows if r[3] in wanted]
        return rows

    def count_records(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM records")[0][0])

    def window_stats(self, tag: str | None = None) -> list[tuple]:
        """(window_start, tag, feature, n, total, total_sq, min, max, reference, counts) summed over writers."""
        rows = self.query(
            "SELECT window_start, tag, feature, n, total, total_sq, min_value, max_value, reference, counts "
            "FROM window_stats" + (" WHERE tag = ?" if tag is not None else "") + " ORDER BY window_start",
            (tag,) if tag is not None else (),
        )
        merged: dict[tuple, list] = {}
        for start, row_tag, feature, n, total, total_sq, lo, hi, ref, counts in rows:
            key = (start, row_tag, feature)
            item = merged.get(key)
            parsed = json.loads(counts) if counts else None
            if item is None:
                merged[key] = [start, row_tag, feature, n, total, total_sq, lo, hi, ref, parsed]
                continue
            item[3] += n
            item[4] += total
            item[5] += total_sq
            item[6] = lo if item[6] is None else (item[6] if lo is None else min(item[6], lo))
            item[7] = hi if item[7] is None else (item[7] if hi is None else max(item[7], hi))
            item[9] = _add_counts(item[9], parsed)
        return [tuple(v) for v in merged.values()]

    def save_reference(self, name: str, created: float, spec: dict) -> None:
        with self.lock, self.transaction():
            self._execute(
                self.sql(
                    "INSERT INTO reference_sets (name, created, spec) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET created = excluded.created, spec = excluded.spec"
                ),
                (name, created, json.dumps(spec)),
            )

    def reference(self, name: str | None = None) -> tuple[str, dict] | None:
        """The named reference, or the newest one; None when there is none."""
        if name is None:
            rows = self.query("SELECT name, spec FROM reference_sets ORDER BY created DESC, name LIMIT 1")
        else:
            rows = self.query("SELECT name, spec FROM reference_sets WHERE name = ?", (name,))
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def save_accuracy(self, rows: Sequence[tuple]) -> None:
        """(window_start, tag, evaluated, images, map_50_95, map_50, per_class_json) rows, replacing."""
        with self.lock, self.transaction():
            self._executemany(
                self.sql(
                    "INSERT INTO accuracy (window_start, tag, evaluated, images, map_50_95, map_50, per_class) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (window_start, tag) DO UPDATE SET "
                    "evaluated = excluded.evaluated, images = excluded.images, map_50_95 = excluded.map_50_95, "
                    "map_50 = excluded.map_50, per_class = excluded.per_class"
                ),
                rows,
            )

    def accuracy(self) -> list[tuple]:
        return self.query(
            "SELECT window_start, tag, evaluated, images, map_50_95, map_50, per_class FROM accuracy ORDER BY window_start"
        )

    def alert_state(self, key: str) -> tuple[bool, float | None]:
        rows = self.query("SELECT active, fired_at FROM alert_state WHERE key = ?", (key,))
        return (bool(rows[0][0]), rows[0][1]) if rows else (False, None)

    def set_alert_state(self, key: str, active: bool, fired_at: float | None, value: float | None) -> None:
        with self.lock, self.transaction():
            self._execute(
                self.sql(
                    "INSERT INTO alert_state (key, active, fired_at, value) VALUES (?, ?, ?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET active = excluded.active, fired_at = excluded.fired_at, value = excluded.value"
                ),
                (key, int(active), fired_at, clean(value)),
            )

    def log_alert(self, ts: float, rule: str, metric: str, value: float | None, threshold: float, message: str) -> None:
        with self.lock, self.transaction():
            self._execute(
                self.sql("INSERT INTO alerts (ts, rule, metric, value, threshold, message) VALUES (?, ?, ?, ?, ?, ?)"),
                (ts, rule, metric, clean(value), threshold, message),
            )

    def alerts(self, limit: int = 200) -> list[tuple]:
        rows = self.query(
            "SELECT ts, rule, metric, value, threshold, message FROM alerts ORDER BY id DESC LIMIT ?", (limit,)
        )
        rows.reverse()
        return rows


def _add_counts(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + v
        return out
    return [x + y for x, y in zip(a, b)]


class SqliteStore(Store):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.location = str(path)
        if path.is_dir():
            raise StoreError(f"monitor store {path} is a folder, not a database file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            with self.transaction():
                for statement in _schema("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL"):
                    self.connection.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open monitor store {path}: {exc}") from None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.connection.execute(sql, params).fetchall()

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store.connection.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest) -> None:
                store.connection.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def integrity(self) -> str:
        return self.connection.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self.connection.close()


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise MissingExtraError("psycopg", "monitor", "a PostgreSQL monitor store") from None
        self.location = url
        self.url = url
        try:
            self._connect()
            with self.transaction():
                # one schema creation at a time when several writers start together
                self.connection.execute("SELECT pg_advisory_xact_lock(727210)")
                for statement in _schema("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION"):
                    self.connection.execute(statement)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open monitor store {_redact(url)}: {' '.join(str(exc).split())}") from None

    def _connect(self) -> None:
        import psycopg

        self.connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.connection.closed or self.connection.broken:
            self._connect()
        cursor = self.connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(sql, list(rows))

    def transaction(self):
        if self.connection.closed or self.connection.broken:
            self._connect()  # the server restarted or dropped us: the writer's retry reconnects
        return self.connection.transaction()

    def close(self) -> None:
        self.connection.close()


def _redact(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
