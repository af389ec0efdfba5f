"""A model described by a file: which weights, which family, and whatever differs from the preset.

The smallest spec names the weights and the family::

    model: yolox_nano_416_coco.onnx
    family: yolox

Everything else (input size, preprocessing, classes, thresholds, decoder options) is optional and
overrides the family preset field by field. Relative paths are relative to the spec file.

A spec file is data someone may hand you: its ``names_file`` must stay inside the spec's folder (a
names file elsewhere is passed by the user, e.g. ``--names-file``), every file is read with a size
cap, and nesting deeper than any real spec needs is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from visionpipe.errors import SpecError, VisionpipeError

if TYPE_CHECKING:  # the loader imports this module; a DetectionModel is only read here
    from visionpipe.models.loader import DetectionModel
from visionpipe.io.files import MAX_NAMES_BYTES, MAX_SPEC_BYTES, InputFileError, read_text

MAX_SPEC_DEPTH = 16  # a real spec nests 3 deep; YAML anchors or a hostile file can nest thousands
MAX_INPUT_SIDE = 8192  # pixels per side of a model input; 8192 x 8192 x 3 float32 is 800 MB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessSpec(_Strict):
    resize: str | None = None
    anchor: str | None = None
    pad_value: float | None = None
    interpolation: str | None = None
    channel_order: str | None = None
    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size_divisor: int | None = None


class ThresholdSpec(_Strict):
    # the names of the CLI flags and Pipeline keywords: --conf/conf, --iou/iou, --max-det/max_det, ...
    conf: float | None = Field(None, ge=0, le=1)
    iou: float | None = Field(None, ge=0, le=1)
    multi_label: bool | None = None
    agnostic: bool | None = None
    classes: list[int | str] | None = None
    top_k: int | None = Field(None, ge=1)
    max_det: int | None = Field(None, ge=1)


class ModelSpec(_Strict):
    """A model described by data (see the module doc for every field).

    Example::

        spec = ModelSpec.from_file("yolox.yaml")
        spec = ModelSpec.from_dict({"model": "yolox.onnx", "family": "yolox", "thresholds": {"conf": 0.3}})
    """

    model: Path
    family: str | None = None
    # which runtime runs the file (visionpipe.models.backends); by default its suffix decides
    runtime: str | None = None
    name: str | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    preprocess: PreprocessSpec = PreprocessSpec()
    classes: list[str] | None = None
    names_file: Path | None = None
    thresholds: ThresholdSpec = ThresholdSpec()
    decoder: dict[str, Any] = {}
    # set for specs read from a file: the folder a names_file must stay in (None: trusted caller)
    _names_root: Path | None = PrivateAttr(None)

    @field_validator("input_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("input_size")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(0 < side <= MAX_INPUT_SIDE for side in value):
            raise ValueError(f"each side must be between 1 and {MAX_INPUT_SIDE} pixels, got {list(value)}")
        return value

    @classmethod
    def from_file(cls, path: str | Path) -> ModelSpec:
        path = Path(path)
        raw = read_spec_data(path)
        if not isinstance(raw, dict):
            raise SpecError(f"spec {path} must be a mapping with at least 'model'")
        spec = cls.from_dict(raw, base_dir=path.parent, source=f"spec {path}")
        spec._names_root = path.parent  # the names file it names must stay beside it
        return spec

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | Path = ".", source: str = "model spec") -> ModelSpec:
        """A spec from its mapping; ``source`` names it in errors (``from_file`` passes the file)."""
        if _depth(raw) > MAX_SPEC_DEPTH:
            raise SpecError(f"invalid model spec: nested deeper than {MAX_SPEC_DEPTH} levels")
        refuse_former_keys(raw, FORMER_KEYS, source)
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
            raise SpecError(f"invalid model spec: {problems}") from None
        base = Path(base_dir)
        updates: dict[str, Any] = {"model": base / spec.model}
        if spec.names_file is not None:
            updates["names_file"] = base / spec.names_file
        return spec.model_copy(update=updates)

    def resolved_class_names(self) -> tuple[str, ...] | None:
        if self.classes is not None and self.names_file is not None:
            raise SpecError("give either 'classes' or 'names_file', not both")
        if self.classes is not None:
            return tuple(self.classes)
        if self.names_file is not None:
            if self._names_root is not None:
                _confine(self.names_file, self._names_root)
            try:
                lines = read_text(self.names_file, MAX_NAMES_BYTES).splitlines()
            except InputFileError as exc:
                raise SpecError(f"cannot read names file {self.names_file}: {exc.cause}") from None
            return tuple(line.strip() for line in lines if line.strip())
        return None


# Keys renamed so that a setting has one name from CLI flag to spec key to keyword. A file that
# still uses a former name is refused with the new one: reading it silently would keep two names
# alive, and ignoring it would quietly run with a different threshold than the file asks for.
FORMER_KEYS: dict[tuple[str, str], str] = {("thresholds", "score"): "conf"}


def refuse_former_keys(raw: dict[str, Any], former: dict[tuple[str, str], str], source: str) -> None:
    """Raise a one-line SpecError naming ``source``, the former key and its new name, when ``raw``
    uses a key of ``former`` ((section, old key) -> new key).

    Example::

        refuse_former_keys({"thresholds": {"score": 0.3}}, FORMER_KEYS, "spec yolox.yaml")
        # SpecError: spec yolox.yaml: 'thresholds.score' is now called 'thresholds.conf'; rename it
    """
    for (section, old), new in former.items():
        part = raw.get(section)
        if isinstance(part, dict) and old in part:
            raise SpecError(f"{source}: '{section}.{old}' is now called '{section}.{new}'; rename it")


def _confine(path: Path, folder: Path) -> None:
    """Refuse a path (after symbolic links) outside ``folder``: a spec may only name files beside it."""
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop
        inside = False
    if not inside:
        raise SpecError(
            f"names_file {path} is outside the spec's folder {folder}; "
            "give it on the command line (--names-file) to use it"
        )


def read_spec_data(path: Path) -> Any:
    """The parsed content of a spec file (YAML, or JSON by suffix), read as someone else's data:
    a regular file, at most ``MAX_SPEC_BYTES``, nested at most ``MAX_SPEC_DEPTH`` deep."""
    try:
        text = read_text(path, MAX_SPEC_BYTES)
    except InputFileError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.cause}") from None
    if _nesting(text) > MAX_SPEC_DEPTH:  # refused before a recursive parser can overflow on it
        raise SpecError(f"spec {path} is nested deeper than {MAX_SPEC_DEPTH} levels")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"spec {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    except RecursionError:
        raise SpecError(f"spec {path} is nested too deeply") from None


def _nesting(text: str) -> int:
    """How deeply a JSON/YAML text nests, estimated from the text alone: brackets and braces
    outside quotes, and block indentation (counted at two spaces a level)."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        elif char == "\n":
            quote = ""  # an unclosed quote ends with its line in the flow styles that matter here
    indents = (len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip())
    return max(deepest, max(indents, default=0) // 2)


def _depth(value: Any, level: int = 0) -> int:
    """How deeply dicts and lists nest, counted without recursing past the limit."""
    if level > MAX_SPEC_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, (list, tuple)):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def find_sidecar_spec(model_file: str | Path) -> Path | None:
    """The spec file beside a model file (``model.yaml``, ``.yml`` or ``.json``), if there is one."""
    path = Path(model_file)
    return next((path.with_suffix(s) for s in (".yaml", ".yml", ".json") if path.with_suffix(s).is_file()), None)


def model_spec_dict(model: DetectionModel, model_file: str | os.PathLike) -> dict[str, Any]:
    """A spec (as a dict, paths relative to ``model_file``'s folder) reproducing ``model``'s configuration.

    Taken from the resolved model rather than the file it came from, so it holds whether the model
    was loaded from a spec, a family name or embedded metadata. Decoder options and the runtime
    come from the spec the model was loaded with (``model.spec``); a decoder that is not
    registered under its family name is named by import path.
    """
    from visionpipe.models.decoders import DECODERS

    pre = model.preprocess
    params = model.params
    spec: dict[str, Any] = {
        "model": Path(model_file).name,
        "family": model.family,
        "name": model.name,
        "input_size": [int(model.input_hw[0]), int(model.input_hw[1])],
        "preprocess": {
            "resize": pre.resize.value,
            "anchor": pre.anchor.value,
            "pad_value": float(pre.pad_value),
            "interpolation": pre.interpolation,
            "channel_order": pre.channel_order.value,
            "scale": float(pre.scale),
            "mean": [float(v) for v in pre.mean],
            "std": [float(v) for v in pre.std],
            "size_divisor": int(pre.size_divisor),
        },
        "classes": list(model.class_names),
        "thresholds": {
            k: v
            for k, v in {
                "conf": float(params.conf),
                "iou": float(params.iou),
                "multi_label": bool(params.multi_label),
                "agnostic": bool(params.agnostic),
                "classes": None if params.classes is None else [int(c) for c in params.classes],
                "top_k": params.top_k,
                "max_det": params.max_det,
            }.items()
            if v is not None
        },
    }
    options = dict(model.spec.decoder) if model.spec is not None else _sidecar_decoder_options(model)
    decoder_cls = type(model.decoder)
    if DECODERS.get(model.family) is not decoder_cls:
        options["class"] = f"{decoder_cls.__module__}:{decoder_cls.__qualname__}"
    else:
        options.pop("class", None)
    if options:
        spec["decoder"] = options
    ModelSpec.from_dict(spec)  # validate what we are about to write
    return spec


def _sidecar_decoder_options(model: DetectionModel) -> dict[str, Any]:
    """Decoder options from the spec beside the model's file, for models built without a spec."""
    sidecar = find_sidecar_spec(getattr(model.backend, "path", ""))
    if sidecar is None:
        return {}
    try:
        return dict(ModelSpec.from_file(sidecar).decoder)
    except VisionpipeError:
        return {}


def write_sidecar_spec(model: DetectionModel, out_path: str | os.PathLike) -> Path:
    """Write ``<out>.yaml`` so ``load_model(out_path)`` configures the written model like ``model``."""
    out_path = Path(out_path)
    target = out_path.with_suffix(".yaml")
    target.write_text(yaml.safe_dump(model_spec_dict(model, out_path), sort_keys=False), encoding="utf-8")
    return target
