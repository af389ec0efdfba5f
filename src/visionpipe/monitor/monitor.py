"""``Monitor``: what the pipeline, the video processor and the server call with every result.

The caller's thread does only cheap work: it copies the result's timings and puts the result's
detections on a bounded queue (a few microseconds). Image statistics are computed where the image
was decoded (``Pipeline`` calls :meth:`Monitor.image_features` in its decode threads), or from
``image=`` when the caller passes one. A writer thread computes the prediction statistics, turns
queued items into raw rows and window statistics and commits them in batches;
:meth:`Monitor.flush` returns once everything observed before it is committed, which is when a
record counts as acknowledged.
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.detections import Detections
from visionpipe.errors import StoreError
from visionpipe.monitor import features as feats
from visionpipe.monitor.store import Store, clean

log = logging.getLogger("visionpipe.monitor")

CLASSES = "classes"  # the pseudo-feature whose window histogram is the class mix


@dataclass
class Observation:
    ts: float
    tag: str
    image_id: str
    error: str | None
    values: dict[str, float]
    classes: dict[str, int]
    detections: Detections | None
    image_size: tuple[int, int] | None = None  # (height, width), for box areas relative to the image


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class Monitor:
    """Record per-image features, predictions, latencies and errors in a store.

    ``store`` is a path (SQLite), a ``postgresql://`` URL or a :class:`Store`. Use it as a context
    manager, or call :meth:`close`. ``clock`` gives record timestamps in seconds (wall-clock
    by default, so windows line up across processes). ``keep_raw`` keeps per-image rows for
    ``retention_seconds``; window statistics are always kept and stay constant-size per window.
    """

    def __init__(
        self,
        store: str | Path | Store,
        *,
        tag: str = "default",
        class_names: tuple[str, ...] = (),
        window_seconds: float = 3600.0,
        batch_size: int = 256,
        flush_seconds: float = 1.0,
        keep_raw: bool = True,
        retention_seconds: float = 30 * 86400.0,
        low_confidence: float = 0.5,
        max_queue: int = 50_000,
        reference: str | None = None,
        metrics=None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store.open(store)
        self._owns_store = not isinstance(store, Store)
        self.tag = tag
        self.window_seconds = float(window_seconds)
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.keep_raw = keep_raw
        self.retention_seconds = retention_seconds
        self.low_confidence = low_confidence
        self.metrics = metrics
        self.clock = clock
        self.writer_id = uuid.uuid4().hex[:12]
        self._names_saved = bool(class_names)
        self._class_names_seen: tuple[str, ...] = ()  # the first detections' names, saved on commit
        if class_names:
            self.store.set_meta("class_names", list(class_names))
        self.store.set_meta("window_seconds", self.window_seconds)
        found = self.store.reference(reference)
        self.reference_name: str | None = found[0] if found else None
        self.edges: dict[str, list[float]] = found[1].get("edges", {}) if found else {}
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._windows: dict[tuple[float, str, str], list] = {}
        self._dirty: set[tuple[float, str, str]] = set()
        self._lock = threading.Lock()
        self.observed = 0
        self.dropped = 0  # observations lost because the queue was full
        self.written = 0  # records committed
        self.write_errors = 0
        self.last_error: str | None = None
        self._last_purge = float("-inf")
        self._stop = threading.Event()
        # the writer sleeps until a batch is queued, a flush is asked for or its poll comes round:
        # woken for every record, it would take a core from inference for each image
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="visionpipe-monitor", daemon=True)
        self._thread.start()

    # -- the hot path ---------------------------------------------------------------------------

    def image_features(self, image: np.ndarray) -> dict[str, float]:
        """Image statistics of a decoded BGR frame (called by the pipeline where it decodes)."""
        return feats.image_features(image)

    def observe(
        self,
        result: Any,
        image: np.ndarray | None = None,
        *,
        image_features: Mapping[str, float] | None = None,
        tag: str | None = None,
    ) -> None:
        """Record one result: a pipeline ``Result`` or anything with ``image_id``, ``detections``,
        ``error``, ``image_size`` and ``times`` (all optional). Never raises."""
        try:
            values: dict[str, float] = {}
            computed = image_features or getattr(result, "image_features", None)
            if computed is None and image is not None:
                computed = feats.image_features(image)
            if computed:
                values.update(computed)
            size = getattr(result, "image_size", None)
            if size is None and image is not None:
                size = image.shape[:2]
            times = getattr(result, "times", None)
            if times is not None:
                for stage in ("decode", "preprocess", "infer", "postprocess"):
                    values[f"{stage}_seconds"] = float(getattr(times, stage, 0.0))
                values["total_seconds"] = float(getattr(times, "total", 0.0))
            error = getattr(result, "error", None)
            values["error"] = 0.0 if error is None else 1.0
            # prediction statistics are left to the writer thread, which computes them for a whole
            # batch with warm caches; here, between two images, they cost three times as much
            observation = Observation(
                ts=self.clock(),
                tag=tag or self.tag,
                image_id=str(getattr(result, "image_id", self.observed)),
                error=None if error is None else (str(error) or type(error).__name__),
                values=values,
                classes={},
                detections=getattr(result, "detections", None),
                image_size=size,
            )
        except Exception as exc:  # monitoring must never break inference
            log.warning("monitor could not read a result: %s", exc)
            return
        with self._lock:  # observe may be called from several threads (a server's workers)
            self.observed += 1
        if self.metrics is not None:
            self.metrics.observe(result)
        try:
            self._queue.put_nowait(observation)
        except queue.Full:
            with self._lock:
                self.dropped += 1
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    # -- acknowledgement and lifecycle ----------------------------------------------------------

    def flush(self, timeout: float | None = 60.0) -> int:
        """Block until everything observed so far is committed; return the records committed."""
        marker = _Flush()
        self._queue.put(marker)
        self._wake.set()
        if not marker.done.wait(timeout):
            cause = f": {self.last_error}" if self.last_error else ""
            raise StoreError(f"monitor store {self.store.location} did not commit within {timeout} s{cause}")
        return self.written

    def close(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.flush()
        finally:
            self._stop.set()
            self._wake.set()  # now rather than at the writer's next poll
            self._thread.join(10)
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the writer thread ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        pending: list[Observation] = []
        waiting: list[_Flush] = []
        first_at: float | None = None
        while not (self._stop.is_set() and self._queue.empty()):
            self._wake.wait(self.flush_seconds / 4)
            self._wake.clear()
            while True:  # take everything queued; observe() never waits for this
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Flush):
                    waiting.append(item)
                elif (observation := self._summarise(item)) is not None:
                    pending.append(observation)
                    first_at = first_at if first_at is not None else time.monotonic()
            due = first_at is not None and time.monotonic() - first_at >= self.flush_seconds
            if pending and (len(pending) >= self.batch_size or waiting or due or self._stop.is_set()):
                if self._commit(pending):
                    pending, first_at = [], None
                else:
                    if len(pending) > self._queue.maxsize:  # bounded, even while the store is down
                        self.dropped += len(pending) - self._queue.maxsize
                        pending = pending[-self._queue.maxsize :]
                    time.sleep(min(1.0, self.flush_seconds))  # retry without spinning
            if waiting and not pending:
                for marker in waiting:
                    marker.done.set()
                waiting = []
        if pending:
            log.error("monitor closed with %d records the store would not take", len(pending))
            self.dropped += len(pending)

    def _summarise(self, o: Observation) -> Observation | None:
        """Add the prediction statistics that :meth:`observe` left to this thread; None for a
        result whose detections cannot be read (skipped: one bad result never stops the rest).
        Called once per observation, as the writer takes it off the queue."""
        if o.detections is not None:
            try:
                o.values.update(feats.prediction_features(o.detections, o.image_size, self.low_confidence))
                o.classes = feats.class_counts(o.detections)
                if not self._names_saved and not self._class_names_seen:
                    self._class_names_seen = tuple(o.detections.class_names)
            except Exception as exc:
                log.warning("monitor could not read the detections of %s: %s", o.image_id, exc)
                return None
            if not self.keep_raw:
                o.detections = None
        return o

    def _commit(self, batch: list[Observation]) -> bool:
        records = []
        if not self._names_saved and self._class_names_seen:  # accuracy ingestion needs them
            self.store.set_meta("class_names", list(self._class_names_seen))
            self._names_saved = True
        for o in batch:
            self._aggregate(o)
            if self.keep_raw:
                records.append(
                    (
                        o.ts,
                        o.tag,
                        o.image_id,
                        o.error,
                        json.dumps(
                            {k: (v if math.isfinite(v) else None) for k, v in o.values.items()}, separators=(",", ":")
                        ),
                        json.dumps(o.classes, separators=(",", ":")),
                        None if o.detections is None else encode_detections(o.detections),
                    )
                )
        window_rows = [self._window_row(key) for key in self._dirty]
        try:
            self.store.write_batch(records, window_rows)
        except Exception as exc:
            self.write_errors += 1
            self.last_error = " ".join(str(exc).split())
            log.warning("monitor store write failed (will retry): %s", self.last_error)
            self._rebuild_after_failure(batch)
            return False
        self._dirty.clear()
        self.last_error = None
        self.written += len(batch)
        now = batch[-1].ts
        self._forget_old_windows(now)
        if self.keep_raw and now - self._last_purge > 60.0:
            self._last_purge = now
            try:
                self.store.delete_records_before(now - self.retention_seconds)
            except Exception as exc:
                log.warning("monitor retention purge failed: %s", exc)
        return True

    def _rebuild_after_failure(self, batch: list[Observation]) -> None:
        """Undo the batch's aggregation so the retry does not count it twice."""
        for o in batch:
            self._aggregate(o, sign=-1)

    def _aggregate(self, o: Observation, sign: int = 1) -> None:
        # plain Python on purpose: a few dozen floats per image, where NumPy calls cost more
        start = o.ts - o.ts % self.window_seconds
        windows, dirty, all_edges = self._windows, self._dirty, self.edges
        for name, value in o.values.items():
            if value is None or not math.isfinite(value):
                continue
            key = (start, o.tag, name)
            stats = windows.get(key)
            edges = all_edges.get(name)
            if stats is None:
                stats = windows[key] = [0, 0.0, 0.0, value, value, [0] * (len(edges) - 1) if edges else None]
            stats[0] += sign
            stats[1] += sign * value
            stats[2] += sign * value * value
            if sign > 0:
                if value < stats[3]:
                    stats[3] = value
                if value > stats[4]:
                    stats[4] = value
            if edges:
                stats[5][bisect.bisect_right(edges, value, 1, len(edges) - 1) - 1] += sign
            dirty.add(key)
        key = (start, o.tag, CLASSES)
        stats = windows.get(key)
        if stats is None:
            stats = windows[key] = [0, 0.0, 0.0, None, None, {}]
        stats[0] += sign  # images
        counts = stats[5]
        for name, count in o.classes.items():
            stats[1] += sign * count  # boxes
            counts[name] = counts.get(name, 0) + sign * count
        dirty.add(key)

    def _window_row(self, key: tuple[float, str, str]) -> tuple:
        n, total, total_sq, lo, hi, counts = self._windows[key]
        return (
            key[0],
            key[1],
            key[2],
            self.writer_id,
            n,
            total,
            total_sq,
            clean(lo),
            clean(hi),
            self.reference_name,
            None if counts is None else json.dumps(counts),
        )

    def _forget_old_windows(self, now: float) -> None:
        """Windows older than the previous one are complete: drop them from memory."""
        horizon = now - now % self.window_seconds - self.window_seconds
        for key in [k for k in self._windows if k[0] < horizon]:
            del self._windows[key]


def encode_detections(detections: Detections) -> str:
    """Detections as a short JSON text: the float32 boxes and scores and the int32 class ids as
    little-endian base64, exact by construction. (Decimal JSON lists cost 45 us per image to
    write, most of the writer's work, for 9 detections.)"""
    return json.dumps(
        {
            "xyxy": _b64(detections.xyxy, "<f4"),
            "confidence": _b64(detections.confidence, "<f4"),
            "class_id": _b64(detections.class_id, "<i4"),
        },
        separators=(",", ":"),
    )


def decode_detections(text: str, class_names: tuple[str, ...] = ()) -> Detections:
    data = json.loads(text)

    def column(name: str, dtype: str) -> np.ndarray:
        value = data[name]
        if isinstance(value, list):  # the decimal lists stores written before the base64 form hold
            return np.asarray(value, dtype=dtype)
        return np.frombuffer(base64.b64decode(value), dtype=dtype)

    return Detections(
        xyxy=column("xyxy", "<f4").astype(np.float32).reshape(-1, 4),
        confidence=column("confidence", "<f4").astype(np.float32),
        class_id=column("class_id", "<i4").astype(np.int64),
        class_names=class_names,
    )


def _b64(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


@contextmanager
def monitoring(
    pipeline: Any,
    store: str | Path | None = None,
    *,
    tag: str = "default",
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
    video: Any = None,
    **options: Any,
) -> Iterator[Monitor | Any | None]:
    """Attach a Monitor (``store``) and/or Prometheus metrics served on ``metrics_port`` to a
    pipeline for the duration of the block; flush and detach at the end. With ``video`` (a
    ``VideoProcessor``) the metrics also expose its frame counters."""
    metrics = None
    monitor: Any = None
    if metrics_port is not None:
        from visionpipe.monitor.metrics import Metrics

        metrics = Metrics(pipeline.class_names)
        if video is not None:
            metrics.watch_video(lambda: video.stats)
        metrics.serve(metrics_port, metrics_address)
    try:
        if store is not None:
            monitor = Monitor(store, tag=tag, class_names=pipeline.class_names, metrics=metrics, **options)
        else:
            monitor = metrics
        pipeline.monitor = monitor
        yield monitor
    finally:
        pipeline.monitor = None
        try:
            if isinstance(monitor, Monitor):
                monitor.close()
        finally:
            if metrics is not None:
                metrics.close()
