"""Built-in models: real pretrained detectors that ship inside installed packages.

Nothing is downloaded. ``yolox-nano-coco`` ships inside visionpipe itself (``visionpipe/data/``,
credited in NOTICE); ``ppocr-text`` inside the ``rapidocr`` package, found on disk without importing
it (its runtime is never loaded; visionpipe runs the ONNX file itself).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.errors import MissingExtraError
from visionpipe.models.spec import ModelSpec


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    package: str
    files: tuple[str, ...]  # candidates inside the package, first found wins
    spec: dict[str, Any] = field(default_factory=dict)
    licence: str = ""

    def locate(self) -> Path | None:
        found = importlib.util.find_spec(self.package)
        if found is None or not found.submodule_search_locations:
            return None
        root = Path(next(iter(found.submodule_search_locations)))
        return next((root / f for f in self.files if (root / f).is_file()), None)

    def to_spec(self) -> ModelSpec:
        path = self.locate()
        if path is None:
            raise MissingExtraError(self.package, "builtin", f"the built-in model '{self.name}'")
        return ModelSpec.from_dict({"model": str(path), "name": self.name, **self.spec})


BUILTINS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            name="yolox-nano-coco",
            description="YOLOX-Nano 416 (0.9 M parameters): the 80 COCO classes -- people, vehicles, animals, ...",
            package="visionpipe",
            files=("data/yolox_nano_416_coco.onnx",),
            spec={"family": "yolox"},
            licence="Apache-2.0 (Megvii YOLOX weights; see NOTICE)",
        ),
        BuiltinModel(
            name="ppocr-text",
            description="PP-OCR text detector (DBNet): finds lines of printed text in photos",
            package="rapidocr",
            files=("models/PP-OCRv6_det_small.onnx", "models/ch_PP-OCRv4_det_infer.onnx"),
            spec={"family": "dbnet"},
            licence="Apache-2.0 (PaddleOCR models, shipped by rapidocr)",
        ),
    )
}
DEFAULT_MODEL = "yolox-nano-coco"


def resolve_model_source(model: str | None) -> ModelSpec | str:
    """What ``load_model`` should get for a user's model name or path (the built-in default when
    None): a built-in model's spec, unless a file of that name exists, else the string itself."""
    name = model or DEFAULT_MODEL
    if name in BUILTINS and not Path(name).exists():
        return BUILTINS[name].to_spec()
    return name


def model_sources(models: list[str]) -> ModelSpec | str | list[ModelSpec | str]:
    """One source, or a list of them for an ensemble (a model named several times)."""
    if len(models) > 1:
        return [resolve_model_source(m) for m in models]
    return resolve_model_source(models[0] if models else None)
