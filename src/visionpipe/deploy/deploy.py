"""One call from a model and a target to a plan and, when something fits, a bundle.

::

    result = deploy_model(
        "yolox_nano_416_coco.onnx", "mobile",
        calibration_images=train_paths[:32],
        validation_images=val_paths, annotations="instances_val2017.json",
        out_dir="deploy/yolox-mobile",
    )
    print(result.plan.to_markdown())
    result.bundle.folder if result.bundle else result.plan.nearest_miss_text()

Settings are chosen on one split and confirmed on another: without separate tuning images, the
validation images are split alternately (sorted order: even positions tune the accuracy-aware int8
build, odd positions confirm every candidate). The mAP in the plan and in the bundle's manifest is
on the confirmation images only, listed in ``<out_dir>/confirmation_images.txt`` so that
``visionpipe eval --images <out_dir>/confirmation_images.txt`` reproduces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.deploy.bundle import BundleResult, tool_versions, write_bundle
from visionpipe.deploy.candidates import (
    BuildSettings,
    build_candidates,
    calibration_set_hash,
    parse_candidate,
    primary_source,
)
from visionpipe.deploy.planner import MeasureSettings, Plan, assess, choose, measure, measurement_threads
from visionpipe.deploy.targets import Target, load_target
from visionpipe.errors import VisionpipeError
from visionpipe.models.bundle import sha256_file

Progress = Callable[[str], None]
# what every run writes into ``out_dir`` besides the bundle (and the cache, unless it is elsewhere)
PLAN_FILES = ("plan.json", "plan.md", "confirmation_images.txt")


@dataclass
class DeployResult:
    plan: Plan
    bundle: BundleResult | None
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0: a bundle was written; 2: nothing meets the target."""
        return 0 if self.bundle is not None else 2


def split_validation(images: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(tuning, confirmation): alternate images of the sorted list, so both span the whole set."""
    ordered = sorted(str(p) for p in images)
    return ordered[0::2], ordered[1::2]


def deploy_model(
    model: Any,
    target: Target | str | os.PathLike,
    *,
    calibration_images: Sequence[str | os.PathLike],
    validation_images: Sequence[str | os.PathLike],
    annotations: str | os.PathLike,
    out_dir: str | os.PathLike,
    tune_images: Sequence[str | os.PathLike] | None = None,
    tune_annotations: str | os.PathLike | None = None,
    candidates: Sequence[str] = (),
    cache_dir: str | os.PathLike | None = None,
    measure_settings: dict[str, Any] | None = None,
    int8_options: dict[str, Any] | None = None,
    signing_key: str | os.PathLike | None = None,
    bundle_name: str | None = None,
    progress: Progress | None = None,
) -> DeployResult:
    """Plan ``model`` for ``target`` on measured numbers; write the plan and, if one fits, the bundle."""
    say = progress or (lambda message: None)
    target = target if isinstance(target, Target) else load_target(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"

    if tune_images is None:
        if len(validation_images) < 2:
            raise VisionpipeError("need at least 2 validation images (one half tunes int8, the other confirms)")
        tuning, confirming = split_validation(validation_images)
        tune_gt = os.fspath(annotations)
    else:
        tuning, confirming = [str(p) for p in tune_images], sorted(str(p) for p in validation_images)
        tune_gt = os.fspath(tune_annotations or annotations)
    calibration = [str(p) for p in calibration_images]

    source = primary_source(model)
    sources = [source] + [parse_candidate(value, source.spec) for value in candidates]
    settings = BuildSettings(
        calibration_images=calibration,
        tune_images=tuning,
        tune_annotations=tune_gt,
        max_map_drop=target.max_accuracy_loss,
        int8_options=dict(int8_options or {}),
    )
    built = build_candidates(sources, target, cache / "candidates", settings, say)

    threads = measurement_threads(target)
    measuring = MeasureSettings(images=confirming, annotations=os.fspath(annotations), **(measure_settings or {}))
    measurements = [measure(c, measuring, threads, cache / "measurements", say) for c in built]
    baseline = measurements[0].map_50_95  # the primary source's fp32 ONNX file, always built first

    from visionpipe.optimize.benchmark import collect_environment

    assessments = assess(built, measurements, target, baseline)
    chosen, nearest = choose(assessments)
    plan = Plan(
        target=target,
        assessments=assessments,
        baseline_map=baseline,
        environment=collect_environment(),
        threads=threads,
        validation_images=len(confirming),
        chosen=chosen,
        nearest_miss=nearest,
    )
    if target.threads and threads != target.threads:
        plan.notes.append(f"the target asks for {target.threads} threads; this machine has {threads} cores")
    plan.notes.append(
        f"int8 accuracy-aware builds were tuned on {len(tuning)} other images; "
        f"mAP here is on the {len(confirming)} confirmation images"
    )

    written = _write_plan(plan, out, confirming)
    bundle = None
    if chosen is not None:
        name = bundle_name or f"{Path(source.spec['model']).stem}-{target.name}"
        provenance = {
            "source_model": Path(source.spec["model"]).name,
            "source_sha256": sha256_file(source.spec["model"]),
            "candidate_source": chosen.candidate.source,
            "calibration_images": len(calibration),
            "calibration_set_sha256": calibration_set_hash(calibration) if calibration else None,
            "tuning_images": len(tuning),
            "confirmation_annotations_sha256": sha256_file(annotations),
            "tools": tool_versions(),
        }
        say(f"writing bundle {name}")
        bundle = write_bundle(
            plan,
            chosen,
            out,
            name=name,
            golden_image=confirming[0],
            provenance=provenance,
            signing_key=signing_key,
        )
        written["bundle"] = bundle.folder
        written["archive"] = bundle.archive
    return DeployResult(plan, bundle, written)


def _write_plan(plan: Plan, out: Path, confirming: list[str]) -> dict[str, Path]:
    from visionpipe.io.formats import atomic_open

    json_name, md_name, images_name = PLAN_FILES
    paths = {"plan_json": out / json_name, "plan_md": out / md_name, "images": out / images_name}
    with atomic_open(paths["plan_json"]) as handle:
        json.dump(plan.to_dict(), handle, indent=2, default=str)
        handle.write("\n")
    with atomic_open(paths["plan_md"]) as handle:
        handle.write(plan.to_markdown() + "\n")
    with atomic_open(paths["images"]) as handle:
        handle.write("".join(f"{Path(p).resolve()}\n" for p in confirming))
    return paths


__all__ = ["PLAN_FILES", "DeployResult", "deploy_model", "split_validation"]
