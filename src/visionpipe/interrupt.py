"""SIGINT and SIGTERM as one orderly stop, for commands that write outputs.

Inside :func:`stop_on_signals`, either signal raises :class:`Interrupted` in the main thread (a
``KeyboardInterrupt``, so code that already cleans up after Ctrl-C cleans up after SIGTERM too).
The command then stops taking inputs, finishes or discards what is in flight, closes its writers,
writes its summary marked interrupted, and exits with ``Interrupted.exit_code`` (128 + the signal
number: 130 for SIGINT, 143 for SIGTERM), as a shell expects of a process a signal stopped.

A second signal during that clean-up is remembered, not acted on, so the clean-up that keeps the
outputs whole is not itself cut short; the handlers in force before are restored on the way out.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is what the process should exit with."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalStop:
    """What :func:`stop_on_signals` yields: the signals received, and :meth:`critical` sections."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._depth = 0
        self._pending: int | None = None

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section a signal must not cut in two (one result written to every output and
        counted): a signal arriving inside is raised when the section ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._pending is not None:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if len(self.received) > 1:
            return
        if self._depth:
            self._pending = signum
        else:
            raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` (once), raised where the main thread is,
    or at the end of the :meth:`SignalStop.critical` section it is in.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    stop = SignalStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop._handle) for sig in HANDLED}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
