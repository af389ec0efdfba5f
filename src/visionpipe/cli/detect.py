"""``visionpipe detect``: run a model over images and write standard outputs."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path

import typer

from visionpipe.cli.common import (
    FUSION_HELP,
    MODEL_HELP,
    WEIGHTS_HELP,
    build_pipeline,
    monitor_option,
    monitor_tag_option,
    parse_classes,
    progress,
    quiet_option,
    report_failure,
)
from visionpipe.postprocess.fusion import FusionMethod

HELP = "Detect objects in images and write COCO JSON, YOLO txt, JSONL or CSV (and annotated images)."
EXAMPLE = (
    "Example: visionpipe detect photos/ --model yolox.yaml --format coco --format csv --save-images --out runs/1\n\n"
    "SOURCE may be image files, folders (recursive), glob patterns, .txt files listing paths, or - (paths on stdin)."
)


class OutputFormat(str, Enum):
    coco = "coco"
    yolo = "yolo"
    jsonl = "jsonl"
    csv = "csv"


def detect(
    sources: list[str] = typer.Argument(..., metavar="SOURCE...", help="Images, folders, globs, .txt lists or -."),
    model: list[str] = typer.Option(
        [],
        "--model",
        "-m",
        help=MODEL_HELP + " Repeat for an ensemble. Default: the built-in COCO detector yolox-nano-coco.",
    ),
    fusion: FusionMethod = typer.Option(FusionMethod.WBF, "--fusion", help=FUSION_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    fusion_iou: float | None = typer.Option(
        None, "--fusion-iou", min=0.0, max=1.0, help="IoU for fusing boxes across models."
    ),
    family: str | None = typer.Option(None, "--family", help="Decoder family of a bare model file without metadata."),
    out: Path = typer.Option(Path("visionpipe-out"), "--out", "-o", help="Output folder."),
    formats: list[OutputFormat] = typer.Option(
        [OutputFormat.coco, OutputFormat.jsonl], "--format", "-f", help="Output format; repeat for several."
    ),
    save_images: bool = typer.Option(False, "--save-images", help="Also write annotated images to OUT/annotated/."),
    conf: float | None = typer.Option(
        None, "--conf", min=0.0, max=1.0, help="Score threshold (model default if omitted)."
    ),
    iou: float | None = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    classes: str | None = typer.Option(
        None, "--classes", help="Keep only these classes: names or ids, comma-separated."
    ),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per inference batch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or tensorrt."),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        exists=True,
        dir_okay=False,
        help="COCO json whose image and category ids the COCO output uses.",
    ),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Reject images with more pixels than this."),
    quiet: bool = quiet_option(),
    monitor: str | None = monitor_option(),
    monitor_tag: str = monitor_tag_option(),
) -> None:
    from visionpipe.io.annotate import annotate, encode_image
    from visionpipe.io.formats import (
        CocoWriter,
        CsvWriter,
        JsonlWriter,
        YoloWriter,
        atomic_open,
        atomic_write_bytes,
        unique_name,
    )
    from visionpipe.io.images import DecodeLimits, decode_image
    from visionpipe.io.sources import expand_sources
    from visionpipe.monitor.monitor import monitoring

    paths = expand_sources(sources)
    gt = json.loads(annotations.read_text(encoding="utf-8")) if annotations else None
    pipeline = build_pipeline(
        model,
        fusion,
        weights,
        fusion_iou,
        family=family,
        conf=conf,
        iou=iou,
        classes=parse_classes(classes),
        batch_size=batch_size,
        device=device,
        limits=DecodeLimits(max_pixels=max_pixels),
    )
    names = pipeline.class_names
    writers = []
    for fmt in dict.fromkeys(formats):
        if fmt is OutputFormat.coco:
            writers.append(CocoWriter(out / "detections.json", names, gt))
        elif fmt is OutputFormat.jsonl:
            writers.append(JsonlWriter(out / "detections.jsonl"))
        elif fmt is OutputFormat.csv:
            writers.append(CsvWriter(out / "detections.csv"))
        else:
            writers.append(YoloWriter(out / "labels"))

    failures: list[dict] = []
    boxes = 0
    used_names: set[str] = set()
    start = time.perf_counter()
    try:
        with pipeline, monitoring(pipeline, monitor, tag=monitor_tag), progress(len(paths), "detect", quiet) as advance:
            for result in pipeline.stream(paths):
                for writer in writers:
                    writer.write(result)
                if result.error is not None:
                    failures.append({"path": result.source, "error": str(result.error)})
                    report_failure(result.source, result.error)
                else:
                    boxes += len(result.detections)
                    if save_images:
                        name = unique_name(Path(result.source).name, result.index, used_names)
                        drawn = annotate(decode_image(result.source, pipeline.limits), result.detections)
                        atomic_write_bytes(out / "annotated" / name, encode_image(drawn, Path(name).suffix))
                advance()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()
    elapsed = time.perf_counter() - start

    summary = {
        "model": pipeline.name,
        "family": "+".join(m.model.family for m in pipeline.members),
        "images": len(paths),
        "processed": len(paths) - len(failures),
        "failed": failures,
        "detections": boxes,
        "seconds": round(elapsed, 3),
        "images_per_second": round(len(paths) / elapsed, 2) if elapsed > 0 else None,
    }
    with atomic_open(out / "summary.json") as handle:
        json.dump(summary, handle, indent=2)
    typer.echo(
        f"{summary['processed']}/{len(paths)} images, {boxes} detections, {summary['images_per_second']} img/s -> {out}",
        err=True,
    )
    if failures:
        raise typer.Exit(2)
