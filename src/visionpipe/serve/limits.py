"""Request body limit, enforced while the body arrives (before any of it is parsed).

A declared ``Content-Length`` over the limit is answered 413 before the body is read; a chunked
body is counted as it streams in and cut off at the limit, so an upload never grows past it in
memory.
"""

from __future__ import annotations

import json
from typing import Any

from visionpipe.errors import RequestTooLargeError


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for bodies over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int, on_reject: Any = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLargeError
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestTooLargeError:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Any) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = json.dumps({"error": f"request body exceeds the limit of {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
