"""How every route answers: compact JSON, and errors as ``{"error": ..., "request_id": ...}``."""

from __future__ import annotations

import json
from typing import Any

from visionpipe.serve.logs import request_id_var


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    body = {"error": message}
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
