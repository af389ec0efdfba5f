"""The typed errors users of visionpipe catch.

Every error raised on purpose by the library derives from :class:`VisionpipeError`, so a caller can
catch one type at an API boundary and still tell causes apart by subclass.
"""

from __future__ import annotations

import os
import re


class VisionpipeError(Exception):
    """Base class of every error visionpipe raises on purpose."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (third-party errors can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# C0 and C1 controls, DEL, line/paragraph separators, bidirectional overrides and isolates (which
# can reorder what a terminal shows), and the surrogates Python uses for undecodable file-name bytes
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\udc80-\udcff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a file-name byte that is not UTF-8: show the byte itself
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object) -> str:
    """``text`` safe for a terminal: control characters, escape sequences, bidirectional overrides
    and undecodable bytes shown as backslash escapes. For human-facing messages only; machine
    outputs (JSON, CSV, JSONL) keep names exactly."""
    return _UNPRINTABLE.sub(_escape, str(text))


class ImageDecodeError(VisionpipeError):
    """An input could not be turned into an 8-bit BGR image (missing, empty, corrupt, not an image)."""

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(f"cannot decode image {source}: {cause}")
        self.source = source
        self.cause = cause


class ModelLoadError(VisionpipeError):
    """A model file is missing, corrupt, or cannot be opened by the runtime."""


class BackendUnavailableError(VisionpipeError):
    """An execution provider or optional runtime was asked for but is not installed here."""


class MissingExtraError(VisionpipeError, ImportError):
    """An optional dependency is needed for this feature; the message names the extra to install."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(f"{feature} needs the optional package '{package}': pip install 'visionpipe[{extra}]'")
        self.package = package
        self.extra = extra


class SpecError(VisionpipeError):
    """A model spec file is malformed or inconsistent with the model it describes."""


class InputShapeError(VisionpipeError):
    """A tensor or image has the wrong rank, size or dtype for the model or function receiving it."""


class UnknownOutputLayoutError(VisionpipeError):
    """A model's outputs fit no known decoder family (or not the family it was declared as)."""

    def __init__(self, message: str, output_shapes: list[tuple], families: list[str]) -> None:
        shapes = ", ".join(str(tuple(s)) for s in output_shapes)
        super().__init__(f"{message}; output shapes found: [{shapes}]; known families: {', '.join(families)}")
        self.output_shapes = output_shapes
        self.families = families


class DetectionsError(VisionpipeError, ValueError):
    """A Detections object was built from inconsistent arrays."""


class EvaluationError(VisionpipeError):
    """COCO evaluation could not be run on the given ground truth and detections."""


class LayoutMismatch(VisionpipeError):
    """Raised by a decoder while binding to outputs that are not of its family; says why.

    The loader turns it into :class:`UnknownOutputLayoutError` (naming the shapes and families);
    decoders written outside visionpipe raise it too.
    """


class SourceError(VisionpipeError):
    """A source names nothing usable (an empty folder, a pattern matching nothing)."""


class FusionError(VisionpipeError, ValueError):
    """Fusion inputs are inconsistent: weights, scores or class lists."""


class EnsembleError(VisionpipeError):
    """Every member of an ensemble failed on an input; ``errors`` maps member names to causes."""

    def __init__(self, errors: dict[str, Exception]) -> None:
        super().__init__("; ".join(f"{name}: {error}" for name, error in errors.items()))
        self.errors = errors


class VideoSourceError(VisionpipeError):
    """A source cannot be opened at all: a missing or undecodable file, an absent camera."""

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(f"cannot open video source {source}: {cause}")
        self.source = source
        self.cause = cause


class ZoneError(VisionpipeError, ValueError):
    """A line or zone was given bad geometry, an unknown anchor, or untracked detections."""


class TrackingError(VisionpipeError, ValueError):
    """A tracker was configured or fed inconsistently (bad thresholds, frame index going back)."""


class OptimizationError(VisionpipeError):
    """A model cannot be optimized (quantized, converted, exported); the message names the cause."""


class FixedBatchError(OptimizationError):
    """The graph itself fixes the batch size, so declaring the batch axis dynamic cannot work.

    ``nodes`` names the nodes found to pin it (the node onnxruntime failed on first, then Reshapes
    whose constant target shape fixes the batch), each as ``(name, op_type, constant shape)``.
    """

    def __init__(self, message: str, fixed_batch: int, nodes: list[tuple[str, str, list[int] | None]]) -> None:
        super().__init__(message)
        self.fixed_batch = fixed_batch
        self.nodes = nodes


class BenchmarkError(VisionpipeError):
    """A benchmark cannot be set up, or a variant cannot be measured; the message says why."""


class StoreError(VisionpipeError):
    """A monitoring store cannot be opened, written or read."""


class MonitorDataError(VisionpipeError):
    """A monitoring reference or window has no data to work with."""


class TargetError(VisionpipeError):
    """A deployment target is unknown, or its file is unreadable or invalid; the message says which and why."""


class OrtFormatError(VisionpipeError):
    """ONNX Runtime's converter could not write an ORT-format file; the message names the model."""


class BundleError(VisionpipeError):
    """A deployment bundle cannot be written; the message says why."""


class BundleIntegrityError(ModelLoadError):
    """A bundle's files do not match its manifest (changed, missing, added, or the manifest itself altered)."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


class SignatureError(VisionpipeError):
    """A bundle signature is missing or does not verify, or a key cannot be read."""


class AlertRuleError(VisionpipeError):
    """An alert rules file (or a sink's setting) is malformed."""


class WebhookError(VisionpipeError):
    """A webhook did not accept an alert after every retry."""


class ServeConfigError(VisionpipeError):
    """The server cannot start safely as configured (e.g. a non-loopback bind without API keys)."""


class ModelNotFoundError(VisionpipeError, LookupError):
    """A served model or version is unknown or not loaded (HTTP 404)."""


class QueueFullError(VisionpipeError):
    """A model's request queue is full (HTTP 503); ``retry_after`` estimates the seconds until there is room."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(VisionpipeError, TimeoutError):
    """A request's deadline passed before its inference ran or finished (HTTP 504)."""


class BatcherClosedError(VisionpipeError):
    """A batcher is shutting down and takes no new requests (HTTP 503)."""


class RequestTooLargeError(VisionpipeError):
    """A request body grew past the server's limit while it was read (HTTP 413)."""


class TensorError(InputShapeError, ValueError):
    """An inference request's tensors or parameters are malformed (HTTP 400)."""


class JobError(VisionpipeError):
    """A sharded batch job cannot start, resume or merge: a folder holding another job or other
    files, settings or an input listing that changed since the job began, a worker that failed."""


class InputFileError(VisionpipeError):
    """A file the user named cannot be read: missing, not a regular file, too big, unreadable."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        super().__init__(f"cannot read {os.fspath(path)}: {cause}")
        self.path = os.fspath(path)
        self.cause = cause


class HeaderError(VisionpipeError, ValueError):
    """A recognised image format whose header gives no usable size."""


class OutputFolderError(VisionpipeError):
    """The output folder cannot be used: not a folder, or not empty without ``--exist-ok``."""
