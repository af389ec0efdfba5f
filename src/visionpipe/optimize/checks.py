"""Checks every export shares: outputs compared within stated tolerances, made-up inputs for
symbolic dimensions, ONNX Runtime messages cut to their cause, and the result type that is a path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionpipe.errors import (
    first_line,
)

# the symbolic name given to a batch axis made dynamic (Ultralytics uses it too)
BATCH_DIM = "batch"

# Tolerances for "the same outputs": |got - want| <= atol + rtol * |want| elementwise (numpy's
# isclose). ONNX Runtime's CPU kernels block and vectorise differently for other batch sizes and
# after graph rewrites, which moves float32 results by ~1e-6 relative; anything past these bounds
# is a wrong graph, not rounding.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

# Stand-in for symbolic height/width (and other non-batch) dims when inputs are made up for a
# check: a multiple of every detector stride (8..64) and small enough to run quickly.
SYMBOLIC_SIZE = 320

ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")
ORT_NOISE = (
    re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : "),  # status prefix
    # the failed C++ check's source location
    re.compile(r"/onnxruntime_src/\S+:\d+ .*? was false\. "),
)


class PathResult:
    """``os.fspath(result)`` / ``str(result)`` is the file written."""

    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


# --------------------------------------------------------------------------------------------
# shared helpers


def ort_session(path_or_bytes: Path | bytes):
    """A CPU session for checks. Its own logging is silenced: failures come back as our errors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def numpy_dtype(ort_type: str) -> np.dtype:
    from visionpipe.models.backends.onnxruntime import _ORT_TYPES

    return np.dtype(_ORT_TYPES.get(ort_type, np.float32))


def image_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values in [0, 1) with image-like structure: blocks of colour plus a little noise.

    Smooth regions give a detector's activations realistic ranges, and every sample differs, so a
    graph that mixes samples of a batch changes the result.
    """
    if len(shape) < 3:
        return rng.random(shape, dtype=np.float32)
    *lead, h, w = shape
    block = 16
    coarse = rng.random((*lead, -(-h // block), -(-w // block)), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, block, axis=-2), block, axis=-1)[..., :h, :w]
    noise = rng.random(shape, dtype=np.float32)
    return (0.9 * smooth + 0.1 * noise).astype(np.float32)


def made_up_inputs(session, batch: int, batched: set[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for ``session``: ``batch`` samples for inputs in ``batched``, symbolic dims at SYMBOLIC_SIZE."""
    feed = {}
    for info in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else SYMBOLIC_SIZE for d in info.shape]
        if info.name in batched and dims:
            dims[0] = batch
        dtype = numpy_dtype(info.type)
        values = image_like(rng, tuple(dims))
        if np.issubdtype(dtype, np.floating):
            feed[info.name] = values.astype(dtype)
        elif dtype == np.bool_:
            feed[info.name] = values > 0.5
        else:  # integer inputs: pixel-like values 0..255
            feed[info.name] = (values * 255).astype(dtype)
    return feed


def ort_message(exc: BaseException) -> str:
    """An onnxruntime error without its status prefix and C++ source locations."""
    text = first_line(exc)
    for noise in ORT_NOISE:
        text = noise.sub("", text)
    return text


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    if got.size == 0:
        return 0.0
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    diff[np.isnan(got) & np.isnan(want)] = 0.0  # NaN where both are NaN is agreement
    return float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")


def compare_outputs(
    names: Sequence[str],
    got: Sequence[np.ndarray],
    want: Sequence[np.ndarray],
    atol: float,
    rtol: float,
) -> tuple[float, str | None]:
    """(largest |got - want| over all outputs, description of the first mismatch or None)."""
    worst = 0.0
    problem = None
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            problem = problem or f"output {name!r} has shape {g.shape} where {w.shape} was expected"
            worst = float("inf")
            continue
        diff = max_abs_diff(g, w)
        worst = max(worst, diff)
        if not np.allclose(
            g.astype(np.float64),
            w.astype(np.float64),
            atol=atol,
            rtol=rtol,
            equal_nan=True,
        ):
            problem = problem or f"output {name!r} differs by up to {diff:.3g} (atol {atol}, rtol {rtol})"
    return worst, problem
