"""Batch formation, backpressure and deadlines of the dynamic batcher, on a fake clock."""

from __future__ import annotations

import threading
from collections import deque

import pytest

from visionpipe.serve.batcher import (
    BatcherClosedError,
    BatchItem,
    DeadlineExceededError,
    DynamicBatcher,
    QueueFullError,
    take_batch,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def items(*sizes: int) -> deque[BatchItem]:
    return deque(BatchItem(payload=i, size=s, enqueued=0.0) for i, s in enumerate(sizes))


def test_take_batch_counts_each_requests_own_images_and_keeps_order():
    queue = items(3, 2, 4, 1)
    assert [i.payload for i in take_batch(queue, 8)] == [0, 1]  # 3 + 2; the 4 would make 9
    assert [i.payload for i in take_batch(queue, 8)] == [2, 3]
    assert take_batch(items(), 8) == []
    # never skips ahead of a request that does not fit, so big requests cannot starve
    queue = items(2, 7, 1)
    assert [i.payload for i in take_batch(queue, 8)] == [0]


def echo(payloads):
    return [f"done {p}" for p in payloads]


def test_a_batch_closes_when_full_or_when_its_oldest_request_has_waited():
    clock = FakeClock()
    batcher = DynamicBatcher(echo, max_batch_size=4, max_queue_delay=0.010, max_queue=16, clock=clock)
    for k in range(5):
        batcher.submit(k, size=1)
    assert batcher.depth == 5
    full = batcher._next_batch()  # 5 images waiting >= 4: closes at once, no time passes
    assert [i.payload for i in full] == [0, 1, 2, 3]
    assert batcher.depth == 1
    clock.now += 0.010  # the remaining request has now waited the full delay
    assert [i.payload for i in batcher._next_batch()] == [4]


def test_full_queue_is_refused_at_once_with_retry_after():
    clock = FakeClock()
    batcher = DynamicBatcher(echo, max_batch_size=2, max_queue=4, clock=clock)
    batcher.submit("a", size=2)
    batcher.expect(size=2)  # being decoded: its room is reserved
    with pytest.raises(QueueFullError) as refused:
        batcher.expect(size=1)  # refused before any work is done for it
    assert refused.value.retry_after >= 1
    with pytest.raises(QueueFullError):
        batcher.submit("c", size=1)
    batcher.submit("b", size=2, expected=True)
    assert batcher.depth == 4
    assert batcher.counters["rejected"] == 2
    with pytest.raises(ValueError, match="max_batch_size"):
        batcher.submit("too big", size=3)


def test_expired_requests_are_dropped_not_computed():
    clock = FakeClock()
    ran = []
    batcher = DynamicBatcher(lambda ps: ran.extend(ps) or ps, max_batch_size=4, clock=clock)
    late = batcher.submit("late", deadline=clock.now + 1)
    on_time = batcher.submit("on time", deadline=clock.now + 5)
    clock.now += 2
    batcher._run(batcher._next_batch())
    with pytest.raises(DeadlineExceededError):
        late.result(0)
    assert on_time.result(0) == "on time"
    assert ran == ["on time"]
    assert batcher.counters["expired"] == 1


def test_cancelled_requests_are_skipped_and_errors_reach_every_request_of_the_batch():
    clock = FakeClock()

    def fail(payloads):
        raise RuntimeError("model exploded")

    batcher = DynamicBatcher(fail, max_batch_size=3, clock=clock)  # three requests fill a batch
    gone = batcher.submit("gone")
    first, second = batcher.submit("x"), batcher.submit("y")
    gone.cancel()
    batcher._run(batcher._next_batch())
    for future in (first, second):
        with pytest.raises(RuntimeError, match="exploded"):
            future.result(0)
    assert gone.cancelled()


def test_lanes_run_batches_and_stop_drains_the_queue():
    seen = []

    def record(payloads):
        seen.append(list(payloads))
        return payloads

    # a delay far beyond the test: batches can only close by being full, or by stop()
    batcher = DynamicBatcher(record, max_batch_size=3, max_queue_delay=3600, max_queue=10, lanes=2).start()
    batcher.expect()  # a request being decoded that never arrives: the last batch waits for it
    futures = [batcher.submit(k) for k in range(4)]
    assert [f.result(10) for f in futures[:3]] == [0, 1, 2]
    assert not futures[3].done()
    batcher.stop(timeout=10)  # takes no more, finishes what it holds
    assert futures[3].result(0) == 3
    assert sorted(len(b) for b in seen) == [1, 3]
    with pytest.raises(BatcherClosedError):
        batcher.submit(5)


def test_a_lone_request_does_not_wait_but_an_announced_one_is_waited_for():
    clock = FakeClock()
    batcher = DynamicBatcher(echo, max_batch_size=4, max_queue_delay=3600, clock=clock)
    batcher.submit("alone")
    assert [i.payload for i in batcher._next_batch()] == ["alone"]  # nobody else coming: at once
    batcher.expect()
    batcher.expect()
    batcher.submit("first", expected=True)
    closed: list = []
    waiter = threading.Thread(target=lambda: closed.append(batcher._next_batch()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # one more is on its way: the batch waits for it
    batcher.submit("second", expected=True)
    waiter.join(10)
    assert [i.payload for i in closed[0]] == ["first", "second"]
    batcher.expect()
    batcher.withdraw()  # an announced request failed before it was submitted
    batcher.submit("third")
    assert [i.payload for i in batcher._next_batch()] == ["third"]


def test_a_lone_announced_request_runs_in_the_callers_thread_only_when_batching_gains_nothing():
    clock = FakeClock()
    batcher = DynamicBatcher(echo, max_batch_size=4, lanes=1, clock=clock)
    batcher.expect()
    assert batcher.run_now("alone") == (True, "done alone")
    assert batcher.counters["batches"] == 1 and batcher._expected == 0
    batcher.expect()
    batcher.expect()  # someone else is arriving: better to batch with them
    assert batcher.run_now("first") == (False, None)
    batcher.submit("first", expected=True)
    assert batcher.run_now("second") == (False, None)  # something is queued: join it instead
