"""``visionpipe optimize`` and ``visionpipe benchmark``: shrink a model, then measure every variant."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from visionpipe.cli.common import (
    MODEL_HELP,
    annotated_images,
    progress_messages,
    quiet_option,
    resolve_model_source,
    say,
)

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
        128, "--calibration-count", min=1, help="Calibration images used, the first N."
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help="Calibration method: minmax, entropy or percentile. Default: with --validate the int8 loop compares "
        "minmax, moving-average minmax and percentile and keeps the best (entropy through ONNX Runtime's "
        "quantizer equals minmax); without it, minmax.",
    ),
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
    images: Path | None = typer.Option(
        None,
        "--images",
        exists=True,
        help="The annotated validation images. The int8 loop chooses on one half and confirms on the other.",
    ),
    max_map_drop: float = typer.Option(
        0.01,
        "--max-map-drop",
        help="Static int8: keep sensitive layers at higher precision until the mAP@.5:.95 drop plus a measured "
        "margin (its bootstrap standard error over the choosing images, x2.3) is within this.",
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
    quiet: bool = quiet_option(),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="Reuse a non-empty --out: an earlier run's outputs there are replaced, others kept."
    ),
) -> None:
    from visionpipe.io.outdir import OutputFolder
    from visionpipe.io.sources import expand_sources
    from visionpipe.optimize.workflow import optimize_model

    if not any((int8, int8_dynamic, fp16, prune is not None, dynamic_batch, simplify)):
        raise typer.BadParameter(
            "choose at least one of --int8, --int8-dynamic, --fp16, --prune, --dynamic-batch, --simplify"
        )
    if (validate is None) != (images is None):
        raise typer.BadParameter("--validate and --images go together", param_hint="--validate")
    folder = OutputFolder(out, exist_ok=exist_ok)  # refused now, before the model is loaded
    if int8 and calibration is None:
        typer.echo("no --calibration: --int8 writes dynamic (weights-only) int8", err=True)
        int8, int8_dynamic = False, True
    keep = [Path(model)] if Path(model).is_file() else []  # never remove this run's own input
    # every file the variants write is listed, whatever happens
    with folder.start(keep=keep), progress_messages(quiet) as say:
        report = optimize_model(
            resolve_model_source(model),
            out,
            int8=int8,
            int8_dynamic=int8_dynamic,
            calibration=expand_sources([str(calibration)])[:calibration_count] if int8 and calibration else None,
            method=method,
            fp16=fp16,
            prune=prune,
            dynamic_batch=dynamic_batch,
            simplify=simplify,
            validation_images=annotated_images(images, validate) if validate is not None and images is not None else [],
            annotations=validate,
            max_map_drop=max_map_drop,
            max_size_ratio=max_size_ratio,
            keep_sensitive=keep_sensitive,
            family=family,
            progress=say,
        )
    typer.echo(json.dumps(report.variants, indent=2))
    if report.failures:
        raise typer.Exit(2 if report.variants else 1)


def benchmark(
    models: list[str] = typer.Argument(..., help="Models to compare; the first is the baseline of every ratio."),
    images: Path = typer.Option(
        ..., "--images", exists=True, help="Images to time on (and score, with --annotations)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", exists=True, dir_okay=False, help="COCO json: adds mAP."
    ),
    out: Path = typer.Option(
        Path("benchmark"), "--out", help="Folder for benchmark.json, benchmark.md, benchmark.png (must be empty)."
    ),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="Reuse a non-empty --out: an earlier run's outputs there are replaced, others kept."
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
    from visionpipe.io.outdir import OutputFolder
    from visionpipe.io.sources import expand_sources
    from visionpipe.optimize.benchmark import BenchmarkConfig, benchmark_models

    folder = OutputFolder(out, exist_ok=exist_ok)

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
    sources = [resolve_model_source(m) for m in models]
    keep = [Path(m) for m in models if Path(m).is_file()]  # a model benchmarked from inside --out stays
    report = benchmark_models(sources, config, progress=not quiet, runtimes=runtimes)
    with folder.start(keep=keep):
        written = report.write(out)
    typer.echo(report.to_markdown())
    say(f"wrote {', '.join(str(p) for p in written.values())}")
    if not all(row.ok for row in report.rows):
        raise typer.Exit(2)
