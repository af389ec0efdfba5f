"""The one interface every output speaks, for images and video frames alike: ``write`` each item in
order, then ``close`` to publish; ``abort`` (on an error inside ``with``) discards what a half-done
output would leave. The image writers (:mod:`visionpipe.io.formats`) are ``Sink[Result]``, the
video sinks (:mod:`visionpipe.video.sinks`) ``Sink[FrameResult]``::

    class Printer(Sink[Result]):
        def write(self, result):
            print(result.image_id, len(result.detections or ()))
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Sink(Generic[T]):
    """Receives items in order; ``close`` publishes, ``abort`` discards. A context manager.

    Example::

        class Printer(Sink[Result]):
            def write(self, result):
                print(result.image_id)
    """

    def write(self, item: T) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Called instead of ``close`` when the run fails; by default the same as ``close``."""
        self.close()

    def __enter__(self):  # the subclass itself, for chaining in ``with``
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


__all__ = ["Sink"]
