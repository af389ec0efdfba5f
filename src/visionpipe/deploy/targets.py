"""Deployment targets: the hard limits a device puts on a model, built in or read from YAML.

A target names what the device can run (formats, precisions, execution providers) and what the
model must meet there: file size, latency at the device's thread count, memory, and accuracy lost
against the float32 model. A user target is a YAML file with the same keys::

    name: doorbell
    description: ARM board, 2 cores, ORT minimal build
    max_size_mb: 4
    max_latency_ms: 250
    max_memory_mb: 96
    max_accuracy_loss: 0.03      # mAP@.5:.95 points below the float32 model
    threads: 2                   # 0: all cores
    formats: [ort, onnx]
    precisions: [int8, fp16, fp32]
    providers: [cpu]             # cpu, nnapi, coreml, openvino
    platform: arm                # arm or amd64: how ORT-format files are optimised

Sizes are MiB (2**20 bytes). Latency is the model alone on one preprocessed image (p90 of the
timed runs), memory the measuring process's peak resident set above its footprint before the model
was loaded: on the machine that plans, both are proxies for the device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from visionpipe.errors import TargetError

FORMATS = ("onnx", "ort", "openvino", "ncnn")
PRECISIONS = ("fp32", "fp16", "int8")
PROVIDERS = ("cpu", "nnapi", "coreml", "openvino")


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    max_size_mb: float = Field(gt=0)
    max_latency_ms: float = Field(gt=0)
    max_memory_mb: float | None = Field(None, gt=0)
    max_accuracy_loss: float = Field(0.02, ge=0, le=1)
    threads: int = Field(0, ge=0)
    formats: tuple[Literal["onnx", "ort", "openvino", "ncnn"], ...] = ("onnx", "ort")
    precisions: tuple[Literal["fp32", "fp16", "int8"], ...] = ("fp32", "fp16", "int8")
    providers: tuple[Literal["cpu", "nnapi", "coreml", "openvino"], ...] = ("cpu",)
    platform: Literal["arm", "amd64"] = "arm"

    @field_validator("formats", "precisions", "providers")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one")
        return tuple(dict.fromkeys(value))

    @property
    def needs_portable_ort(self) -> bool:
        """NNAPI and CoreML take nodes from an unfused graph: keep an ORT file without CPU-only fused ops."""
        return bool({"nnapi", "coreml"} & set(self.providers))

    def thread_label(self) -> str:
        return "all cores" if self.threads == 0 else f"{self.threads} thread{'s' if self.threads > 1 else ''}"

    def constraints(self) -> dict[str, object]:
        """The limits as recorded in a bundle's manifest."""
        return self.model_dump(mode="json")


BUILTIN_TARGETS: dict[str, Target] = {
    "mobile": Target(
        name="mobile",
        description="phone: ONNX Runtime Mobile on 4 big cores, NNAPI/CoreML where the graph allows",
        max_size_mb=10,
        max_latency_ms=100,
        max_memory_mb=256,
        max_accuracy_loss=0.02,
        threads=4,
        formats=("ort", "onnx"),
        precisions=("int8", "fp16", "fp32"),
        providers=("cpu", "nnapi", "coreml"),
        platform="arm",
    ),
    "embedded": Target(
        name="embedded",
        description="single-board computer or camera SoC: ORT minimal build, 1-2 cores",
        max_size_mb=5,
        max_latency_ms=200,
        max_memory_mb=128,
        max_accuracy_loss=0.03,
        threads=2,
        formats=("ort", "onnx"),
        precisions=("int8",),
        providers=("cpu",),
        platform="arm",
    ),
    "edge_server": Target(
        name="edge_server",
        description="x86 edge server: ONNX Runtime or OpenVINO on every core, float only",
        max_size_mb=100,
        max_latency_ms=50,
        max_memory_mb=2048,
        max_accuracy_loss=0.005,
        threads=0,
        formats=("onnx", "ort", "openvino"),
        precisions=("fp16", "fp32"),
        providers=("cpu", "openvino"),
        platform="amd64",
    ),
}


def load_target(name_or_path: str | os.PathLike) -> Target:
    """A built-in target by name, or a target YAML file."""
    key = os.fspath(name_or_path)
    if key in BUILTIN_TARGETS and not Path(key).is_file():
        return BUILTIN_TARGETS[key]
    path = Path(key)
    if not path.is_file():
        raise TargetError(
            f"unknown target {key!r}: not a built-in ({', '.join(BUILTIN_TARGETS)}) and no such YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TargetError(f"cannot read target file {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise TargetError(f"target file {path} must be a mapping of limits (max_size_mb, max_latency_ms, ...)")
    raw.setdefault("name", path.stem)
    return target_from_dict(raw, str(path))


def target_from_dict(raw: dict, source: str = "target") -> Target:
    try:
        return Target.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in exc.errors())
        raise TargetError(f"invalid target {source}: {problems}") from None


def describe_targets(targets: dict[str, Target] | None = None) -> str:
    """A Markdown table of targets (the built-ins by default)."""
    targets = targets or BUILTIN_TARGETS
    lines = [
        "| target | size ≤ MiB | latency ≤ ms (p90) | memory ≤ MiB | mAP loss ≤ | threads | formats | precisions | providers |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for t in targets.values():
        memory = "—" if t.max_memory_mb is None else f"{t.max_memory_mb:g}"
        lines.append(
            f"| {t.name} | {t.max_size_mb:g} | {t.max_latency_ms:g} | {memory} | {t.max_accuracy_loss:g} | "
            f"{t.thread_label()} | {', '.join(t.formats)} | {', '.join(t.precisions)} | {', '.join(t.providers)} |"
        )
    return "\n".join(lines)


__all__ = ["BUILTIN_TARGETS", "FORMATS", "PRECISIONS", "Target", "TargetError", "describe_targets", "load_target"]
