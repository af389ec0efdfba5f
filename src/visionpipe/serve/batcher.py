"""Dynamic batching across requests, with a bounded queue and per-request deadlines.

Requests for one model version wait in one FIFO queue; ``lanes`` worker threads each take a batch
and run it. A batch closes when it holds ``max_batch_size`` images (a request's own images count)
or when its oldest request has waited ``max_queue_delay`` seconds, whichever comes first, so light
load is served after at most that delay and heavy load fills batches without waiting.

A batch also closes at once when no request is on its way: callers announce a request with
:meth:`DynamicBatcher.expect` before decoding it, so a lone request never waits for company that
is not coming (no added latency at concurrency 1), while under load the delay fills batches.

The queue is bounded in images: a request that does not fit is refused at once with
:class:`QueueFullError` (the server answers 503 with ``Retry-After``) instead of waiting behind
work it cannot catch up with. A request whose deadline has passed when a lane reaches it is dropped
with :class:`DeadlineExceededError` rather than computed for nobody.

Time comes from ``clock`` (seconds, monotonic), so batch formation and expiry are testable with a
fake clock; waiting itself uses the condition variable with timeouts computed from that clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from visionpipe.errors import BatcherClosedError, DeadlineExceededError, QueueFullError


@dataclass
class BatchItem:
    """One request waiting for inference: ``size`` images in ``payload``."""

    payload: Any
    size: int
    enqueued: float
    deadline: float | None = None
    future: Future = field(default_factory=Future)
    started: float | None = None  # when a lane took it: queue time = started - enqueued


@dataclass(frozen=True)
class BatchStats:
    """What one batch run looked like, for metrics."""

    images: int
    requests: int
    seconds: float


def take_batch(queue: deque[BatchItem], max_batch_size: int) -> list[BatchItem]:
    """Pop the oldest items that fit in one batch together (FIFO: never skips ahead)."""
    batch: list[BatchItem] = []
    images = 0
    while queue and images + queue[0].size <= max_batch_size:
        item = queue.popleft()
        batch.append(item)
        images += item.size
    return batch


class DynamicBatcher:
    """Run ``run_batch(payloads) -> results`` on batches formed from concurrent ``submit`` calls.

    ``run_batch`` receives the payloads of one batch and returns one result per payload (or raises:
    then every request of the batch gets that error). ``on_batch`` is called after each run with
    :class:`BatchStats` (metrics); ``on_depth`` whenever the queue depth in images changes.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 8,
        max_queue_delay: float = 0.002,
        max_queue: int = 64,
        lanes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        name: str = "model",
        on_batch: Callable[[BatchStats], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < max_batch_size or lanes < 1 or max_queue_delay < 0:
            raise ValueError(
                "need max_batch_size >= 1, max_queue >= max_batch_size, lanes >= 1 and max_queue_delay >= 0"
            )
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.max_queue = max_queue
        self.lanes = lanes
        self.clock = clock
        self.name = name
        self.on_batch = on_batch
        self.on_depth = on_depth
        self._queue: deque[BatchItem] = deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._busy_lanes = 0
        self._expected = 0  # requests announced (being decoded) but not yet submitted
        # a running estimate of one batch's run time, for Retry-After
        self._batch_seconds = 0.05
        self.counters = {"submitted": 0, "rejected": 0, "expired": 0, "batches": 0, "images": 0}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> DynamicBatcher:
        self._report_depth()  # the gauge exists (at 0) from the start
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._lane, name=f"batcher-{self.name}-{k}", daemon=True)
                for k in range(self.lanes)
            ]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish every queued one, then stop the lanes."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> DynamicBatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def depth(self) -> int:
        """Images waiting (not yet taken by a lane)."""
        return self._queued_images

    @property
    def idle(self) -> bool:
        return not self._queue and self._busy_lanes == 0

    # -- requests -----------------------------------------------------------------------------

    def expect(self, size: int = 1) -> None:
        """Announce a request of ``size`` images that will be submitted soon (``expected=True``).

        This is also admission: announced and queued images together stay within ``max_queue``,
        so an overloaded server refuses at once (:class:`QueueFullError`), before decoding.
        """
        with self._cond:
            if self._closing:
                raise BatcherClosedError(f"{self.name} is shutting down")
            if self._queued_images + self._expected + size > self.max_queue:
                self.counters["rejected"] += 1
                raise QueueFullError(
                    f"{self.name}: queue full ({self._queued_images} images queued, {self._expected} arriving)",
                    self.retry_after(),
                )
            self._expected += size

    def withdraw(self, size: int = 1) -> None:
        """Announced images that will not come (their request failed before submitting)."""
        with self._cond:
            self._expected = max(0, self._expected - size)
            self._cond.notify()

    def submit(self, payload: Any, size: int = 1, deadline: float | None = None, expected: bool = False) -> Future:
        """Queue a request of ``size`` images; its future gets ``run_batch``'s result for it.

        ``expected``: this request was announced with :meth:`expect`. Raises
        :class:`QueueFullError` at once when the queue has no room for ``size`` images.
        """
        if not 1 <= size <= self.max_batch_size:
            raise ValueError(f"a request of {size} images does not fit max_batch_size {self.max_batch_size}")
        with self._cond:
            if self._closing:
                raise BatcherClosedError(f"{self.name} is shutting down")
            if not expected and self._queued_images + self._expected + size > self.max_queue:
                self.counters["rejected"] += 1
                raise QueueFullError(f"{self.name}: queue full ({self._queued_images} images)", self.retry_after())
            if expected:  # its room was reserved by expect()
                self._expected = max(0, self._expected - size)
            item = BatchItem(payload, size, self.clock(), deadline)
            self._queue.append(item)
            self._queued_images += size
            self.counters["submitted"] += 1
            self._cond.notify()
        self._report_depth()
        return item.future

    def run_now(self, payload: Any, size: int = 1) -> tuple[bool, Any]:
        """Run an announced request in the caller's thread when batching it could gain nothing:
        nothing queued, nobody else arriving, a lane free. Returns (True, result), or (False, None)
        and the caller submits it as usual. The run takes a lane, so at most ``lanes`` runs overlap.

        This saves the hand-offs to a lane and back, which is most of a lone request's overhead.
        """
        with self._cond:
            if self._closing or self._queue or self._busy_lanes >= self.lanes or self._expected > size:
                return False, None
            self._busy_lanes += 1
            self._expected = max(0, self._expected - size)
        start = self.clock()
        try:
            (result,) = self.run_batch([payload])
        finally:
            seconds = self.clock() - start
            with self._cond:
                self._busy_lanes -= 1
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
                self.counters["submitted"] += 1
                self.counters["batches"] += 1
                self.counters["images"] += size
                self._cond.notify()
            if self.on_batch is not None:
                self.on_batch(BatchStats(images=size, requests=1, seconds=seconds))
        return True, result

    def retry_after(self) -> float:
        """Seconds until the current queue has likely drained (at least 1: HTTP counts in seconds)."""
        batches = math.ceil(self._queued_images / self.max_batch_size) / self.lanes
        return max(1.0, math.ceil(batches * self._batch_seconds))

    # -- lanes --------------------------------------------------------------------------------

    def _next_batch(self) -> list[BatchItem] | None:
        """Wait for a batch to close (full, or its oldest request's delay spent); None when stopping."""
        with self._cond:
            while True:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return None  # closing and drained
                now = self.clock()
                close_at = self._queue[0].enqueued + self.max_queue_delay
                if (
                    self._queued_images >= self.max_batch_size
                    or now >= close_at
                    or self._closing
                    or self._expected == 0  # nobody else is coming: waiting only adds latency
                ):
                    break
                self._cond.wait(close_at - now)
            batch = take_batch(self._queue, self.max_batch_size)
            self._queued_images -= sum(item.size for item in batch)
            self._busy_lanes += 1
            if self._queue:
                self._cond.notify()  # another lane may take the rest at once
        self._report_depth()
        return batch

    def _lane(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy_lanes -= 1

    def _run(self, batch: list[BatchItem]) -> None:
        now = self.clock()
        live = []
        for item in batch:
            item.started = now
            # the waiting side reads this to split its wait into queue and inference time
            item.future.queue_seconds = now - item.enqueued  # type: ignore[attr-defined]
            if not item.future.set_running_or_notify_cancel():
                continue  # the caller gave up (its own deadline) while it waited
            if item.deadline is not None and now >= item.deadline:
                with self._cond:
                    self.counters["expired"] += 1
                item.future.set_exception(DeadlineExceededError(f"{self.name}: deadline passed in the queue"))
                continue
            live.append(item)
        if not live:
            return
        start = self.clock()
        try:
            results = self.run_batch([item.payload for item in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} requests")
        except Exception as exc:
            for item in live:
                item.future.set_exception(exc)
            return
        finally:
            seconds = self.clock() - start
            images = sum(item.size for item in live)
            with self._cond:
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
                self.counters["batches"] += 1
                self.counters["images"] += images
            if self.on_batch is not None:
                self.on_batch(BatchStats(images=images, requests=len(live), seconds=seconds))
        for item, result in zip(live, results):
            item.future.set_result(result)

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self._queued_images)
