"""Turn a spec, a model file or a spec dict into a ready :class:`DetectionModel`.

Configuration comes from, in order of precedence: the spec file, the model's own embedded metadata
(Ultralytics exports carry ``names``, ``imgsz``, ``stride``, ``task``, ``end2end``), the family
preset, and finally what the model file itself says (a fixed input size).
"""

from __future__ import annotations

import ast
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionpipe.errors import ModelLoadError, SpecError, UnknownOutputLayoutError
from visionpipe.models.backend import Backend
from visionpipe.models.backends import open_backend
from visionpipe.models.bundle import bundle_spec, is_bundle
from visionpipe.models.decoders import (
    DECODERS,
    DecodeParams,
    Decoder,
    build_decoder,
    canonical_family,
    import_decoder,
    matching_families,
)
from visionpipe.models.presets import DEFAULT_INPUT_SIZE
from visionpipe.models.spec import MAX_INPUT_SIDE, ModelSpec, ThresholdSpec, find_sidecar_spec
from visionpipe.preprocess import PreprocessConfig

SPEC_SUFFIXES = {".yaml", ".yml", ".json"}
MAX_METADATA_INPUT_SIDE = 2048  # pixels per side taken from a model's own metadata


class ModelWarning(UserWarning):
    """A model's file or metadata asked for something visionpipe adjusted (and says how)."""


@dataclass
class DetectionModel:
    """A backend, its decoder and everything needed to feed and read it.

    Example::

        model = load_model("yolox.yaml")
        model.family, model.input_hw, model.class_names, model.backend.runtime
    """

    name: str
    family: str
    backend: Backend
    decoder: Decoder
    preprocess: PreprocessConfig
    input_hw: tuple[int, int]
    class_names: tuple[str, ...]
    params: DecodeParams
    # the spec the model was configured from (as given, before the preset filled it in)
    spec: ModelSpec | None = None

    def __repr__(self) -> str:
        return (
            f"DetectionModel({self.name!r}, family={self.family}, input={self.input_hw}, "
            f"classes={len(self.class_names)}, backend={self.backend!r})"
        )


def load_model(
    source: str | Path | ModelSpec | dict[str, Any],
    *,
    family: str | None = None,
    names_file: str | Path | None = None,
    device: str = "cpu",
    intra_op_threads: int = 0,
    runtime: str | None = None,
    input_size: int | tuple[int, int] | None = None,
) -> DetectionModel:
    """Load a detector from a spec file, a spec dict/object, or a model file.

    ``family`` names the decoder for a bare model file without metadata; without it the family is
    taken from the metadata or, failing that, from the one family whose layout the outputs fit.
    ``runtime`` (or the spec's ``runtime:``) names the runtime; without it the file's suffix picks
    one (:mod:`visionpipe.models.backends`). ``input_size`` (an int for a square, or (height, width))
    overrides the spec's.

    Example::

        model = load_model("yolox.yaml")                        # a spec file
        model = load_model("yolov8n.onnx")                      # Ultralytics metadata configures it
        model = load_model({"model": "m.xml", "family": "yolox"}, device="cpu")   # OpenVINO IR
    ``names_file`` (one class name per line) replaces the spec's class names; unlike a spec's own
    ``names_file`` it may be anywhere, since the caller chose it.
    """
    spec = resolve_spec(source)
    updates: dict = {k: v for k, v in {"family": family, "runtime": runtime}.items() if v is not None}
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2 or any(int(v) != v or not 1 <= v <= MAX_INPUT_SIDE for v in size):
            raise SpecError(
                f"input size must be an int from 1 to {MAX_INPUT_SIDE} or (height, width) of them, got {input_size!r}"
            )
        updates["input_size"] = (int(size[0]), int(size[1]))
    if names_file is not None:
        updates.update(names_file=Path(names_file), classes=None)
    if updates:
        spec = spec.model_copy(update=updates)
    if names_file is not None:
        spec._names_root = None  # the caller chose it: it may be anywhere
    backend = open_backend(
        spec.model, spec.runtime, device=device, intra_op_threads=intra_op_threads, input_size=spec.input_size
    )
    return build_model(spec, backend)


def build_model(spec: ModelSpec, backend: Backend) -> DetectionModel:
    """Configure a loaded backend from a spec, the model's metadata and the family preset."""
    if not backend.inputs:
        raise ModelLoadError(f"cannot load model {spec.model}: it has no inputs (a detector takes an image)")
    embedded = ultralytics_config(backend.metadata)
    options = dict(spec.decoder)
    class_path = options.pop("class", None)
    if class_path is not None:  # a decoder named by import path: no registration needed
        decoder_cls = import_decoder(str(class_path))
    else:
        name = spec.family or embedded.get("family")
        if name is None:
            name = _guess_family(backend, _input_size(spec, embedded, backend, None))
        family = canonical_family(name)
        if family not in DECODERS:
            raise UnknownOutputLayoutError(
                f"unknown decoder family {name!r}", [o.shape for o in backend.outputs], sorted(DECODERS)
            )
        decoder_cls = DECODERS[family]
    preset = decoder_cls.preset
    input_hw = _input_size(spec, embedded, backend, preset.input_size)
    decoder = build_decoder(decoder_cls, backend.outputs, input_hw, options)
    family = decoder_cls.family

    class_names = spec.resolved_class_names() or embedded.get("names") or preset.class_names
    if not class_names and decoder.num_classes:
        class_names = tuple(str(i) for i in range(decoder.num_classes))
    if decoder.num_classes is not None and len(class_names) != decoder.num_classes:
        raise SpecError(
            f"{spec.model.name} outputs {decoder.num_classes} classes but {len(class_names)} class names were given"
        )

    overrides = {k: v for k, v in spec.preprocess.model_dump().items() if v is not None}
    preprocess = dataclasses.replace(preset.preprocess, **overrides) if overrides else preset.preprocess
    params = apply_thresholds(preset.params, spec.thresholds, class_names)
    return DetectionModel(
        name=spec.name or spec.model.stem,
        family=family,
        backend=backend,
        decoder=decoder,
        preprocess=preprocess,
        input_hw=input_hw,
        class_names=tuple(class_names),
        params=params,
        spec=spec,
    )


def apply_thresholds(base: DecodeParams, thresholds: ThresholdSpec, class_names: tuple[str, ...]) -> DecodeParams:
    fields = {
        "conf": thresholds.conf,
        "iou": thresholds.iou,
        "multi_label": thresholds.multi_label,
        "agnostic": thresholds.agnostic,
        "top_k": thresholds.top_k,
        "max_det": thresholds.max_det,
        "classes": None if thresholds.classes is None else class_ids_for(thresholds.classes, class_names),
    }
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})


def class_ids_for(classes: list[int | str], class_names: tuple[str, ...]) -> tuple[int, ...]:
    """Class ids from a mix of ids and names (``["person", 2]``); an id the model does not have is
    refused (it would silently select nothing)."""
    ids = []
    for item in classes:
        if isinstance(item, int) or str(item).isdigit():
            if not 0 <= int(item) < len(class_names):
                raise SpecError(
                    f"class id {item} is out of range: the model knows {len(class_names)} classes "
                    f"(ids 0 to {len(class_names) - 1})"
                )
            ids.append(int(item))
        elif item in class_names:
            ids.append(class_names.index(item))
        else:
            raise SpecError(f"unknown class {item!r}; the model knows {len(class_names)} classes")
    return tuple(ids)


def ultralytics_config(metadata: dict[str, str]) -> dict[str, Any]:
    """Family, class names and input size from an Ultralytics export's metadata (empty if none)."""
    if "names" not in metadata or "task" not in metadata:
        return {}
    task = metadata["task"]
    if task != "detect":
        raise SpecError(f"this model's task is {task!r}; visionpipe decodes 'detect' models")
    try:
        names = ast.literal_eval(metadata["names"])
        imgsz = ast.literal_eval(metadata.get("imgsz", "None"))
    except (ValueError, SyntaxError) as exc:
        raise SpecError(f"unreadable Ultralytics metadata: {exc}") from None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    config: dict[str, Any] = {
        "family": "end2end" if metadata.get("end2end", "False").lower() == "true" else "yolov8",
        "names": tuple(str(n) for n in names),
    }
    if str(metadata.get("stride", "")).isdigit():
        config["stride"] = int(metadata["stride"])
    if isinstance(imgsz, int):
        config["input_size"] = (imgsz, imgsz)
    elif isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
        config["input_size"] = (int(imgsz[0]), int(imgsz[1]))
    return config


def resolve_spec(source: str | Path | ModelSpec | dict[str, Any]) -> ModelSpec:
    """The spec a source stands for: a spec file or dict as given, a model file with the spec
    beside it (``model.yaml``) or, without one, a spec naming only the file."""
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, dict):
        return ModelSpec.from_dict(source)
    path = Path(source)
    if is_bundle(path):  # a deployment bundle: every checksum is verified before the model is opened
        return ModelSpec.from_dict(bundle_spec(path))
    if path.suffix.lower() in SPEC_SUFFIXES:
        from visionpipe.models.ensemble_spec import is_ensemble_file

        if is_ensemble_file(path):
            raise SpecError(f"{path} describes an ensemble (it has 'members'); this needs a single model")
        return ModelSpec.from_file(path)
    sidecar = find_sidecar_spec(path)
    if sidecar is not None:
        return ModelSpec.from_file(sidecar)
    return ModelSpec(model=path)


_as_spec = resolve_spec  # its former private name


def _input_size(
    spec: ModelSpec, embedded: dict[str, Any], backend: Backend, preset_input_size: tuple[int, int] | None
) -> tuple[int, int]:
    model_hw = backend.input_hw
    wanted = spec.input_size or embedded.get("input_size")
    if wanted is not None and spec.input_size is None and any(v < 1 for v in wanted):
        raise SpecError(f"the model's metadata gives an input size of {tuple(wanted)}; give input_size in a spec")
    if wanted is not None and spec.input_size is None and max(wanted) > MAX_METADATA_INPUT_SIDE:
        # metadata travels with a downloaded file: a huge imgsz on a dynamic-input model would
        # cost gigabytes per image, so it is capped (a spec's input_size can ask for more)
        stride = embedded.get("stride") or 32
        capped = tuple(max(stride, min(v, MAX_METADATA_INPUT_SIDE) // stride * stride) for v in wanted)
        warnings.warn(
            f"{spec.model.name}: the metadata's input size {tuple(wanted)} is over {MAX_METADATA_INPUT_SIDE}; "
            f"using {capped} (set input_size in a spec to choose)",
            ModelWarning,
            stacklevel=2,
        )
        wanted = capped
    if wanted is not None:
        if any(fixed is not None and fixed != asked for fixed, asked in zip(model_hw, wanted)):
            raise SpecError(f"the model's input is fixed at {model_hw}, the spec asks for {tuple(wanted)}")
        stride = embedded.get("stride")
        if stride and (wanted[0] % stride or wanted[1] % stride):
            raise SpecError(f"input size {tuple(wanted)} must be a multiple of the model's stride {stride}")
        return (int(wanted[0]), int(wanted[1]))
    if None not in model_hw:
        return model_hw  # type: ignore[return-value]
    return preset_input_size or DEFAULT_INPUT_SIZE


def _guess_family(backend: Backend, input_hw: tuple[int, int]) -> str:
    shapes = [o.shape for o in backend.outputs]
    candidates = matching_families(backend.outputs, input_hw)
    if candidates:
        least_general = min(DECODERS[c].generality for c in candidates)
        narrowest = [c for c in candidates if DECODERS[c].generality == least_general]
        if len(narrowest) == 1:
            return narrowest[0]
    if not candidates:
        raise UnknownOutputLayoutError("the model's outputs fit no known decoder", shapes, sorted(DECODERS))
    raise UnknownOutputLayoutError(
        f"the outputs fit several families ({', '.join(candidates)}); name one with family= or a spec",
        shapes,
        sorted(DECODERS),
    )
