"""``optimize_model``: every requested variant of one model, written, checked and reported.

This is what ``visionpipe optimize`` runs (the command only parses its flags, calls this and
prints the report). Each variant is written beside a sidecar spec, so it loads like the source;
a variant that fails is recorded in the report and the others are still written; ``optimize.json``
in the output folder holds the report, written atomically::

    report = optimize_model("yolox.yaml", "optimized/", fp16=True, int8=True, calibration=paths[:32],
                            validation_images=val_paths, annotations="instances_val2017.json")
    report.variants[0]["path"], report.failures, report.path
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.errors import VisionpipeError
from visionpipe.models.loader import DetectionModel, load_model
from visionpipe.models.spec import write_sidecar_spec
from visionpipe.optimize.graph import evaluate_model, onnx_path_of, with_weights

Progress = Callable[[str], None]


@dataclass
class OptimizeReport:
    """What :func:`optimize_model` wrote: one row per variant, one per failure, and where it saved this."""

    source: Path
    variants: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    path: Path | None = None  # optimize.json

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "variants": self.variants, "failures": self.failures}

    def write(self, folder: str | os.PathLike) -> Path:
        from visionpipe.io.formats import atomic_open

        target = Path(folder) / "optimize.json"
        with atomic_open(target) as handle:
            json.dump(self.to_dict(), handle, indent=2)
        self.path = target
        return target


def optimize_model(
    source: DetectionModel | str | os.PathLike | dict[str, Any],
    out: str | os.PathLike,
    *,
    int8: bool = False,
    int8_dynamic: bool = False,
    calibration: Sequence[str | os.PathLike] | None = None,
    method: str | None = None,
    fp16: bool = False,
    prune: float | None = None,
    dynamic_batch: bool = False,
    simplify: bool = False,
    validation_images: Sequence[str | os.PathLike] = (),
    annotations: str | os.PathLike | None = None,
    max_map_drop: float = 0.01,
    max_size_ratio: float | None = None,
    keep_sensitive: str = "int16",
    family: str | None = None,
    progress: Progress | None = None,
) -> OptimizeReport:
    """Write the chosen variants of ``source`` into ``out`` and report them (see the module doc).

    ``int8`` without ``calibration`` images writes dynamic (weights-only) int8. With validation
    images and their COCO ``annotations``, static int8 is accuracy-aware (within ``max_map_drop``
    and ``max_size_ratio``) and every other variant is scored against the source.

    Example::

        report = optimize_model("yolox.yaml", "optimized/", fp16=True, int8=True, calibration=paths[:32])
        report.variants, report.failures
    """
    say = progress or (lambda message: None)
    if not any((int8, int8_dynamic, fp16, prune is not None, dynamic_batch, simplify)):
        raise ValueError("choose at least one variant: int8, int8_dynamic, fp16, prune, dynamic_batch or simplify")
    if bool(validation_images) != (annotations is not None):
        raise ValueError("validation images and their annotations go together")
    if isinstance(source, DetectionModel):
        model = source
    else:
        model = load_model(source if isinstance(source, dict) else os.fspath(source), family=family)
    source_path = onnx_path_of(model)
    stem = source_path.stem
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    val = [str(p) for p in validation_images]
    report = OptimizeReport(source=source_path.resolve())

    def record(kind: str, path: Path, **details: Any) -> None:
        row = {"variant": kind, "path": str(Path(path).resolve()), "size_bytes": path.stat().st_size, **details}
        row["size_ratio"] = row["size_bytes"] / source_path.stat().st_size
        report.variants.append(row)
        say(f"{kind}: {path} ({row['size_ratio']:.2f}x size)")

    def attempt(kind: str, make: Callable[[], None]) -> None:
        """Run one variant; a failure is reported and recorded, and the other variants still run."""
        try:
            make()
        except (VisionpipeError, OSError, ValueError) as exc:
            say(f"failed: {kind}: {' '.join(str(exc).split())}")
            report.failures.append({"variant": kind, "error": str(exc)})

    if int8 and not calibration:
        say("no calibration images: int8 writes dynamic (weights-only) int8")
        int8, int8_dynamic = False, True
    if int8:
        limits = {"max_map_drop": max_map_drop, "max_size_ratio": max_size_ratio, "sensitive_as": keep_sensitive}
        target = folder / f"{stem}_int8.onnx"
        attempt("int8-static", lambda: _static_int8(model, calibration or [], method, val, annotations, limits, target,
                                                      record, say))  # fmt: skip
    if int8_dynamic:
        attempt("int8-dynamic", lambda: _dynamic_int8(model, source_path, folder / f"{stem}_int8_dynamic.onnx", record))
    if fp16:
        attempt("fp16", lambda: _fp16(model, folder / f"{stem}_fp16.onnx", record))
    if prune is not None:
        attempt("pruned", lambda: _prune(model, folder / f"{stem}_pruned{round(prune * 100)}.onnx", prune, record))
    if dynamic_batch:
        target = folder / f"{stem}_dynamic_batch.onnx"
        attempt("dynamic-batch", lambda: _dynamic_batch(model, source_path, target, record))
    if simplify:
        attempt("simplified", lambda: _simplify(model, source_path, folder / f"{stem}_slim.onnx", record))
    if val and report.variants:
        attempt("validation", lambda: _score(model, report.variants, val, annotations, say))
    report.write(folder)
    return report


def _dynamic_int8(source: DetectionModel, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.quantize import quantize_dynamic_int8

    path = quantize_dynamic_int8(source_path, target)
    write_sidecar_spec(source, path)
    record("int8-dynamic", path)


def _fp16(source: DetectionModel, target: Path, record) -> None:
    from visionpipe.optimize.fp16 import convert_fp16

    result = convert_fp16(source, target)
    record("fp16", result.path, blocked_ops=sorted(result.blocked_op_types), notes=list(result.notes))


def _prune(source: DetectionModel, target: Path, sparsity: float, record) -> None:
    from visionpipe.optimize.prune import prune_magnitude

    result = prune_magnitude(source, target, sparsity)
    record("pruned", result.path, sparsity=result.sparsity, compressed_bytes=result.compressed_bytes)


def _dynamic_batch(source: DetectionModel, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.batch import make_batch_dynamic

    result = make_batch_dynamic(source_path, target)
    write_sidecar_spec(source, result.path)
    record("dynamic-batch", result.path, max_abs_diff=result.max_abs_diff)


def _simplify(source: DetectionModel, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.simplify import simplify

    result = simplify(source_path, target)
    write_sidecar_spec(source, result.path)
    record("simplified", result.path, nodes_before=result.nodes_before, nodes_after=result.nodes_after)


def _static_int8(
    source: DetectionModel, calibration, method: str | None, val: list[str], annotations, limits: dict, target: Path, record,
    say: Progress,
) -> None:  # fmt: skip
    from visionpipe.optimize.quantize import quantize_accuracy_aware, quantize_static_int8

    calibration_images = [str(p) for p in calibration]
    if not val:
        result = quantize_static_int8(source, calibration_images, target, method=method or "minmax")
        record("int8-static", result.path, skipped_calibration_images=len(result.skipped_images))
        return
    report = quantize_accuracy_aware(
        source,
        calibration_images,
        val,
        annotations,
        target,
        **limits,
        method=method,
        progress=lambda message: say(f"int8: {message}"),
    )
    say(f"int8: {report.summary()}")
    record(
        "int8-static",
        report.path,
        met_tolerance=report.met_tolerance,
        kept_as=report.kept_as,
        **{"mAP@.5:.95": report.int8_map, "fp32 mAP@.5:.95": report.fp32_map},
        calibration=report.calibration,
        chosen_on_images=report.val_images,
        confirmed_on_images=report.confirm_images,
        **{"confirm mAP@.5:.95": report.confirm_int8_map, "confirm fp32 mAP@.5:.95": report.confirm_fp32_map},
        confirmed=report.confirmed,
        margin=report.margin,
        drop_standard_error=report.spread,
        confirm_drop_standard_error=report.confirm_spread,
        chosen_on=report.choose_image_names,
        confirmed_on=report.confirm_image_names,
        excluded_nodes=report.excluded_nodes,
        attempts=[
            {"reason": a.reason, "mAP@.5:.95": a.map_50_95, "excluded": a.excluded_count, "margin": a.margin}
            for a in report.attempts
        ],
        skipped_calibration_images=len(report.skipped_calibration_images),
    )
    if report.confirmed is False:
        say(
            f"int8: the drop on the confirming part ({report.confirm_map_drop:+.4f}) is NOT within --max-map-drop "
            f"{limits['max_map_drop']}: expect about that much on unseen photos"
        )
    if not report.met_tolerance:
        say(
            f"int8: no attempt met --max-map-drop {limits['max_map_drop']} (and --max-size-ratio); "
            "kept the most accurate one"
        )


def _score(source: DetectionModel, rows: list[dict], images: list[str], annotations, say: Progress) -> None:
    """mAP of the original and of every variant on the validation images (int8's loop has its own)."""
    baseline = evaluate_model(source, images, annotations, 0.01, 8).map_50_95
    for row in rows:
        if "mAP@.5:.95" in row:  # the int8 loop scored its own choice
            continue
        scored = evaluate_model(with_weights(source, Path(row["path"])), images, annotations, 0.01, 8).map_50_95
        row["mAP@.5:.95"], row["fp32 mAP@.5:.95"] = scored, baseline
        say(f"{row['variant']}: mAP@.5:.95 {scored:.4f} (fp32 {baseline:.4f}, drop {baseline - scored:+.4f})")
