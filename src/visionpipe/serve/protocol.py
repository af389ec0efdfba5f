"""The Open Inference Protocol (KServe v2) routes, as Triton speaks them, so ``tritonclient`` works.

Inputs (exactly one per request, any name):

- ``UINT8`` ``[H, W, 3]`` or ``[B, H, W, 3]``: decoded images, BGR (OpenCV's order) unless the
  request parameter ``color_order`` is ``"rgb"``;
- ``BYTES`` ``[B]``: encoded JPEG/PNG files (binary tensor data, or base64 strings in JSON).

Outputs, padded to the most detections ``N`` of any image in the batch (the layout of TensorRT's
EfficientNMS): ``num_detections`` INT32 ``[B]``, ``detection_boxes`` FP32 ``[B, N, 4]`` (x1, y1,
x2, y2 in original-image pixels), ``detection_scores`` FP32 ``[B, N]``, ``detection_classes``
INT32 ``[B, N]`` (-1 in padding). Class names are in ``GET /v2/models/{name}/config``.

Request parameters: ``conf``, ``iou``, ``max_det``, ``classes`` (names or ids, a list or a
comma-separated string), ``timeout`` (microseconds, Triton's), ``color_order``, and
``binary_data_output``. Outputs come back as binary tensor data when asked (per output
``binary_data`` or ``binary_data_output``), as JSON otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionpipe.errors import MissingExtraError, TensorError

try:
    from fastapi import APIRouter, Path, Request
    from starlette.responses import JSONResponse, Response
except ImportError:  # only imported by the app factory, which needs the serve extra anyway
    raise MissingExtraError("fastapi", "serve", "the HTTP server") from None

from visionpipe.serve.service import Outcome, Thresholds
from visionpipe.serve.tensors import (
    InferenceRequest,
    bytes_tensor,
    input_data,
    numeric_tensor,
    output_tensor,
    parse_request,
)

OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
INPUTS_METADATA = [
    {"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
    {"name": "encoded", "datatype": "BYTES", "shape": [-1]},
]
OUTPUTS_METADATA = [
    {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
    {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
    {"name": "detection_scores", "datatype": "FP32", "shape": [-1, -1]},
    {"name": "detection_classes", "datatype": "INT32", "shape": [-1, -1]},
]


def thresholds_from(parameters: dict[str, Any]) -> Thresholds:
    """conf/iou/max_det/classes from a request's parameters, type-checked."""

    def number(key: str) -> float | None:
        value = parameters.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TensorError(f"parameter {key!r} must be a number, got {value!r}")
        return float(value)

    max_det = parameters.get("max_det")
    if max_det is not None and (isinstance(max_det, bool) or not isinstance(max_det, int)):
        raise TensorError(f"parameter 'max_det' must be an integer, got {max_det!r}")
    return Thresholds(number("conf"), number("iou"), parse_classes(parameters.get("classes")), max_det)


def parse_classes(value: Any) -> tuple[int | str, ...] | None:
    """Class names or ids from a list or a comma-separated string."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items):
        raise TensorError(f"classes must be names or ids, got {value!r}")
    cleaned = tuple(i.strip() if isinstance(i, str) else i for i in items)
    cleaned = tuple(i for i in cleaned if i != "")
    if any(isinstance(i, int) and i < 0 for i in cleaned):
        raise TensorError("class ids must not be negative")
    return cleaned or None


def images_from(
    request: InferenceRequest, data: dict[str, bytes | None], max_pixels: int, max_images: int
) -> list[Any]:
    """The request's images: encoded bytes or BGR arrays."""
    if len(request.inputs) != 1:
        raise TensorError(f"give exactly one input (UINT8 images or BYTES files), got {len(request.inputs)}")
    tensor = request.inputs[0]
    binary = data[tensor.name]
    if tensor.datatype == "BYTES":
        return bytes_tensor(tensor, binary, max_images)
    if tensor.datatype != "UINT8":
        raise TensorError(
            f"input {tensor.name!r} is {tensor.datatype}; send UINT8 [B, H, W, 3] images or BYTES encoded files"
        )
    shape = list(tensor.shape)
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise TensorError(f"input {tensor.name!r}: shape {tensor.shape} is not [H, W, 3] or [B, H, W, 3]")
    if shape[1] * shape[2] > max_pixels:
        raise TensorError(f"{shape[2]}x{shape[1]} exceeds the limit of {max_pixels / 1e6:g} MP")
    if shape[0] > max_images:
        raise TensorError(f"{shape[0]} images exceed the limit of {max_images} per request")
    array = numeric_tensor(tensor, binary, max_elements=max_images * max_pixels * 3).reshape(shape)
    order = (request.parameters or {}).get("color_order", "bgr")
    if order not in ("bgr", "rgb"):
        raise TensorError(f"color_order must be 'bgr' or 'rgb', got {order!r}")
    if order == "rgb":
        array = array[..., ::-1]
    return [np.ascontiguousarray(image) for image in array]


def detection_tensors(outcome: Outcome) -> dict[str, np.ndarray]:
    """The padded output tensors of a batch."""
    counts = np.array([len(d) for d in outcome.detections], dtype=np.int32)
    most = int(counts.max()) if len(counts) else 0
    batch = len(outcome.detections)
    boxes = np.zeros((batch, most, 4), np.float32)
    scores = np.zeros((batch, most), np.float32)
    classes = np.full((batch, most), -1, np.int32)
    for i, detections in enumerate(outcome.detections):
        n = len(detections)
        boxes[i, :n] = detections.xyxy
        scores[i, :n] = detections.confidence
        classes[i, :n] = detections.class_id
    return {
        "num_detections": counts,
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": classes,
    }


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its ``$defs`` inlined (OpenAPI resolves refs under components only)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(InferenceRequest.model_json_schema())}},
    }
}


def protocol_router(state: Any) -> Any:

    from visionpipe._version import __version__
    from visionpipe.errors import ModelNotFoundError
    from visionpipe.serve.responses import error_response, json_bytes

    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])
    repository = state.repository
    config = state.config
    Name = Path(description="Model name", max_length=200)
    Version = Path(description="Model version", max_length=50)

    @router.get("", summary="Server metadata")
    def server_metadata() -> dict[str, Any]:
        extensions = ["binary_tensor_data", "parameters", "model_configuration"]
        if config.allow_model_control:
            extensions.append("model_repository")
        return {"name": "visionpipe", "version": __version__, "extensions": extensions}

    @router.get("/health/live", summary="Liveness")
    def live() -> dict[str, Any]:
        return {"live": True}

    @router.get("/health/ready", summary="Readiness: every model loaded", responses={503: {"description": "not ready"}})
    def ready() -> Any:
        if not repository.ready:
            return error_response(503, "no model is loaded yet")
        return {"ready": True}

    def metadata(name: str, version: str | None) -> dict[str, Any]:
        endpoint = repository.endpoint(name)
        if version is not None and version not in endpoint.versions:
            raise ModelNotFoundError(f"model {name!r} has no loaded version {version!r}")
        return {
            "name": name,
            "versions": sorted(endpoint.versions, key=lambda v: (len(v), v)),
            "platform": "visionpipe",
            "inputs": INPUTS_METADATA,
            "outputs": OUTPUTS_METADATA,
        }

    @router.get("/models/{name}", summary="Model metadata", responses={404: {"description": "unknown model"}})
    def model_metadata(name: str = Name) -> dict[str, Any]:
        return metadata(name, None)

    @router.get(
        "/models/{name}/versions/{version}",
        summary="Model version metadata",
        responses={404: {"description": "unknown model or version"}},
    )
    def version_metadata(name: str = Name, version: str = Version) -> dict[str, Any]:
        return metadata(name, version)

    @router.get(
        "/models/{name}/config", summary="Model configuration", responses={404: {"description": "unknown model"}}
    )
    def model_config(name: str = Name) -> dict[str, Any]:
        endpoint = repository.endpoint(name)
        with repository.lease(name) as loaded:
            runner = loaded.runner
            batching = endpoint.settings.batching
            return {
                "name": name,
                "platform": "visionpipe",
                "max_batch_size": batching.max_batch_size,
                "dynamic_batching": {
                    "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
                    "max_queue_size": batching.max_queue,
                },
                "input": INPUTS_METADATA,
                "output": OUTPUTS_METADATA,
                "parameters": {
                    "family": runner.model.family,
                    "input_size": list(runner.model.input_hw),
                    "class_names": list(runner.class_names),
                    "traffic": endpoint.settings.traffic,
                    "fallback": endpoint.settings.fallback,
                    "deadline_ms": batching.deadline_ms,
                },
            }

    def model_ready(name: str, version: str | None) -> Any:
        endpoint = repository.endpoints.get(name)
        if endpoint is None or (version is not None and version not in endpoint.versions) or not endpoint.versions:
            return error_response(404, f"model {name!r} is not ready")
        return {"name": name, "ready": True}

    @router.get("/models/{name}/ready", summary="Model readiness", responses={404: {"description": "not ready"}})
    def ready_model(name: str = Name) -> Any:
        return model_ready(name, None)

    @router.get(
        "/models/{name}/versions/{version}/ready",
        summary="Model version readiness",
        responses={404: {"description": "not ready"}},
    )
    def ready_version(name: str = Name, version: str = Version) -> Any:
        return model_ready(name, version)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        if name in repository.endpoints:
            # labels only ever hold known names: a requested version is known once it has answered
            request.scope["state"]["served"] = (name, "", "infer")
        body = await request.body()
        parsed = parse_request(body, request.headers.get("inference-header-content-length"))
        infer_request = parsed.request
        parameters = infer_request.parameters or {}
        thresholds = thresholds_from(parameters)
        images = images_from(infer_request, input_data(parsed), config.max_pixels, config.batching.max_queue)
        timeout = parameters.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise TensorError(f"parameter 'timeout' must be microseconds >= 0, got {timeout!r}")
        wanted = {o.name: o for o in infer_request.outputs or []}
        unknown = set(wanted) - set(OUTPUTS)
        if unknown:
            raise TensorError(f"unknown outputs {sorted(unknown)}; this model returns {list(OUTPUTS)}")
        outcome = await state.service.detect(
            name,
            images,
            thresholds,
            version=version,
            sticky=request.headers.get(config.sticky_header),
            timeout=None if not timeout else timeout / 1e6,
        )
        request.scope["state"]["served"] = (outcome.model, outcome.version, "infer")
        binary_default = parameters.get("binary_data_output") is True
        entries, blobs = [], []
        for output_name, array in detection_tensors(outcome).items():
            if wanted and output_name not in wanted:
                continue
            asked = wanted.get(output_name)
            binary = (asked.parameters or {}).get("binary_data", binary_default) if asked else binary_default
            entry, raw = output_tensor(output_name, array, binary is True)
            entries.append(entry)
            blobs.append(raw)
        response: dict[str, Any] = {"model_name": outcome.model, "model_version": outcome.version, "outputs": entries}
        if infer_request.id is not None:
            response["id"] = infer_request.id
        response["parameters"] = {"cached": outcome.cached}
        if outcome.fallback_from:
            response["parameters"]["fallback_from"] = outcome.fallback_from
        header = json_bytes(response)
        if any(blobs):
            return Response(
                header + b"".join(blobs),
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
        return Response(header, media_type="application/json")

    responses: dict[int | str, dict[str, Any]] = {
        400: {"description": "bad request"},
        404: {"description": "unknown model"},
        413: {"description": "too large"},
        503: {"description": "queue full (Retry-After)"},
        504: {"description": "deadline passed"},
    }

    @router.post("/models/{name}/infer", summary="Inference", openapi_extra=INFER_BODY, responses=responses)
    async def infer_model(request: Request, name: str = Name) -> Response:
        return await infer(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        summary="Inference on one version",
        openapi_extra=INFER_BODY,
        responses=responses,
    )
    async def infer_version(request: Request, name: str = Name, version: str = Version) -> Response:
        return await infer(request, name, version)

    # -- model repository extension -------------------------------------------------------------

    @router.post("/repository/index", summary="Models in the repository")
    def index() -> list[dict[str, Any]]:
        rows = [
            {"name": name, "version": version, "state": "READY"}
            for name, endpoint in sorted(repository.endpoints.items())
            for version in sorted(endpoint.versions)
        ]
        for key, why in sorted(repository.failed.items()):
            name, _, version = key.partition("/")
            rows.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": why.partition(" ")[2]})
        return rows

    def control_disabled() -> Any:
        return error_response(
            403, "model loading and unloading over HTTP is disabled (start with --allow-model-control)"
        )

    @router.post(
        "/repository/models/{name}/load",
        summary="Load a model's new versions from the repository folder",
        responses={403: {"description": "disabled"}},
    )
    async def load(name: str = Name) -> Any:
        if not config.allow_model_control:
            return control_disabled()
        import anyio.to_thread

        report = await anyio.to_thread.run_sync(repository.refresh)
        failures = [f for f in report["failed"] if f.startswith((name + "/", name + ":"))]
        if failures or name not in repository.endpoints:
            serving = " (the loaded versions keep serving)" if name in repository.endpoints else ""
            reason = "; ".join(failures) or "not in the repository"
            return error_response(400, f"model {name!r} could not be loaded: {reason}{serving}")
        return JSONResponse({})

    @router.post(
        "/repository/models/{name}/unload", summary="Unload a model", responses={403: {"description": "disabled"}}
    )
    async def unload(name: str = Name) -> Any:
        if not config.allow_model_control:
            return control_disabled()
        repository.unload(name)
        return JSONResponse({})

    return router
