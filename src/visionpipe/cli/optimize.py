"""``visionpipe optimize`` and ``visionpipe benchmark``: shrink a model, then measure every variant."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from visionpipe.cli.common import MODEL_HELP, annotated_images, quiet_option, resolve_model_source

OPTIMIZE_HELP = (
    "Write optimized variants of a model (int8, fp16, pruned, dynamic batch, simplified) that load "
    "like the original, each checked on real images when --validate is given."
)
OPTIMIZE_EXAMPLE = (
    "Example: visionpipe optimize yolox.onnx --int8 --calibration train2017/ --fp16 --prune 0.3 "
    "--validate instances_val2017.json --images val2017/ --max-map-drop 0.01 --out optimized/"
)
BENCHMARK_HELP = (
    "Measure models side by side, each in its own process: size, load time, latency p50/p95/p99, "
    "throughput, peak memory and COCO mAP. Writes benchmark.json, benchmark.md and benchmark.png."
)
BENCHMARK_EXAMPLE = (
    "Example: visionpipe benchmark yolox.onnx optimized/yolox_int8.onnx --images val2017/ "
    "--annotations instances_val2017.json --out bench/"
)


def optimize(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out: Path = typer.Option(..., "--out", help="Folder for the optimized models and optimize.json."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 (QDQ) with --calibration images, else dynamic int8."),
    int8_dynamic: bool = typer.Option(False, "--int8-dynamic", help="Also write a dynamic (weights-only) int8 model."),
    calibration: Path | None = typer.Option(
        None, "--calibration", exists=True, help="Calibration images (folder, glob list or file list)."
    ),
    calibration_count: int = typer.Option(
        32, "--calibration-count", min=1, help="Calibration images used, the first N."
    ),
    method: str = typer.Option("minmax", "--method", help="Calibration method: minmax, entropy or percentile."),
    fp16: bool = typer.Option(False, "--fp16", help="Write an fp16 model (float32 inputs and outputs kept)."),
    prune: float | None = typer.Option(
        None, "--prune", min=0.0, max=0.99, help="Magnitude-prune conv/linear weights to this sparsity."
    ),
    dynamic_batch: bool = typer.Option(
        False, "--dynamic-batch", help="Write a copy with a dynamic batch axis (checked: batch 8 = 8 single runs)."
    ),
    simplify: bool = typer.Option(False, "--simplify", help="Write an onnxslim-simplified copy (outputs checked)."),
    validate: Path | None = typer.Option(
        None, "--validate", exists=True, dir_okay=False, help="COCO annotation json to score every variant against."
    ),
    images: Path | None = typer.Option(None, "--images", exists=True, help="The annotated validation images."),
    max_map_drop: float = typer.Option(
        0.01,
        "--max-map-drop",
        help="Static int8: keep sensitive layers at higher precision until the mAP@.5:.95 drop is within this.",
    ),
    max_size_ratio: float | None = typer.Option(
        None,
        "--max-size-ratio",
        min=0.01,
        help="Static int8: keep the file within this fraction of the original's size.",
    ),
    keep_sensitive: str = typer.Option(
        "int16",
        "--keep-sensitive",
        help="Static int8: sensitive layers get 16-bit activations (int16, file stays small) or stay float.",
    ),
    family: str | None = typer.Option(None, "--family", help="Decoder family of a bare model file without metadata."),
) -> None:
    from visionpipe.io.formats import atomic_open
    from visionpipe.models.loader import load_model
    from visionpipe.optimize.graph import onnx_path_of

    if not any((int8, int8_dynamic, fp16, prune is not None, dynamic_batch, simplify)):
        raise typer.BadParameter(
            "choose at least one of --int8, --int8-dynamic, --fp16, --prune, --dynamic-batch, --simplify"
        )
    if (validate is None) != (images is None):
        raise typer.BadParameter("--validate and --images go together", param_hint="--validate")
    source = load_model(resolve_model_source(model), family=family)
    source_path = onnx_path_of(source)
    stem = source_path.stem
    out.mkdir(parents=True, exist_ok=True)
    val = annotated_images(images, validate) if validate is not None and images is not None else []
    rows: list[dict] = []

    def record(kind: str, path: Path, **details) -> None:
        row = {"variant": kind, "path": str(Path(path).resolve()), "size_bytes": path.stat().st_size, **details}
        row["size_ratio"] = row["size_bytes"] / source_path.stat().st_size
        rows.append(row)
        typer.echo(f"{kind}: {path} ({row['size_ratio']:.2f}x size)", err=True)

    failures: list[dict] = []

    def attempt(kind: str, make) -> None:
        """Run one variant; a failure is reported and recorded, and the other variants still run."""
        from visionpipe.errors import VisionpipeError

        try:
            make()
        except (VisionpipeError, OSError, ValueError) as exc:
            typer.echo(f"failed: {kind}: {' '.join(str(exc).split())}", err=True)
            failures.append({"variant": kind, "error": str(exc)})

    if int8 and calibration is None:
        typer.echo("no --calibration: --int8 writes dynamic (weights-only) int8", err=True)
        int8, int8_dynamic = False, True
    if int8:
        attempt(
            "int8-static",
            lambda: _static_int8(
                source,
                calibration,
                calibration_count,
                method,
                val,
                validate,
                {"max_map_drop": max_map_drop, "max_size_ratio": max_size_ratio, "sensitive_as": keep_sensitive},
                out / f"{stem}_int8.onnx",
                record,
            ),
        )
    if int8_dynamic:
        attempt("int8-dynamic", lambda: _dynamic_int8(source, source_path, out / f"{stem}_int8_dynamic.onnx", record))
    if fp16:
        attempt("fp16", lambda: _fp16(source, out / f"{stem}_fp16.onnx", record))
    if prune is not None:
        attempt("pruned", lambda: _prune(source, out / f"{stem}_pruned{round(prune * 100)}.onnx", prune, record))
    if dynamic_batch:
        attempt(
            "dynamic-batch", lambda: _dynamic_batch(source, source_path, out / f"{stem}_dynamic_batch.onnx", record)
        )
    if simplify:
        attempt("simplified", lambda: _simplify(source, source_path, out / f"{stem}_slim.onnx", record))

    if val and rows:
        attempt("validation", lambda: _score(source, rows, val, validate))
    with atomic_open(out / "optimize.json") as handle:
        json.dump({"source": str(source_path.resolve()), "variants": rows, "failures": failures}, handle, indent=2)
    typer.echo(json.dumps(rows, indent=2))
    if failures:
        raise typer.Exit(2 if rows else 1)


def _dynamic_int8(source, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.quantize import quantize_dynamic_int8, write_sidecar_spec

    path = quantize_dynamic_int8(source_path, target)
    write_sidecar_spec(source, path)
    record("int8-dynamic", path)


def _fp16(source, target: Path, record) -> None:
    from visionpipe.optimize.fp16 import convert_fp16

    result = convert_fp16(source, target)
    record("fp16", result.path, blocked_ops=sorted(result.blocked_op_types), notes=list(result.notes))


def _prune(source, target: Path, sparsity: float, record) -> None:
    from visionpipe.optimize.prune import prune_magnitude

    result = prune_magnitude(source, target, sparsity)
    record("pruned", result.path, sparsity=result.sparsity, compressed_bytes=result.compressed_bytes)


def _dynamic_batch(source, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.export import make_batch_dynamic
    from visionpipe.optimize.quantize import write_sidecar_spec

    result = make_batch_dynamic(source_path, target)
    write_sidecar_spec(source, result.path)
    record("dynamic-batch", result.path, max_abs_diff=result.max_abs_diff)


def _simplify(source, source_path: Path, target: Path, record) -> None:
    from visionpipe.optimize.export import simplify
    from visionpipe.optimize.quantize import write_sidecar_spec

    result = simplify(source_path, target)
    write_sidecar_spec(source, result.path)
    record("simplified", result.path, nodes_before=result.nodes_before, nodes_after=result.nodes_after)


def _static_int8(source, calibration, count, method, val, validate, limits: dict, target: Path, record) -> None:
    from visionpipe.io.sources import expand_sources
    from visionpipe.optimize.quantize import (
        quantize_accuracy_aware,
        quantize_static_int8,
    )

    calibration_images = expand_sources([str(calibration)])[:count]
    if not val:
        result = quantize_static_int8(source, calibration_images, target, method=method)
        record("int8-static", result.path, skipped_calibration_images=len(result.skipped_images))
        return
    report = quantize_accuracy_aware(
        source,
        calibration_images,
        val,
        validate,
        target,
        **limits,
        method=method,
        progress=lambda message: typer.echo(f"int8: {message}", err=True),
    )
    typer.echo(f"int8: {report.summary()}", err=True)
    record(
        "int8-static",
        report.path,
        met_tolerance=report.met_tolerance,
        kept_as=report.kept_as,
        **{"mAP@.5:.95": report.int8_map, "fp32 mAP@.5:.95": report.fp32_map},
        excluded_nodes=report.excluded_nodes,
        attempts=[
            {"reason": a.reason, "mAP@.5:.95": a.map_50_95, "excluded": a.excluded_count} for a in report.attempts
        ],
        skipped_calibration_images=len(report.skipped_calibration_images),
    )
    if not report.met_tolerance:
        typer.echo(
            f"int8: no attempt met --max-map-drop {limits['max_map_drop']} (and --max-size-ratio); kept the most accurate one",
            err=True,
        )


def _score(source, rows: list[dict], images: list[Path], annotations: Path) -> None:
    """mAP of the original and of every variant on the validation images (int8's loop has its own)."""
    from visionpipe.optimize.graph import evaluate_model, with_weights

    paths = [str(p) for p in images]
    baseline = evaluate_model(source, paths, annotations, 0.01, 8).map_50_95
    for row in rows:
        if "mAP@.5:.95" in row:  # the int8 loop scored its own choice
            continue
        scored = evaluate_model(with_weights(source, Path(row["path"])), paths, annotations, 0.01, 8).map_50_95
        row["mAP@.5:.95"], row["fp32 mAP@.5:.95"] = scored, baseline
        typer.echo(
            f"{row['variant']}: mAP@.5:.95 {scored:.4f} (fp32 {baseline:.4f}, drop {baseline - scored:+.4f})", err=True
        )


def benchmark(
    models: list[str] = typer.Argument(..., help="Models to compare; the first is the baseline of every ratio."),
    images: Path = typer.Option(
        ..., "--images", exists=True, help="Images to time on (and score, with --annotations)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", exists=True, dir_okay=False, help="COCO json: adds mAP."
    ),
    out: Path = typer.Option(
        Path("benchmark"), "--out", help="Folder for benchmark.json, benchmark.md, benchmark.png."
    ),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes to time, comma-separated."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed runs per batch size."),
    repeats: int = typer.Option(30, "--repeats", min=1, help="Timed runs per batch size."),
    rounds: int = typer.Option(
        1, "--rounds", min=1, help="Interleaved passes over all models; each reports its median-p50 pass."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or tensorrt."),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime intra-op threads (0: its default)."),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Use only the first N images."),
    timeout: float = typer.Option(1800.0, "--timeout", min=1.0, help="Seconds allowed per model."),
    family: str | None = typer.Option(None, "--family", help="Decoder family of bare model files without metadata."),
    runtime: str | None = typer.Option(
        None, "--runtime", help="Run every model on each of these runtimes, side by side: onnxruntime,openvino,torch."
    ),
    quiet: bool = quiet_option(),
) -> None:
    from visionpipe.io.sources import expand_sources
    from visionpipe.optimize.benchmark import BenchmarkConfig, benchmark_models

    try:
        batch_sizes = tuple(int(b) for b in batch.split(",") if b.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected integers separated by commas, got {batch!r}", param_hint="--batch"
        ) from None
    paths = annotated_images(images, annotations) if annotations else expand_sources([str(images)])
    paths = paths[:max_images] if max_images else paths
    config = BenchmarkConfig(
        images=[str(p) for p in paths],
        annotations=str(annotations) if annotations else None,
        batch_sizes=batch_sizes,
        warmup=warmup,
        repeats=repeats,
        rounds=rounds,
        device=device,
        intra_op_threads=threads,
        family=family,
        timeout=timeout,
    )
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()] if runtime else None
    report = benchmark_models([resolve_model_source(m) for m in models], config, progress=not quiet, runtimes=runtimes)
    written = report.write(out)
    typer.echo(report.to_markdown())
    typer.echo(f"wrote {', '.join(str(p) for p in written.values())}", err=True)
    if not all(row.ok for row in report.rows):
        raise typer.Exit(2)
