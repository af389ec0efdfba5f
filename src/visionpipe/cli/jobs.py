"""Sharded batch jobs from the shell: ``visionpipe detect ... --shard-size N`` and ``visionpipe merge``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from visionpipe.cli.common import parse_classes, parse_weights, progress

DEFAULT_SHARD_SIZE = 1000

MERGE_HELP = "Merge a sharded job's finished shards into detect's output files (COCO, JSONL, CSV, ...) or Parquet."
MERGE_EXAMPLE = (
    "Example: visionpipe detect photos.txt --out job --shard-size 1000 --workers 2 && "
    "visionpipe merge job --format coco-results --annotations instances_val2017.json && "
    "visionpipe eval --detections job/merged/detections.json --annotations instances_val2017.json"
)


def detect_job(
    sources: list[str],
    out: Path,
    *,
    shard_size: int | None,
    resume: bool,
    workers: int | None,
    engine: str,
    ray_address: str | None,
    extra: dict[str, bool],
    model: list[str],
    fusion: str | None,
    weights: str | None,
    classes: str | None,
    quiet: bool = False,
    **options: Any,
) -> None:
    """``visionpipe detect`` as a sharded job: parse, run the job, print its summary."""
    from visionpipe.distributed import JobSettings, run_job

    used = [flag for flag, given in extra.items() if given]
    if used:
        raise typer.BadParameter(
            "a sharded job writes Parquet and JSONL per shard; convert them with visionpipe merge",
            param_hint=used[0],
        )
    parsed_weights = parse_weights(weights)
    parsed_classes = parse_classes(classes)
    settings = JobSettings(
        sources=tuple(sources),
        shard_size=shard_size or DEFAULT_SHARD_SIZE,
        model=tuple(model),
        fusion=fusion,
        weights=tuple(parsed_weights) if parsed_weights else None,
        classes=tuple(parsed_classes) if parsed_classes else None,
        **options,
    )
    from visionpipe.interrupt import Interrupted, stop_on_signals

    try:
        # a signal stops the job anywhere: finished shards are whole and recorded, the rest redone
        with stop_on_signals(), progress(None, "detect (shards)", quiet) as advance:

            def shard_done(record: dict[str, Any]) -> None:
                for _ in range(record["images"]):
                    advance()

            summary = run_job(
                settings,
                out,
                resume=resume,
                workers=workers if workers is not None else (1 if engine == "local" else 0),
                engine=engine,
                ray_address=ray_address,
                on_shard=shard_done,
            )
    except Interrupted as exc:
        typer.echo(
            f"stopped by {exc.signal_name}: the finished shards are kept in {out}; "
            "run the same command with --resume to finish the job",
            err=True,
        )
        raise typer.Exit(exc.exit_code) from None
    typer.echo(
        f"{summary.images - summary.failed}/{summary.images} images in {summary.shards} shards "
        f"({summary.shards_run} run now, {summary.shards_skipped} finished before), {summary.detections} detections, "
        f"{summary.images_per_second} img/s -> {out}",
        err=True,
    )
    if summary.failed:
        typer.echo(f"{summary.failed} inputs failed: their causes are in the shards' JSONL 'error' fields", err=True)
        raise typer.Exit(2)


def merge(
    folder: Path = typer.Argument(..., metavar="DIR", help="The job's output folder (detect --out)."),
    formats: list[str] = typer.Option(
        ["coco-results"],
        "--format",
        "-f",
        help="As detect's --format (coco, coco-results, yolo, voc, label-studio, jsonl, csv), or parquet; "
        "repeat for several. coco-results, jsonl and parquet are streamed: flat memory for any job size.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default DIR/merged)."),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        exists=True,
        dir_okay=False,
        help="COCO json whose image ids (by file name) and category ids (by class name) the COCO outputs use.",
    ),
    partial: bool = typer.Option(False, "--partial", help="Merge the finished shards of an unfinished job."),
) -> None:
    from visionpipe.distributed import merge_job
    from visionpipe.evaluation import load_annotations

    summary = merge_job(
        folder, formats, out, annotations=load_annotations(annotations) if annotations else None, partial=partial
    )
    typer.echo(
        f"{summary.shards} shards, {summary.images} images{'' if summary.complete else ' (job unfinished)'}: "
        f"{', '.join(summary.formats)} -> {summary.folder}",
        err=True,
    )
