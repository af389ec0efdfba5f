"""A bounded, thread-safe frame buffer with a policy for when it is full."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")


class BufferPolicy(str, Enum):
    """What a full buffer does with a new item.

    ``wait``: the producer blocks until there is room (offline: every frame is processed);
    ``drop_oldest``: the oldest waiting item is discarded (live: latency stays bounded, newest wins);
    ``drop_latest``: the new item is discarded (live: keeps what is already queued).
    """

    WAIT = "wait"
    DROP_OLDEST = "drop_oldest"
    DROP_LATEST = "drop_latest"


class FrameBuffer(Generic[T]):
    """A FIFO of at most ``capacity`` items; ``on_drop(item)`` hears about every discarded item."""

    def __init__(self, capacity: int, policy: BufferPolicy | str, on_drop: Callable[[T], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.policy = BufferPolicy(policy)
        self._items: deque[T] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._on_drop = on_drop or (lambda item: None)

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Add an item; False when it was dropped (full buffer under ``drop_latest``, or closed)."""
        with self._changed:
            if self.policy is BufferPolicy.WAIT:
                while len(self._items) >= self.capacity and not self._closed:
                    self._changed.wait()
            if self._closed:
                self._on_drop(item)
                return False
            if len(self._items) >= self.capacity:
                if self.policy is BufferPolicy.DROP_LATEST:
                    self._on_drop(item)
                    return False
                self._on_drop(self._items.popleft())
            self._items.append(item)
            self._changed.notify_all()
            return True

    def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Up to ``max_items`` items, waiting for the first; [] when closed and empty (or on timeout)."""
        with self._changed:
            if not self._items and not self._closed:
                self._changed.wait(timeout)
            batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            if batch:
                self._changed.notify_all()
            return batch

    def close(self) -> None:
        """No more items will be accepted; waiting producers and consumers wake up."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def drain(self) -> list[T]:
        """Remove and return everything still waiting."""
        with self._changed:
            items = list(self._items)
            self._items.clear()
            self._changed.notify_all()
            return items
