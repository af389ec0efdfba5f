"""An ensemble described by a file: its members with their weights, and how their boxes are fused.

Accepted wherever a model is (``--model ensemble.yaml``, ``Pipeline("ensemble.yaml")``)::

    members:
      - model: yolox.yaml          # a spec file, a model file or a built-in model's name
        weight: 3
      - model: nanodet.yaml
        weight: 1
    fusion:                        # optional; each key overrides the default
      method: wbf                  # wbf, nms, soft-nms, nmw or vote
      iou: 0.65                    # boxes overlapping above it are fused (--fusion-iou)
      conf: 0.02                   # member boxes scoring below it are skipped
      conf_type: avg

The fusion keys are ``FusionConfig``'s; the former ``iou_threshold`` and ``skip_box_threshold`` are
refused with their new names.

A file is an ensemble spec when it has ``members`` (a model spec has ``model``). Relative member
paths are relative to the ensemble file. ``visionpipe ensemble tune`` writes these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionpipe.errors import SpecError

SPEC_SUFFIXES = {".yaml", ".yml", ".json"}


# Former fusion keys (ensemble-boxes' vocabulary) -> the house's, refused with the new name.
FORMER_KEYS: dict[tuple[str, str], str] = {("fusion", "iou_threshold"): "iou", ("fusion", "skip_box_threshold"): "conf"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberSpec(_Strict):
    model: str
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)


class FusionSpec(_Strict):
    """The keys of ``visionpipe.postprocess.ensemble.FusionConfig`` (and of ``postprocess.fusion.fuse``)."""

    method: str = "wbf"
    iou: float | None = Field(None, ge=0, le=1)
    conf: float | None = Field(None, ge=0, le=1)
    conf_type: str | None = None
    sigma: float | None = Field(None, gt=0)
    soft_threshold: float | None = Field(None, ge=0, le=1)
    soft_method: str | None = None
    min_votes: int | None = Field(None, ge=1)

    def settings(self) -> dict[str, Any]:
        """The keys that were given (the rest keep their defaults)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class EnsembleSpec(_Strict):
    name: str | None = None
    members: list[MemberSpec] = Field(min_length=2)
    fusion: FusionSpec = FusionSpec()

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(m.weight for m in self.members)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | Path = ".", source: str = "ensemble spec") -> EnsembleSpec:
        """An ensemble from its mapping; ``source`` names it in errors (``from_file`` passes the file)."""
        from visionpipe.models.spec import refuse_former_keys

        refuse_former_keys(raw, FORMER_KEYS, source)
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
            raise SpecError(f"invalid ensemble spec: {problems}") from None
        if not any(spec.weights):
            raise SpecError("invalid ensemble spec: at least one member needs a weight above 0")
        base = Path(base_dir)
        members = [m.model_copy(update={"model": _resolve(m.model, base)}) for m in spec.members]
        return spec.model_copy(update={"members": members})

    @classmethod
    def from_file(cls, path: str | Path) -> EnsembleSpec:
        path = Path(path)
        raw = read_mapping(path)
        return cls.from_dict(raw, base_dir=path.parent, source=f"ensemble spec {path}")

    def to_yaml(self) -> str:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        data["members"] = [{"model": m.model, "weight": m.weight} for m in self.members]
        data["fusion"] = self.fusion.settings()
        return yaml.safe_dump(data, sort_keys=False)


def read_mapping(path: Path) -> dict[str, Any]:
    """A spec file's top-level mapping (YAML or JSON), or a SpecError naming the file (read with
    the model spec's limits: regular files only, size and nesting capped)."""
    from visionpipe.models.spec import read_spec_data

    raw = read_spec_data(path)
    if not isinstance(raw, dict):
        raise SpecError(f"spec {path} must be a mapping (with 'model', or 'members' for an ensemble)")
    return raw


def is_ensemble_file(source: Any) -> bool:
    """Whether ``source`` names a spec file describing an ensemble (it has ``members``)."""
    if not isinstance(source, (str, Path)):
        return False
    path = Path(source)
    if path.suffix.lower() not in SPEC_SUFFIXES or not path.is_file():
        return False
    try:
        return "members" in read_mapping(path)
    except SpecError:
        return False  # the model-spec loader reports the problem in its own words


def _resolve(model: str, base: Path) -> str:
    """A member's model: a path relative to the ensemble file, or a built-in model's name."""
    from visionpipe.models.zoo import BUILTINS

    candidate = Path(model) if Path(model).is_absolute() else base / model
    if candidate.exists() or model not in BUILTINS:
        return str(candidate)
    return model
