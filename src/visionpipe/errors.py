"""The typed errors users of visionpipe catch.

Every error raised on purpose by the library derives from :class:`VisionpipeError`, so a caller can
catch one type at an API boundary and still tell causes apart by subclass.
"""

from __future__ import annotations


class VisionpipeError(Exception):
    """Base class of every error visionpipe raises on purpose."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (third-party errors can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
