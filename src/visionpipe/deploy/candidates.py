"""The files a planner can choose from: one source model in every precision and format a target allows.

For each source (the model given, plus any ``--candidate``: another model file, a spec, or
``size=HxW`` for another input size of a model with a dynamic input) and each precision the target
allows, an ONNX file is made with the existing optimize code, then converted to the other formats:

* ``fp32`` — the source as it is;
* ``fp16`` — :func:`~visionpipe.optimize.fp16.convert_fp16` (float32 inputs and outputs kept);
* ``int8`` — two builds: ``int8-aware``, the accuracy-aware loop
  (:func:`~visionpipe.optimize.quantize.quantize_accuracy_aware`, tuned on the tuning images, never
  on the images the planner confirms on), and ``int8-all8``, everything 8-bit with moving-average
  ranges (:func:`~visionpipe.optimize.quantize.quantize_static_int8`);
* ``ort`` — ORT format of each (:mod:`visionpipe.deploy.ort_format`), with the portable
  runtime-optimisation variant beside it when the target names NNAPI or CoreML;
* ``openvino`` — IR of the float builds when the ``openvino`` extra is installed;
* ``ncnn`` — pnnx conversion (:func:`~visionpipe.optimize.ncnn_export.to_ncnn`) of the fp32 ONNX
  file, with fp32 weights and, when the target allows fp16, fp16 weights, when the ``ncnn`` extra is
  installed. No int8 NCNN build: NCNN quantizes with its own calibration-table tools, and pnnx does
  not turn a QDQ ONNX file into an NCNN int8 model.

A candidate that cannot be built is kept with its ``error`` so the plan can say why it is missing.
Builds are cached under ``work_dir`` by the source's sha256 and the build settings, so a second plan
for another target reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.deploy.targets import Target
from visionpipe.errors import VisionpipeError, first_line
from visionpipe.models.bundle import sha256_file

Progress = Callable[[str], None]


@dataclass
class Candidate:
    """One deployable file (plus its companions) and how it was made."""

    name: str  # unique, e.g. "int8-aware.ort" or "yolox_320/fp16.onnx"
    source: str  # label of the source model
    format: str  # onnx, ort, openvino
    precision: str  # fp32, fp16, int8
    build: str  # fp32, fp16, int8-aware, int8-all8
    spec: dict[str, Any] = field(default_factory=dict)  # loads it: {"model": abs path, family, ...}
    files: list[str] = field(default_factory=list)  # every file the model needs (model first)
    extra_files: list[str] = field(default_factory=list)  # kept beside it (ORT config, portable variant)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    folder: str | None = None  # where its derived files (ORT, OpenVINO) are written
    derived_from: str | None = None  # the ONNX file an ORT or OpenVINO candidate was converted from

    @property
    def path(self) -> Path:
        return Path(self.spec["model"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


@dataclass
class CandidateSource:
    """A model to derive candidates from: a label and a spec dict (absolute model path)."""

    label: str
    spec: dict[str, Any]


@dataclass
class BuildSettings:
    """What the int8 builds calibrate and tune on; the tuning images are never the confirming ones."""

    calibration_images: list[str] = field(default_factory=list)
    tune_images: list[str] = field(default_factory=list)
    tune_annotations: str | None = None
    max_map_drop: float = 0.01
    int8_options: dict[str, Any] = field(default_factory=dict)  # passed to quantize_accuracy_aware

    def key(self) -> str:
        data = {
            "calibration": [_file_digest(p) for p in self.calibration_images],
            "tune": [_file_digest(p) for p in self.tune_images],
            "tune_annotations": _file_digest(self.tune_annotations) if self.tune_annotations else None,
            "max_map_drop": self.max_map_drop,
            "int8_options": self.int8_options,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_set_hash(paths: Sequence[str | os.PathLike]) -> str:
    """sha256 over the calibration images' names and contents, in order (recorded as provenance)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def parse_candidate(value: str, primary: dict[str, Any]) -> CandidateSource:
    """``size=HxW`` (the primary model at another input size), or a model/spec file."""
    match = re.fullmatch(r"size=(\d+)(?:x(\d+))?", value.strip())
    if match:
        height = int(match.group(1))
        width = int(match.group(2) or height)
        spec = {**primary, "input_size": [height, width]}
        spec.pop("name", None)
        return CandidateSource(f"{Path(primary['model']).stem}_{height}x{width}", spec)
    path = Path(value)
    if not path.is_file():
        raise VisionpipeError(f"--candidate {value!r}: neither size=HxW nor an existing model or spec file")
    from visionpipe.models.loader import load_model

    model = load_model(path)
    return CandidateSource(path.stem, _resolved_spec(model))


def primary_source(model_source: Any) -> CandidateSource:
    """The model the planner was given, with its fully resolved spec (loaded once to resolve it)."""
    from visionpipe.models.loader import load_model

    model = load_model(model_source)
    return CandidateSource(model.name, _resolved_spec(model))


def _resolved_spec(model) -> dict[str, Any]:
    from visionpipe.models.spec import model_spec_dict as spec_dict

    path = Path(model.backend.path).resolve()
    return {**spec_dict(model, path), "model": str(path)}


def build_candidates(
    sources: Sequence[CandidateSource],
    target: Target,
    work_dir: str | os.PathLike,
    settings: BuildSettings,
    progress: Progress | None = None,
) -> list[Candidate]:
    """Every candidate the target allows, built (or taken from the cache) under ``work_dir``."""
    say = progress or (lambda message: None)
    work = Path(work_dir)
    out: list[Candidate] = []
    prefix_sources = len(sources) > 1
    for index, source in enumerate(sources):
        prefix = f"{source.label}/" if prefix_sources and index > 0 else ""
        onnx_builds = _onnx_builds(source, target, work, settings, say)
        for build in onnx_builds:
            build.name = prefix + build.name
            out.append(build)  # measured even when the target wants another format: the others derive from it
            if build.error:
                continue
            if "ort" in target.formats:
                out.append(_ort_candidate(build, target, say, prefix))
            if "openvino" in target.formats and build.precision in ("fp32", "fp16"):
                out.append(_openvino_candidate(build, say, prefix))
            if "ncnn" in target.formats and build.precision in ("fp32", "fp16") and not onnx_builds[0].error:
                out.append(_ncnn_candidate(build, onnx_builds[0], say, prefix))
    return out


# --------------------------------------------------------------------------------------------
# ONNX builds


def _onnx_builds(
    source: CandidateSource, target: Target, work: Path, settings: BuildSettings, say: Progress
) -> list[Candidate]:
    model_path = Path(source.spec["model"])
    source_key = hashlib.sha256(
        (sha256_file(model_path) + json.dumps({**source.spec, "model": ""}, sort_keys=True)).encode()
    ).hexdigest()[:16]
    folder = work / f"{_safe(source.label)}-{source_key}"
    # fp32 always: it is the reference the accuracy loss is measured against (rejected by the plan
    # when the target does not allow it)
    builds: list[tuple[str, str]] = [("fp32", "fp32")]
    if "fp16" in target.precisions:
        builds.append(("fp16", "fp16"))
    if "int8" in target.precisions:
        builds += [("int8-aware", "int8"), ("int8-all8", "int8")]
    results = []
    for build, precision in builds:
        candidate = Candidate(
            name=f"{build}.onnx",
            source=source.label,
            format="onnx",
            precision=precision,
            build=build,
            folder=str(folder / build),
        )
        try:
            _build_onnx(candidate, source, folder / build, settings, say)
        except (VisionpipeError, OSError, ValueError, RuntimeError) as exc:
            candidate.error = f"build failed: {first_line(exc)}"
            say(f"{candidate.name}: {candidate.error}")
        results.append(candidate)
    return results


def _build_onnx(candidate: Candidate, source: CandidateSource, folder: Path, settings: BuildSettings, say) -> None:
    stem = Path(source.spec["model"]).stem
    if candidate.build == "fp32":
        candidate.spec = dict(source.spec)
        candidate.files = [source.spec["model"]]
        return
    key = settings.key() if candidate.build.startswith("int8") else "-"
    if key != "-":  # one folder per build setting: targets with other tolerances keep their own builds
        folder = folder.with_name(f"{folder.name}-{key[:8]}")
        candidate.folder = str(folder)
    record = folder / "build.json"
    target = folder / f"{stem}_{candidate.build.replace('-', '_')}.onnx"
    if record.is_file():
        cached = json.loads(record.read_text(encoding="utf-8"))
        if cached.get("key") == key and target.is_file() and sha256_file(target) == cached.get("sha256"):
            candidate.spec = {**source.spec, "model": str(target)}
            candidate.files = [str(target)]
            candidate.details = cached.get("details", {})
            say(f"{candidate.name}: reusing {target}")
            return
    folder.mkdir(parents=True, exist_ok=True)
    from visionpipe.models.loader import load_model

    model = load_model(source.spec)
    say(f"{candidate.name}: building")
    details: dict[str, Any] = {}
    if candidate.build == "fp16":
        from visionpipe.optimize.fp16 import convert_fp16

        converted = convert_fp16(model, target)
        details = {"blocked_op_types": converted.blocked_op_types, "max_relative_error": converted.max_relative_error}
    elif candidate.build == "int8-all8":
        from visionpipe.optimize.quantize import quantize_static_int8

        if not settings.calibration_images:
            raise VisionpipeError("int8 needs calibration images (--calibration)")
        result = quantize_static_int8(model, settings.calibration_images, target, moving_average=True)
        details = {"calibration_images": result.calibration_images, "method": "minmax, moving average"}
    else:
        from visionpipe.optimize.quantize import quantize_accuracy_aware

        if not settings.calibration_images or not settings.tune_images or settings.tune_annotations is None:
            raise VisionpipeError("accuracy-aware int8 needs calibration images and annotated tuning images")
        report = quantize_accuracy_aware(
            model,
            settings.calibration_images,
            settings.tune_images,
            settings.tune_annotations,
            target,
            max_map_drop=settings.max_map_drop,
            progress=lambda message: say(f"{candidate.name}: {message}"),
            **settings.int8_options,
        )
        details = {
            "kept_back_nodes": len(report.excluded_nodes),
            "kept_as": report.kept_as,
            "tune_fp32_map": report.fp32_map,
            "tune_int8_map": report.int8_map,
            "tune_images": report.val_images,
            "met_tolerance_on_tuning_images": report.met_tolerance,
        }
    # the planner loads candidates by spec dict; a sidecar would only shadow the ORT file's own
    target.with_suffix(".yaml").unlink(missing_ok=True)
    candidate.spec = {**source.spec, "model": str(target)}
    candidate.files = [str(target)]
    candidate.details = details
    record.write_text(
        json.dumps({"key": key, "sha256": sha256_file(target), "details": details}, indent=2, default=str),
        encoding="utf-8",
    )


# --------------------------------------------------------------------------------------------
# other formats


def _ort_candidate(build: Candidate, target: Target, say: Progress, prefix: str) -> Candidate:
    from visionpipe.deploy.ort_format import convert_to_ort

    candidate = Candidate(
        name=f"{prefix}{build.build}.ort",
        source=build.source,
        format="ort",
        precision=build.precision,
        build=build.build,
        details=dict(build.details),
        derived_from=str(build.path),
    )
    onnx_path = build.path
    try:
        out_dir = Path(build.folder or onnx_path.parent) / f"ort-{target.platform}"
        fixed = convert_to_ort(onnx_path, out_dir, style="fixed", platform=target.platform)
        candidate.extra_files.append(str(fixed.config_path))
        if target.needs_portable_ort:
            portable = convert_to_ort(onnx_path, out_dir, style="runtime", platform=target.platform)
            candidate.extra_files += [str(portable.path), str(portable.config_path)]
            candidate.details["portable_variant"] = portable.path.name
    except (VisionpipeError, OSError) as exc:
        candidate.error = f"ORT-format conversion failed: {first_line(exc)}"
        say(f"{candidate.name}: {candidate.error}")
        return candidate
    candidate.spec = {**build.spec, "model": str(fixed.path)}
    candidate.files = [str(fixed.path)]
    candidate.details.update(
        {
            "ort_format_version": fixed.format_version,
            "ort_optimization": f"fixed, platform {fixed.platform}",
            "required_operators": fixed.required_operators,
        }
    )
    return candidate


def _openvino_candidate(build: Candidate, say: Progress, prefix: str) -> Candidate:
    candidate = Candidate(
        name=f"{prefix}{build.build}.openvino",
        source=build.source,
        format="openvino",
        precision=build.precision,
        build=build.build,
        details=dict(build.details),
        derived_from=str(build.path),
    )
    try:
        import openvino  # noqa: F401
    except ImportError:
        candidate.error = "not built: the openvino extra is not installed (pip install 'visionpipe[openvino]')"
        return candidate
    from visionpipe.optimize.export import to_openvino

    out_dir = Path(build.folder or build.path.parent) / "openvino"
    try:
        result = to_openvino(build.path, out_dir, fp16=build.precision == "fp16")
    except (VisionpipeError, OSError) as exc:
        candidate.error = f"OpenVINO conversion failed: {first_line(exc)}"
        say(f"{candidate.name}: {candidate.error}")
        return candidate
    candidate.spec = {**build.spec, "model": str(result.path)}
    candidate.files = [str(result.path), str(result.bin_path)]
    return candidate


def ncnn_available() -> bool:
    """Whether the ``ncnn-export`` extra (the ncnn runtime and the pnnx converter) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("ncnn", "pnnx"))


def _ncnn_candidate(build: Candidate, fp32: Candidate, say: Progress, prefix: str) -> Candidate:
    """NCNN from the fp32 ONNX file (pnnx reads float32 graphs; its fp16 stores the weights in half)."""
    candidate = Candidate(
        name=f"{prefix}{build.build}.ncnn",
        source=build.source,
        format="ncnn",
        precision=build.precision,
        build=build.build,
        details={},  # the fp16 ONNX build's details describe another file
        derived_from=str(fp32.path),
    )
    if not ncnn_available():
        candidate.error = "not built: the ncnn-export extra is not installed (pip install 'visionpipe[ncnn-export]')"
        return candidate
    from visionpipe.optimize.ncnn_export import to_ncnn

    out_dir = Path(build.folder or build.path.parent) / "ncnn"
    size = fp32.spec.get("input_size")
    try:
        result = to_ncnn(fp32.path, out_dir, fp16=build.precision == "fp16", input_size=tuple(size) if size else None)
    except (VisionpipeError, OSError) as exc:
        candidate.error = f"NCNN conversion failed: {first_line(exc)}"
        say(f"{candidate.name}: {candidate.error}")
        return candidate
    if result.spec_path is not None:  # the planner loads candidates by spec dict
        result.spec_path.unlink(missing_ok=True)
    candidate.spec = {k: v for k, v in {**fp32.spec, "model": str(result.path)}.items() if k != "runtime"}
    candidate.files = [str(result.path), str(result.bin_path)]
    candidate.details.update(
        {
            "ncnn_input": result.input_name,
            "ncnn_outputs": result.output_names,
            "ncnn_layers": result.layer_types,
            "ncnn_weights": "fp16" if result.fp16 else "fp32",
            "ncnn_rewritten_slices": result.rewritten_slices,
            "ncnn_max_relative_error": max(result.max_relative_error, default=0.0),
        }
    )
    return candidate


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60] or "model"


def _file_digest(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    try:
        return sha256_file(path)
    except OSError:
        return str(path)


__all__ = [
    "BuildSettings",
    "Candidate",
    "CandidateSource",
    "build_candidates",
    "calibration_set_hash",
    "ncnn_available",
    "parse_candidate",
    "primary_source",
]
