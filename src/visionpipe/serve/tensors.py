"""Open Inference Protocol tensors <-> NumPy, in JSON and with the binary tensor data extension.

Only plain numeric types and BYTES are read; nothing is ever unpickled or built as an object
array. Sizes are checked against the shape before any array is made, and an image tensor's pixel
count against the decoder's limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionpipe.errors import TensorError

DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """The JSON part of an infer request (KServe v2)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass
class ParsedRequest:
    request: InferenceRequest
    binary: bytes  # everything after the JSON header (binary tensor data extension)


def parse_request(body: bytes, header_length: str | None) -> ParsedRequest:
    """Split a body into the JSON header and the binary tail, and validate the header."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise TensorError(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
        size = int(header_length)
    else:
        size = len(body)
    try:
        raw = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise TensorError(f"the request header is not JSON: {exc}") from None
    try:
        request = InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise TensorError(f"invalid infer request at {where or 'top level'}: {first.get('msg')}") from None
    return ParsedRequest(request, body[size:])


def _binary_slices(parsed: ParsedRequest) -> dict[str, bytes]:
    """Each binary input's bytes, in the order inputs appear (as the extension defines)."""
    slices, offset = {}, 0
    for tensor in parsed.request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(parsed.binary):
            raise TensorError(f"input {tensor.name!r}: binary_data_size {size!r} runs past the body")
        slices[tensor.name] = parsed.binary[offset : offset + size]
        offset += size
    if offset != len(parsed.binary):
        raise TensorError(f"{len(parsed.binary) - offset} bytes of binary data belong to no input")
    return slices


def numeric_tensor(tensor: RequestInput, binary: bytes | None, max_elements: int) -> np.ndarray:
    """A numeric input as an array of its declared shape."""
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise TensorError(f"input {tensor.name!r}: unsupported datatype {tensor.datatype!r}")
    if any(d < 0 for d in tensor.shape):
        raise TensorError(f"input {tensor.name!r}: negative dimension in shape {tensor.shape}")
    count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
    if count > max_elements:
        raise TensorError(f"input {tensor.name!r}: {count} elements exceed the limit of {max_elements}")
    if binary is not None:
        expected = count * np.dtype(dtype).itemsize
        if len(binary) != expected:
            raise TensorError(
                f"input {tensor.name!r}: {len(binary)} bytes of data for shape {tensor.shape} ({expected} expected)"
            )
        return np.frombuffer(binary, dtype=dtype).reshape(tensor.shape)
    if tensor.data is None:
        raise TensorError(f"input {tensor.name!r} has no data")
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise TensorError(f"input {tensor.name!r}: data is not a rectangular list of numbers") from None
    if values.dtype.kind not in "biuf" or values.size != count:
        raise TensorError(f"input {tensor.name!r}: data must be {count} numbers for shape {tensor.shape}")
    if np.issubdtype(dtype, np.integer) and values.size:
        info = np.iinfo(dtype)
        whole = values.dtype.kind != "f" or bool(np.all(np.mod(values, 1) == 0))
        if not whole or values.min() < info.min or values.max() > info.max:
            raise TensorError(f"input {tensor.name!r}: values must be whole numbers within {tensor.datatype}'s range")
    return values.astype(dtype).reshape(tensor.shape)


def bytes_tensor(tensor: RequestInput, binary: bytes | None, max_elements: int) -> list[bytes]:
    """A BYTES input's elements: length-prefixed in binary, base64 strings in JSON."""
    if tensor.datatype != "BYTES":
        raise TensorError(f"input {tensor.name!r}: expected BYTES, got {tensor.datatype}")
    count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
    if count < 1 or count > max_elements or any(d < 0 for d in tensor.shape):
        raise TensorError(f"input {tensor.name!r}: shape {tensor.shape} must hold 1 to {max_elements} elements")
    if binary is not None:
        items, offset = [], 0
        while offset < len(binary):
            if offset + 4 > len(binary):
                raise TensorError(f"input {tensor.name!r}: truncated element length")
            (length,) = struct.unpack_from("<I", binary, offset)
            offset += 4
            if offset + length > len(binary):
                raise TensorError(f"input {tensor.name!r}: an element runs past the data")
            items.append(binary[offset : offset + length])
            offset += length
    else:
        data = tensor.data
        if isinstance(data, str):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise TensorError(f"input {tensor.name!r}: BYTES data in JSON must be base64 strings")
        try:
            items = [base64.b64decode(item, validate=True) for item in data]
        except (binascii.Error, ValueError):
            raise TensorError(f"input {tensor.name!r}: BYTES data in JSON must be base64 strings") from None
    if len(items) != count:
        raise TensorError(f"input {tensor.name!r}: {len(items)} elements for shape {tensor.shape}")
    return items


def input_data(parsed: ParsedRequest) -> dict[str, bytes | None]:
    slices = _binary_slices(parsed)
    return {tensor.name: slices.get(tensor.name) for tensor in parsed.request.inputs}


def output_tensor(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    """One response output: its JSON entry and (with binary data) its bytes."""
    datatype = next(k for k, v in DTYPES.items() if np.dtype(v) == array.dtype)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        raw = np.ascontiguousarray(array).tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = array.reshape(-1).tolist()
    return entry, b""
