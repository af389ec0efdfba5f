"""``POST /v1/models/{name}/detect``: one image in, detections out, for people with a JPEG.

The body is the image itself (``Content-Type: image/jpeg``, ``image/png``, ...,
``application/octet-stream``), a multipart upload (field ``file`` or ``image``), or JSON in
Roboflow's shape ``{"image": {"type": "base64", "value": "..."}}``. Image URLs are refused (the
server fetches nothing: no SSRF) and so are pickled NumPy/PIL payloads.

The response carries Roboflow's ``predictions`` (centre ``x``, ``y``, ``width``, ``height``,
``confidence``, ``class``, ``class_id``, ``detection_id``) so ``supervision.Detections.from_inference``
reads it, and visionpipe's columnar ``detections`` (``xyxy`` corners, ``confidence``,
``class_id``, ``class_name``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from visionpipe.errors import MissingExtraError

try:
    from fastapi import APIRouter, Path, Query, Request
    from starlette.responses import Response
except ImportError:  # only imported by the app factory, which needs the serve extra anyway
    raise MissingExtraError("fastapi", "serve", "the HTTP server") from None

from visionpipe.errors import TensorError
from visionpipe.serve.protocol import parse_classes
from visionpipe.serve.service import Outcome, Thresholds

IMAGE_FIELDS = ("file", "image")
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "object",
                            "properties": {"type": {"type": "string", "enum": ["base64"]}, "value": {"type": "string"}},
                            "required": ["type", "value"],
                        }
                    },
                    "required": ["image"],
                }
            },
        },
    }
}


def image_from_json(body: bytes) -> bytes:
    """The encoded image of a Roboflow-style JSON body."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise TensorError("the JSON body is not valid JSON") from None
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(image, dict):
        raise TensorError('a JSON body must be {"image": {"type": "base64", "value": "..."}}')
    kind = image.get("type")
    if kind == "url":
        raise TensorError("image URLs are not fetched (the server makes no outbound requests); send the image itself")
    if kind in ("numpy", "pil", "numpy_object"):
        raise TensorError(f"{kind} payloads are refused (they are pickles); send a JPEG or PNG")
    if kind != "base64" or not isinstance(image.get("value"), str):
        raise TensorError(f"unsupported image type {kind!r}; use 'base64'")
    value = image["value"]
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]  # a data URL: keep the payload
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TensorError("image.value is not valid base64") from None


def detect_response(outcome: Outcome, request_id: str | None, seconds: float) -> dict[str, Any]:
    detections = outcome.detections[0]
    height, width = outcome.image_sizes[0]
    names = outcome.class_names
    xyxy = detections.xyxy.tolist()
    confidence = detections.confidence.tolist()
    class_id = detections.class_id.tolist()
    class_name = [names[c] if c < len(names) else str(c) for c in class_id]
    predictions = [
        {
            "x": (x1 + x2) / 2,
            "y": (y1 + y2) / 2,
            "width": x2 - x1,
            "height": y2 - y1,
            "confidence": score,
            "class": name,
            "class_id": cid,
            "detection_id": f"{request_id}-{i}",
        }
        for i, ((x1, y1, x2, y2), score, cid, name) in enumerate(zip(xyxy, confidence, class_id, class_name))
    ]
    response: dict[str, Any] = {
        "request_id": request_id,
        "time": round(seconds, 6),
        "image": {"width": width, "height": height},
        "predictions": predictions,
        "detections": {"xyxy": xyxy, "confidence": confidence, "class_id": class_id, "class_name": class_name},
        "model": {"name": outcome.model, "version": outcome.version},
        "cached": outcome.cached,
    }
    if outcome.fallback_from:
        response["model"]["fallback_from"] = outcome.fallback_from
    return response


def detect_router(state: Any) -> Any:

    from visionpipe.serve.responses import json_bytes

    router = APIRouter(prefix="/v1", tags=["Image route"])
    config = state.config

    @router.post(
        "/models/{name}/detect",
        summary="Detect objects in one image",
        openapi_extra=IMAGE_BODY,
        responses={
            400: {"description": "bad image or parameters"},
            404: {"description": "unknown model or version"},
            413: {"description": "body or image too large"},
            503: {"description": "queue full (Retry-After)"},
            504: {"description": "deadline passed"},
        },
    )
    async def detect(
        request: Request,
        name: str = Path(max_length=200),
        conf: float | None = Query(None, ge=0.0, le=1.0, description="Score threshold"),
        iou: float | None = Query(None, ge=0.0, le=1.0, description="NMS IoU threshold"),
        classes: list[str] | None = Query(
            None, max_length=1000, description="Class names or ids (repeat, or comma-separated)"
        ),
        max_det: int | None = Query(None, ge=0, le=100_000, description="Most detections returned"),
        version: str | None = Query(None, max_length=50, description="A version instead of the A/B choice"),
        deadline_ms: float | None = Query(None, gt=0, le=3_600_000, description="Give up after this long (504)"),
    ) -> Response:
        start = time.perf_counter()
        if name in state.repository.endpoints:
            # labels only ever hold known names: a requested version is known once it has answered
            request.scope["state"]["served"] = (name, "", "detect")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=len(IMAGE_FIELDS) + 4)
            upload = next((form[f] for f in IMAGE_FIELDS if f in form and not isinstance(form[f], str)), None)
            if upload is None or isinstance(upload, str):
                raise TensorError(f"the multipart upload has no file field ({' or '.join(IMAGE_FIELDS)})")
            image = await upload.read()
            await form.close()
        elif content_type == "application/json":
            image = image_from_json(await request.body())
        else:
            image = await request.body()
        if not image:
            raise TensorError("no image in the request body")
        joined = None if classes is None else parse_classes(",".join(classes))
        outcome = await state.service.detect(
            name,
            [image],
            Thresholds(conf, iou, joined, max_det),
            version=version,
            sticky=request.headers.get(config.sticky_header),
            timeout=None if deadline_ms is None else deadline_ms / 1000,
        )
        request.scope["state"]["served"] = (outcome.model, outcome.version, "detect")
        request_id = request.scope["state"].get("request_id")
        return Response(
            json_bytes(detect_response(outcome, request_id, time.perf_counter() - start)),
            media_type="application/json",
        )

    return router
