"""FrameBuffer: the three full-buffer policies, batch order and limits, close, drain.

Blocking is observed with threads: a producer or consumer that is expected to block is started,
joined with a tiny timeout (it must still be alive), then unblocked by the operation under test
and joined for real. Nothing sleeps.
"""

from __future__ import annotations

import threading

import pytest

from visionpipe.video.buffer import BufferPolicy, FrameBuffer

BLOCKED_CHECK_S = 0.05  # how long a thread expected to be blocked is given to (wrongly) finish
JOIN_S = 5.0  # generous: a thread expected to finish must do so; only a hang reaches this


class Recorder:
    """An on_drop callback that remembers what it was given, in order."""

    def __init__(self) -> None:
        self.items: list[object] = []

    def __call__(self, item: object) -> None:
        self.items.append(item)


class Call(threading.Thread):
    """Runs ``fn()`` on a thread and keeps its return value (or exception)."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.started_call = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.started_call.set()
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def assert_blocked(self) -> None:
        assert self.started_call.wait(JOIN_S)
        self.join(BLOCKED_CHECK_S)
        assert self.is_alive(), f"expected the call to block, but it returned {self.result!r}"

    def finish(self) -> object:
        self.join(JOIN_S)
        assert not self.is_alive(), "the call is still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def _contents(buffer: FrameBuffer) -> list[object]:
    return buffer.get_batch(buffer.capacity + 100, timeout=0)


# --- construction ------------------------------------------------------------------------------
def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        FrameBuffer(0, BufferPolicy.WAIT)


def test_policy_accepts_its_string_value_and_rejects_unknown_ones():
    assert FrameBuffer(2, "drop_oldest").policy is BufferPolicy.DROP_OLDEST
    assert FrameBuffer(2, "drop_latest").policy is BufferPolicy.DROP_LATEST
    assert FrameBuffer(2, "wait").policy is BufferPolicy.WAIT
    with pytest.raises(ValueError):
        FrameBuffer(2, "drop_random")


# --- wait ----------------------------------------------------------------------------------------
def test_wait_blocks_the_producer_until_there_is_room_and_drops_nothing():
    dropped = Recorder()
    buffer = FrameBuffer(2, BufferPolicy.WAIT, on_drop=dropped)
    assert buffer.put("a") is True
    assert buffer.put("b") is True
    assert len(buffer) == 2

    producer = Call(lambda: buffer.put("c"))
    producer.start()
    producer.assert_blocked()
    assert len(buffer) == 2  # "c" is not in yet

    assert buffer.get_batch(1) == ["a"]  # makes room
    assert producer.finish() is True
    assert dropped.items == []
    assert _contents(buffer) == ["b", "c"]


def test_wait_does_not_block_while_there_is_room():
    buffer = FrameBuffer(3, BufferPolicy.WAIT)
    producer = Call(lambda: [buffer.put(i) for i in range(3)])
    producer.start()
    assert producer.finish() == [True, True, True]
    assert len(buffer) == 3


# --- drop_oldest ---------------------------------------------------------------------------------
def test_drop_oldest_discards_the_oldest_item_and_reports_it():
    dropped = Recorder()
    buffer = FrameBuffer(3, BufferPolicy.DROP_OLDEST, on_drop=dropped)
    assert [buffer.put(i) for i in range(1, 6)] == [True] * 5  # the new item always gets in
    assert dropped.items == [1, 2]
    assert len(buffer) == 3
    assert _contents(buffer) == [3, 4, 5]


def test_drop_oldest_never_blocks_the_producer():
    buffer = FrameBuffer(1, BufferPolicy.DROP_OLDEST)
    producer = Call(lambda: [buffer.put(i) for i in range(50)])
    producer.start()
    assert producer.finish() == [True] * 50
    assert _contents(buffer) == [49]


# --- drop_latest ---------------------------------------------------------------------------------
def test_drop_latest_discards_the_new_item_and_reports_it():
    dropped = Recorder()
    buffer = FrameBuffer(3, BufferPolicy.DROP_LATEST, on_drop=dropped)
    assert [buffer.put(i) for i in range(1, 6)] == [True, True, True, False, False]
    assert dropped.items == [4, 5]
    assert _contents(buffer) == [1, 2, 3]


def test_drop_latest_accepts_again_once_there_is_room():
    dropped = Recorder()
    buffer = FrameBuffer(2, BufferPolicy.DROP_LATEST, on_drop=dropped)
    buffer.put("a")
    buffer.put("b")
    assert buffer.put("c") is False
    assert buffer.get_batch(1) == ["a"]
    assert buffer.put("d") is True
    assert dropped.items == ["c"]
    assert _contents(buffer) == ["b", "d"]


# --- get_batch -----------------------------------------------------------------------------------
def test_get_batch_returns_items_in_fifo_order_up_to_the_limit():
    buffer = FrameBuffer(10, BufferPolicy.WAIT)
    for i in range(5):
        buffer.put(i)
    assert buffer.get_batch(2) == [0, 1]
    assert buffer.get_batch(2) == [2, 3]
    assert buffer.get_batch(10) == [4]  # fewer than asked: what is there, without waiting for more
    assert len(buffer) == 0


def test_get_batch_on_an_empty_buffer_times_out_with_nothing():
    buffer = FrameBuffer(2, BufferPolicy.WAIT)
    assert buffer.get_batch(3, timeout=0.01) == []
    assert buffer.get_batch(3, timeout=0) == []


def test_get_batch_waits_for_the_first_item():
    buffer = FrameBuffer(4, BufferPolicy.WAIT)
    consumer = Call(lambda: buffer.get_batch(3))  # no timeout: waits
    consumer.start()
    consumer.assert_blocked()
    buffer.put("x")
    assert consumer.finish() == ["x"]


def test_get_batch_frees_room_for_a_waiting_producer_of_each_item_taken():
    buffer = FrameBuffer(2, BufferPolicy.WAIT)
    buffer.put(0)
    buffer.put(1)
    producer = Call(lambda: [buffer.put(2), buffer.put(3)])
    producer.start()
    producer.assert_blocked()
    assert buffer.get_batch(2) == [0, 1]
    assert producer.finish() == [True, True]
    assert _contents(buffer) == [2, 3]


# --- close ---------------------------------------------------------------------------------------
def test_close_wakes_a_waiting_consumer_with_nothing():
    buffer = FrameBuffer(2, BufferPolicy.WAIT)
    consumer = Call(lambda: buffer.get_batch(1))
    consumer.start()
    consumer.assert_blocked()
    buffer.close()
    assert consumer.finish() == []
    assert buffer.closed


def test_close_wakes_a_blocked_producer_whose_item_is_dropped():
    dropped = Recorder()
    buffer = FrameBuffer(1, BufferPolicy.WAIT, on_drop=dropped)
    buffer.put("kept")
    producer = Call(lambda: buffer.put("late"))
    producer.start()
    producer.assert_blocked()
    buffer.close()
    assert producer.finish() is False
    assert dropped.items == ["late"]
    assert _contents(buffer) == ["kept"]  # what was waiting is still handed out after close


@pytest.mark.parametrize("policy", list(BufferPolicy))
def test_put_after_close_is_refused_and_reported(policy):
    dropped = Recorder()
    buffer = FrameBuffer(3, policy, on_drop=dropped)
    buffer.put(1)
    buffer.close()
    assert buffer.put(2) is False
    assert dropped.items == [2]
    assert buffer.get_batch(5) == [1]
    assert buffer.get_batch(5) == []  # closed and empty: returns at once, no timeout needed


# --- drain ---------------------------------------------------------------------------------------
def test_drain_returns_everything_in_order_and_empties_the_buffer():
    dropped = Recorder()
    buffer = FrameBuffer(5, BufferPolicy.DROP_OLDEST, on_drop=dropped)
    for i in range(4):
        buffer.put(i)
    assert buffer.drain() == [0, 1, 2, 3]
    assert len(buffer) == 0
    assert buffer.drain() == []
    assert dropped.items == []  # drained items are handed back, not reported as dropped


def test_drain_makes_room_for_a_blocked_producer():
    buffer = FrameBuffer(2, BufferPolicy.WAIT)
    buffer.put("a")
    buffer.put("b")
    producer = Call(lambda: buffer.put("c"))
    producer.start()
    producer.assert_blocked()
    assert buffer.drain() == ["a", "b"]
    assert producer.finish() is True
    assert _contents(buffer) == ["c"]
